"""Causal order: which earlier events an event answers or refers to (issue 15 item 4).

A leaf must never precede its causes. :func:`causes` names them for one parsed event, from
its fields alone; the sequencer holds an event back until its causes are leaves
(ledger/log/holdback.py) and ``govledger ledger audit`` checks the order of a whole log
(ledger/log/causal.py). Both ask this one function.

A cause is an event id and a role:

* ``EVENT``: the leaf whose event id it is must come first;
* ``DECISION``: a decision leaf (AuthorizationGranted/Denied, ExecutionAllowed/Refused) whose
  ``parent_ref`` is that id must come first: an ExecutionCompleted/Failed comes after the
  verdict on its execution request, whose event id it does not know.

The rules, by kind:

=======================  ===================================================================
AuthorizationRequested   a delegation: its parent artifact's grant (``lineage.parent``)
AuthorizationGranted     its request; with a parent, the parent's grant; after human
                         approval, the ApprovalRequired and approvals its artifact names
                         (``approval.*`` metadata, docs/approvals.md)
AuthorizationDenied      its request or revocation, except a denial of input that could not
                         be authenticated: that names the hash of the raw bytes (tenant
                         ``*``, no root), which is never a leaf
AuthorizationRevoked     the grant it revokes
RevocationApplied        its revocation
ExecutionRequested       the grant it runs under
ExecutionAllowed/Refused its execution request
ExecutionCompleted/      its execution request, and the verdict on it
Failed
GovernanceApplied        the governance event it applies
GovernanceApproved       the governance event it approves
ApprovalRequired,        the request waiting for approval
ApprovalGiven/Refused
others                   none (other governance events, kinds this version does not know)
=======================  ===================================================================

The function reads attributes only, so it runs on a validated model or on an attribute view
of the canonical payload (the audit reads a million leaves that way, ledger/log/causal.py).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Final, NamedTuple

from ledger.core.events import Event

__all__ = ["CAUSAL_KINDS", "DECISION_KINDS", "Cause", "Role", "causes", "provides"]


class Role(IntEnum):
    """What must already be a leaf: the event with that id, or a decision about that id."""

    EVENT = 0
    DECISION = 1


class Cause(NamedTuple):
    event_id: str  # lowercase hex, as the events carry it
    role: Role


DECISION_KINDS: Final = frozenset({"AuthorizationGranted", "AuthorizationDenied",
                                   "ExecutionAllowed", "ExecutionRefused"})
"""Kinds that decide the event their ``parent_ref`` names (ledger.log.index agrees)."""


def _request(event: Event) -> tuple[Cause, ...]:
    parent: str | None = event.lineage.parent  # type: ignore[attr-defined]
    return () if parent is None else (Cause(parent, Role.EVENT),)


def _grant(event: Event) -> tuple[Cause, ...]:
    request = Cause(event.request_id, Role.EVENT)  # type: ignore[attr-defined]
    parent: str | None = event.artifact.lineage.parent  # type: ignore[attr-defined]
    found = (request,) if parent is None else (request, Cause(parent, Role.EVENT))
    meta = event.artifact.governance  # type: ignore[attr-defined]
    items = meta.items() if isinstance(meta, dict) else vars(meta).items()  # model or view
    return found + tuple(Cause(value, Role.EVENT) for key, value in sorted(items)
                         if key.startswith("approval.") and isinstance(value, str))


def _denial(event: Event) -> tuple[Cause, ...]:
    # processors/core/engine.py _reject_input: unauthenticated input is denied under tenant
    # "*" with no root, naming SHA-256(raw bytes); every other denial names a logged event.
    if event.tenant == "*" and event.root is None:  # type: ignore[attr-defined]
        return ()
    return (Cause(event.request_id, Role.EVENT),)  # type: ignore[attr-defined]


def _on(field: str) -> Callable[[Event], tuple[Cause, ...]]:
    def rule(event: Event) -> tuple[Cause, ...]:
        return (Cause(getattr(event, field), Role.EVENT),)
    return rule


def _report(event: Event) -> tuple[Cause, ...]:
    execution: str = event.execution_id  # type: ignore[attr-defined]
    return (Cause(execution, Role.EVENT), Cause(execution, Role.DECISION))


_RULES: Final[dict[str, Callable[[Event], tuple[Cause, ...]]]] = {
    "AuthorizationRequested": _request,
    "AuthorizationGranted": _grant,
    "AuthorizationDenied": _denial,
    "AuthorizationRevoked": _on("artifact_id"),
    "RevocationApplied": _on("revocation_id"),
    "ExecutionRequested": _on("artifact_id"),
    "ExecutionAllowed": _on("execution_id"),
    "ExecutionRefused": _on("execution_id"),
    "ExecutionCompleted": _report,
    "ExecutionFailed": _report,
    "GovernanceApplied": _on("request_id"),
    "GovernanceApproved": _on("governance_id"),
    "ApprovalRequired": _on("request_id"),
    "ApprovalGiven": _on("request_id"),
    "ApprovalRefused": _on("request_id"),
}

CAUSAL_KINDS: Final = frozenset(_RULES)
"""Kinds that may have causes: for the others :func:`causes` is always empty."""


def causes(event: Event) -> tuple[Cause, ...]:
    """The earlier events ``event`` answers or refers to (module docstring), each of which
    must be a leaf before it. Reads ``event.kind`` and the fields its rule names; raises
    AttributeError only for an object that is not shaped like its kind's model."""
    rule = _RULES.get(event.kind)  # type: ignore[attr-defined]
    return () if rule is None else rule(event)


def provides(event_id: str, kind: str, parent_ref: str | None) -> tuple[Cause, ...]:
    """What a leaf satisfies once stored: its own id, and for a decision the decision about
    its ``parent_ref``."""
    if parent_ref is not None and kind in DECISION_KINDS:
        return (Cause(event_id, Role.EVENT), Cause(parent_ref, Role.DECISION))
    return (Cause(event_id, Role.EVENT),)
