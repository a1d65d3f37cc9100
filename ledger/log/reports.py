"""Read-only reports over the ledger for auditors: the monitor's alerts (``govledger
alerts``), the grants that expired unused (``govledger unused-grants``) and the shadow
policy's agreement with the enforced one (``govledger policy shadow-report``).

The sequencer admitted every leaf (signature and signer kind, ledger.core.signers), so the
leaves are parsed here, not verified again; ``govledger ledger audit`` re-verifies them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from ledger.core.alert_events import AlertRaised
from ledger.core.envelope import parse_envelope, parse_payload
from ledger.core.events import AuthorizationDenied, AuthorizationGranted, Event
from ledger.core.execution_events import ExecutionRequested
from ledger.core.shadow import ShadowTally, agreement
from ledger.log.store import LedgerStore


@dataclass(frozen=True, slots=True)
class Logged:
    index: int
    event_id: str
    event: Event


def _parsed(store: LedgerStore, kinds: list[str], start: int) -> Iterator[Logged]:
    for leaf in store.iter_kinds(kinds, start):
        parsed = parse_envelope(leaf.leaf)
        yield Logged(int(leaf.index), leaf.event_id,
                     parse_payload(parsed.payload_type, parsed.payload))


def read_alerts(store: LedgerStore, start: int = 0) -> Iterator[tuple[int, str, AlertRaised]]:
    """``(index, event id, alert)`` of every AlertRaised leaf from ``start``, in ledger order.
    Raises Unavailable (SQLite) or Rejected (a stored leaf that does not parse)."""
    for logged in _parsed(store, [AlertRaised.KIND], start):
        assert isinstance(logged.event, AlertRaised)
        yield logged.index, logged.event_id, logged.event


@dataclass(frozen=True, slots=True)
class UnusedGrant:
    artifact_id: str
    holder: str
    tenant: str
    not_after: datetime


def unused_grants(store: LedgerStore, now: datetime) -> list[UnusedGrant]:
    """Grants whose window ended before ``now`` and under which no execution was requested
    (a report, not an alert: an unused grant is over-provisioning, not an incident), by
    expiry. Raises Unavailable or Rejected."""
    grants: dict[str, AuthorizationGranted] = {}
    used: set[str] = set()
    for logged in _parsed(store, [AuthorizationGranted.KIND, ExecutionRequested.KIND], 0):
        if isinstance(logged.event, AuthorizationGranted):
            grants[logged.event_id] = logged.event
        elif isinstance(logged.event, ExecutionRequested):
            used.add(logged.event.artifact_id)
    found = [UnusedGrant(aid, g.artifact.holder, g.artifact.tenant, g.artifact.window.not_after)
             for aid, g in grants.items()
             if aid not in used and g.artifact.window.not_after <= now]
    return sorted(found, key=lambda u: (u.not_after, u.artifact_id))


def shadow_report(store: LedgerStore, start: int = 0,
                  progress: Callable[[int], None] | None = None) -> ShadowTally:
    """The shadow tally (ledger.core.shadow) of every grant and denial from leaf ``start``.
    ``progress`` gets the leaf index reached every 10,000 decisions. Raises Unavailable or
    Rejected."""
    tally = ShadowTally()
    kinds = [AuthorizationGranted.KIND, AuthorizationDenied.KIND]
    for n, leaf in enumerate(store.iter_kinds(kinds, start), 1):
        if progress is not None and n % 10_000 == 0:
            progress(int(leaf.index))
        parsed = parse_envelope(leaf.leaf)
        if b'"shadow":' not in parsed.payload:
            continue  # no shadow outcome: not parsed into a model (the common case)
        found = agreement(parse_payload(parsed.payload_type, parsed.payload))
        if found is not None:
            tally.add(found)
    return tally
