"""Human approval events (docs/approvals.md): a grant that waits for signed approvals.

A policy that marks a request as needing approval (processors/policy.py, ``@approval``)
makes the authority answer the request with a signed :class:`ApprovalRequired` instead of a
grant: the request id, the exact artifact a quorum would grant, the approver role, how many
distinct approvers (``k``; the requester never counts) and the deadline. Approvers (principals
of the tenant with that role) send :class:`ApprovalGiven` or :class:`ApprovalRefused` for the
request id, on the requests stream keyed by the request's lineage root, so the worker that
decided the request decides its approvals. The approval completing the quorum gets the
request's ``AuthorizationGranted`` (its artifact's ``governance`` metadata names the
approvals); a refusal, the deadline, a revocation of the parent or a suspension ends it with an
``AuthorizationDenied`` (APPROVAL_REFUSED, APPROVAL_EXPIRED, ...). An approval that cannot count
is refused with an ``AuthorizationDenied`` naming the approval's own id.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from ledger.core.events import Artifact, Detail, Event, EventId, PolicyId, UtcTime

ApproverRole = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
MAX_APPROVERS = 8
"""The largest ``k``: each approval id takes one entry of the artifact's metadata."""


class ApprovalRequired(Event):
    """The authority's pending answer to ``request_id``: it is granted as ``artifact`` once
    ``k`` distinct principals of the tenant holding ``role`` approve it before ``deadline``.
    ``policy_ids``: the determining policies that asked for it; ``governance``: the position
    it was decided under."""

    KIND = "ApprovalRequired"
    SLUG = "approval-required"
    kind: Literal["ApprovalRequired"] = "ApprovalRequired"
    request_id: EventId
    artifact: Artifact
    role: ApproverRole
    k: Annotated[int, Field(ge=1, le=MAX_APPROVERS)]
    deadline: UtcTime
    policy_ids: Annotated[tuple[PolicyId, ...], Field(max_length=64)] = ()
    governance: Annotated[int, Field(ge=0)]

    def parent_ref(self) -> str | None:
        return self.request_id

    def lineage_root(self) -> str | None:
        return self.artifact.lineage.root


class _ApprovalAnswer(Event):
    """An approver's answer to the pending request ``request_id`` of tree ``root`` (the
    request's lineage root: its own id for a root request). ``reason``: free text for the
    audit trail."""

    request_id: EventId
    root: EventId
    reason: Detail = ""

    def parent_ref(self) -> str | None:
        return self.request_id

    def lineage_root(self) -> str | None:
        return self.root


class ApprovalGiven(_ApprovalAnswer):
    KIND = "ApprovalGiven"
    SLUG = "approval-given"
    kind: Literal["ApprovalGiven"] = "ApprovalGiven"


class ApprovalRefused(_ApprovalAnswer):
    KIND = "ApprovalRefused"
    SLUG = "approval-refused"
    kind: Literal["ApprovalRefused"] = "ApprovalRefused"


APPROVAL_ANSWERS: tuple[type[_ApprovalAnswer], ...] = (ApprovalGiven, ApprovalRefused)
APPROVAL_TYPES: tuple[type[Event], ...] = (ApprovalRequired, *APPROVAL_ANSWERS)
