"""Governance events: who may act, under which policy, and the kill switch (DESIGN.md 6a).

Signed by an *admin* (a principal with the ``admin`` role; tenant ``*`` for the operator),
published on the one-partition governance topic, applied by every worker in one order before
the requests that follow. The ``tenant`` field of a governance event is the tenant it governs
(an admin of ``acme`` can only sign events for ``acme``; the envelope check refuses anything
else as TENANT_MISMATCH). The rules that decide whether one is applied are
``ledger.core.governance``; the authority answers each with a signed
:class:`GovernanceApplied` (it is in force from there on, at a new *position*) or an
``AuthorizationDenied`` naming its id (refused, with a reason code), both in the ledger.

Kinds that need a quorum (``PrincipalRegistered``, ``PolicyPublished``,
``GovernanceConfigured``) wait for ``quorum - 1`` :class:`GovernanceApproved` events by other
admins of the same tenant (or ``*``) before ``deadline`` (default: arrival plus the
configured window).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from ledger.core.events import (
    Detail,
    Digest,
    Event,
    EventId,
    Identity,
    UtcTime,
)

Role = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
PublicKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$")]
KeyIdHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
MAX_POLICY_TEXT = 96 * 1024


class _Governance(Event):
    """A governance event. ``reason`` is free text for the audit trail."""

    reason: Detail = ""


class _Quorate(_Governance):
    """A governance event that waits for a quorum of admins (module docstring)."""

    deadline: UtcTime | None = None


class PrincipalRegistered(_Quorate):
    """``identity`` of ``tenant`` holds ``public_key`` with ``roles``, in force in
    ``[not_before, not_after)`` (arrival time) once applied."""

    KIND = "PrincipalRegistered"
    SLUG = "principal-registered"
    kind: Literal["PrincipalRegistered"] = "PrincipalRegistered"
    identity: Identity
    public_key: PublicKey
    key_id: KeyIdHex
    roles: Annotated[tuple[Role, ...], Field(max_length=16)]
    not_before: UtcTime | None = None
    not_after: UtcTime | None = None

    @model_validator(mode="after")
    def _sorted_roles(self) -> PrincipalRegistered:
        if list(self.roles) != sorted(set(self.roles)):
            raise ValueError("roles must be sorted and without duplicates")
        if (self.not_before is not None and self.not_after is not None
                and self.not_after <= self.not_before):
            raise ValueError("not_after must be later than not_before")
        return self


class PrincipalRevoked(_Governance):
    """The key ``key_id`` is revoked at once (arrival time); decisions after it refuse it."""

    KIND = "PrincipalRevoked"
    SLUG = "principal-revoked"
    kind: Literal["PrincipalRevoked"] = "PrincipalRevoked"
    key_id: KeyIdHex


class PrincipalSuspended(_Governance):
    """Kill switch for one identity of ``tenant``: its requests are denied and every
    artifact it initiated or holds, and every artifact below those, is refused at the gate."""

    KIND = "PrincipalSuspended"
    SLUG = "principal-suspended"
    kind: Literal["PrincipalSuspended"] = "PrincipalSuspended"
    identity: Identity


class PrincipalResumed(_Governance):
    KIND = "PrincipalResumed"
    SLUG = "principal-resumed"
    kind: Literal["PrincipalResumed"] = "PrincipalResumed"
    identity: Identity


class TenantSuspended(_Governance):
    """Kill switch for the whole ``tenant``: every request denied, every artifact refused."""

    KIND = "TenantSuspended"
    SLUG = "tenant-suspended"
    kind: Literal["TenantSuspended"] = "TenantSuspended"


class TenantResumed(_Governance):
    KIND = "TenantResumed"
    SLUG = "tenant-resumed"
    kind: Literal["TenantResumed"] = "TenantResumed"


class PolicyPublished(_Quorate):
    """A Cedar policy set and its schema (``files``: name -> exact text), version
    ``version``, digest ``policy_digest`` (processors.policy.bundle_digest). ``enforce``
    replaces the policy in force; ``shadow`` is evaluated beside it (decisions carry both
    outcomes when they differ) until a :class:`PolicyPromoted` makes it the enforced one.
    Validated against its schema before it is applied: an invalid one is refused
    (POLICY_INVALID) and the old one stays. Tenant ``*`` only: one policy set governs all."""

    KIND = "PolicyPublished"
    SLUG = "policy-published"
    kind: Literal["PolicyPublished"] = "PolicyPublished"
    version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")]
    mode: Literal["enforce", "shadow"] = "enforce"
    policy_digest: Digest
    files: Annotated[dict[FileName, Annotated[str, StringConstraints(
        max_length=MAX_POLICY_TEXT)]], Field(min_length=1, max_length=64)]


class PolicyPromoted(_Governance):
    """The shadow policy ``policy_digest`` becomes the enforced one."""

    KIND = "PolicyPromoted"
    SLUG = "policy-promoted"
    kind: Literal["PolicyPromoted"] = "PolicyPromoted"
    policy_digest: Digest


class GovernanceConfigured(_Quorate):
    """The governance rules themselves: ``quorum`` admin signatures (the event's own counts
    as one) within ``window_s`` seconds for the quorate kinds. Tenant ``*`` only."""

    KIND = "GovernanceConfigured"
    SLUG = "governance-configured"
    kind: Literal["GovernanceConfigured"] = "GovernanceConfigured"
    quorum: Annotated[int, Field(ge=1, le=16)]
    window_s: Annotated[int, Field(ge=1, le=30 * 86_400)]


class GovernanceApproved(_Governance):
    """An admin's approval of the pending governance event ``governance_id`` (the two-person
    rule). Counted once per admin identity; the proposer's own signature already counts."""

    KIND = "GovernanceApproved"
    SLUG = "governance-approved"
    kind: Literal["GovernanceApproved"] = "GovernanceApproved"
    governance_id: EventId

    def parent_ref(self) -> str | None:
        return self.governance_id


class GovernanceApplied(Event):
    """The authority applied governance event ``request_id`` (a ``kind``) at ``position``:
    every decision signed from now on names a position >= this one. ``approvals`` are the
    GovernanceApproved event ids that completed its quorum (sorted)."""

    KIND = "GovernanceApplied"
    SLUG = "governance-applied"
    kind: Literal["GovernanceApplied"] = "GovernanceApplied"
    request_id: EventId
    applied_kind: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{1,64}$")]
    position: Annotated[int, Field(ge=1)]
    approvals: Annotated[tuple[EventId, ...], Field(max_length=16)] = ()
    policy_digest: Digest | None = None

    def parent_ref(self) -> str | None:
        return self.request_id


GOVERNANCE_TYPES: tuple[type[_Governance], ...] = (
    PrincipalRegistered, PrincipalRevoked, PrincipalSuspended, PrincipalResumed,
    TenantSuspended, TenantResumed, PolicyPublished, PolicyPromoted, GovernanceConfigured,
    GovernanceApproved,
)
QUORATE_TYPES: tuple[type[_Quorate], ...] = (
    PrincipalRegistered, PolicyPublished, GovernanceConfigured)
