"""Every event kind in one registry: which exist, which only the authority signs, which
govern (ledger.core.governance_events)."""

from __future__ import annotations

from ledger.core.alert_events import AlertRaised
from ledger.core.approval_events import APPROVAL_ANSWERS, ApprovalRequired
from ledger.core.events import (
    AuthorizationDenied,
    AuthorizationGranted,
    AuthorizationRequested,
    AuthorizationRevoked,
    Event,
    RevocationApplied,
)
from ledger.core.execution_events import (
    ExecutionAllowed,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRefused,
    ExecutionRequested,
)
from ledger.core.governance_events import GOVERNANCE_TYPES, GovernanceApplied
from ledger.errors import Reason

EVENT_TYPES: tuple[type[Event], ...] = (
    AuthorizationRequested, AuthorizationGranted, AuthorizationDenied, AuthorizationRevoked,
    RevocationApplied, ExecutionRequested, ExecutionAllowed, ExecutionRefused,
    ExecutionCompleted, ExecutionFailed, *GOVERNANCE_TYPES, GovernanceApplied, AlertRaised,
    ApprovalRequired, *APPROVAL_ANSWERS,
)
BY_KIND: dict[str, type[Event]] = {cls.KIND: cls for cls in EVENT_TYPES}

AUTHORITY_KINDS: frozenset[str] = frozenset({
    AuthorizationGranted.KIND, AuthorizationDenied.KIND, RevocationApplied.KIND,
    ExecutionAllowed.KIND, ExecutionRefused.KIND, GovernanceApplied.KIND, AlertRaised.KIND,
    ApprovalRequired.KIND,
})
"""Kinds only the authority signs (decisions, verdicts, acknowledgements, the monitor's
alerts). The ledger logs
them, and a bundle verifier accepts them, only under a key with the ``authority`` role; the
authority signs nothing else."""

GOVERNANCE_KINDS: frozenset[str] = frozenset(cls.KIND for cls in GOVERNANCE_TYPES)
"""Kinds an admin signs on the governance topic (ledger.core.governance decides them)."""


def answer_of(event: Event) -> tuple[str, bool, tuple[Reason, ...]] | None:
    """What an authority answer says: the id it answers (a request, execution, revocation or
    governance event), whether that was allowed or applied, and the reasons; None for any
    other event. The one reading of a decision, for the SDK and the API."""
    if isinstance(event, AuthorizationGranted | GovernanceApplied):
        return event.request_id, True, ()
    if isinstance(event, AuthorizationDenied):
        return event.request_id, False, event.reasons
    if isinstance(event, ExecutionAllowed):
        return event.execution_id, True, ()
    if isinstance(event, ExecutionRefused):
        return event.execution_id, False, event.reasons
    if isinstance(event, RevocationApplied):
        return event.revocation_id, True, ()
    return None
