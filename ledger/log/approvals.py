"""Approvals as the ledger shows them (docs/approvals.md): which requests wait for people,
and what each one has so far. For ``GET /v1/approvals`` and ``govledger approvals``.

Read from the sequenced leaves (the sequencer checked every signature on append): an
``ApprovalRequired`` whose request has no decision leaf yet is *pending*, or *expired* once
its deadline passed (the processor's denial follows at its next input); the
``ApprovalGiven`` / ``ApprovalRefused`` leaves about it are listed. A view, never a decision:
only the processor grants, and an approval listed here may still be refused by it.
"""

from __future__ import annotations

from datetime import datetime

from ledger.core.approval_events import (
    ApprovalGiven,
    ApprovalRefused,
    ApprovalRequired,
)
from ledger.core.envelope import parse_envelope, parse_payload
from ledger.core.events import AuthorizationDenied, AuthorizationGranted, Event, format_time
from ledger.errors import NotFound, ProofError, Rejected
from ledger.log.records import StoredLeaf
from ledger.log.store import LedgerStore

View = dict[str, object]
MAX_LISTED = 1000


def _event(leaf: StoredLeaf) -> Event:
    try:
        parsed = parse_envelope(leaf.leaf)
        return parse_payload(parsed.payload_type, parsed.payload)
    except Rejected as exc:  # the sequencer verified it on append: the file was altered
        raise ProofError(f"ledger leaf {leaf.index} does not parse: {exc}") from exc


def _answers(store: LedgerStore, request_ids: set[str]) -> dict[str, list[View]]:
    """The approvers' answers about ``request_ids``, in ledger order."""
    found: dict[str, list[View]] = {rid: [] for rid in request_ids}
    for leaf in store.iter_kinds((ApprovalGiven.KIND, ApprovalRefused.KIND)):
        event = _event(leaf)
        if isinstance(event, ApprovalGiven | ApprovalRefused) and event.request_id in found:
            refused = store.decision_for(leaf.event_id)
            found[event.request_id].append({
                "event_id": leaf.event_id, "index": leaf.index, "kind": event.KIND,
                "signer": event.signer, "issued_at": format_time(event.issued_at),
                "reason": event.reason,
                "refused": None if refused is None else _reasons(_event(refused))})
    return found


def _reasons(event: Event) -> list[str]:
    return [r.value for r in event.reasons] if isinstance(event, AuthorizationDenied) else []


def _view(leaf: StoredLeaf, required: ApprovalRequired, store: LedgerStore,
          now: datetime, answers: list[View]) -> View:
    end = store.decision_for(required.request_id)
    state = "pending" if now < required.deadline else "expired"
    reasons: list[str] = []
    if end is not None:
        decided = _event(end)
        state = "granted" if isinstance(decided, AuthorizationGranted) else "denied"
        reasons = _reasons(decided)
    artifact = required.artifact
    return {"request_id": required.request_id, "required_id": leaf.event_id,
            "state": state, "reasons": reasons, "tenant": required.tenant,
            "root": artifact.lineage.root, "requester": artifact.initiator,
            "holder": artifact.holder, "actions": list(artifact.scope.actions),
            "resource": artifact.scope.resource, "context": dict(artifact.governance),
            "role": required.role, "k": required.k,
            "deadline": format_time(required.deadline), "policy_ids": list(required.policy_ids),
            "approvals": answers}


def list_approvals(store: LedgerStore, now: datetime, *, pending_only: bool = True,
                   tenant: str | None = None) -> list[View]:
    """Requests that waited for approval (only those still pending by default), oldest
    first, at most MAX_LISTED. Raises ProofError (an altered leaf) or Unavailable."""
    required: list[tuple[StoredLeaf, ApprovalRequired]] = []
    for leaf in store.iter_kinds((ApprovalRequired.KIND,)):
        event = _event(leaf)
        if not isinstance(event, ApprovalRequired) or (tenant and event.tenant != tenant):
            continue
        if pending_only and (now >= event.deadline
                             or store.decision_for(event.request_id) is not None):
            continue
        required.append((leaf, event))
        if len(required) >= MAX_LISTED:
            break
    answers = _answers(store, {event.request_id for _, event in required})
    return [_view(leaf, event, store, now, answers[event.request_id])
            for leaf, event in required]


def show_approval(store: LedgerStore, request_id: str, now: datetime) -> View:
    """One request's approval record. Raises NotFound (it never waited for approval)."""
    for leaf in store.iter_kinds((ApprovalRequired.KIND,)):
        event = _event(leaf)
        if isinstance(event, ApprovalRequired) and event.request_id == request_id:
            answers = _answers(store, {request_id})[request_id]
            return _view(leaf, event, store, now, answers)
    raise NotFound(f"request {request_id} is not waiting for approval in the ledger")
