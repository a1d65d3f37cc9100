"""The engine's restore path, per journaled outcome: what a verified input did to the replay
memory and the rate limiter, and what an authority-signed output did to the lineage (each
verified again). Pure; the engine (processors/core/engine.py) calls these in journal order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ledger.core.envelope import event_id, read_stored, verify_stored
from ledger.core.events import (
    AuthorizationGranted,
    AuthorizationRequested,
    Event,
    RevocationApplied,
)
from ledger.core.execution_events import ExecutionAllowed, ExecutionRequested
from ledger.core.keys import KeyRing
from ledger.core.streams import Stream
from ledger.errors import Reason, Rejected, Unavailable
from processors.core.checks import RateLimiter
from processors.core.freshness import Limits
from processors.core.lineage import LineageState
from processors.core.outcomes import DecisionState, Outcome, Output

# Authority-signed outputs that change the lineage state when restored.
_EFFECTS: frozenset[type[Event]] = frozenset({AuthorizationGranted, RevocationApplied,
                                              ExecutionAllowed})
# Inputs whose nonce the checks remember: a request on the request stream, an execution
# request on the execution stream (anything else is denied before any check).
_NONCE_BEARING = frozenset({(Stream.REQUESTS, AuthorizationRequested),
                            (Stream.EXECUTIONS, ExecutionRequested)})


def restore_input(state: DecisionState, limits: Limits, limiter: RateLimiter, stream: Stream,
                  raw: bytes, arrival: datetime, outcome: Outcome) -> None:
    """What a verified input did to the replay memory and the rate limiter."""
    stored = read_stored(raw)
    if stored is None or event_id(stored.payload) != outcome.subject:
        raise Unavailable(f"journal entry {outcome.subject[:16]} does not match its input")
    if (stream, stored.model) not in _NONCE_BEARING:
        return
    fields = stored.fields
    try:
        issued = _stored_time(fields["issued_at"])
        signer, nonce = fields["signer"], fields["nonce"]
    except (KeyError, ValueError) as exc:  # verified on arrival: the journal was altered
        raise Unavailable(f"journal entry {outcome.subject[:16]} is corrupt: {exc}") from exc
    if not isinstance(signer, str) or not isinstance(nonce, str):
        raise Unavailable(f"journal entry {outcome.subject[:16]} is corrupt")
    state.replay.remember(signer, nonce, outcome.subject, limits.nonce_until(issued, arrival),
                          arrival)
    if stored.model is AuthorizationRequested and (  # allow None: pending approval
            outcome.allow is not False or outcome.reasons == (Reason.RATE_LIMITED,)):
        # This request reached the rate limiter (its last check): take the same token
        # again, so the buckets are as the live run left them. (A grant that could not be
        # built after the limiter passed it is a denial here: one token of difference.)
        limiter.allow(signer, arrival.timestamp())


def restore_output(lineage: LineageState, keyring: KeyRing, identity: str, output: Output,
                   outcome: Outcome) -> bool:
    """Apply one journaled output's effect; True if it had one."""
    stored = read_stored(output.value)
    if stored is None or stored.model not in _EFFECTS:
        return False  # a denial, a refusal, a policy publication, a dead letter
    where = f"journal entry {outcome.subject[:16]}"
    try:
        event, signed_id = verify_stored(stored, keyring, identity)
    except Rejected as exc:
        raise Unavailable(f"{where}: its {stored.model.KIND} does not verify under the "
                          f"authority key: {exc}") from exc
    if isinstance(event, AuthorizationGranted):
        parent = event.artifact.lineage.parent
        if parent is not None and parent not in lineage.grants:
            raise Unavailable(f"{where}: grant under unknown parent {parent[:16]}")
        lineage.add_grant(signed_id, event.artifact)
    elif isinstance(event, RevocationApplied):
        if event.artifact_id not in lineage.grants:
            raise Unavailable(f"{where}: revokes unknown artifact {event.artifact_id[:16]}")
        lineage.revoke(event.artifact_id, event.revocation_id)
    elif isinstance(event, ExecutionAllowed):
        record = lineage.grants.get(event.artifact_id)
        if record is None:
            raise Unavailable(f"{where}: execution of unknown artifact "
                              f"{event.artifact_id[:16]}")
        record.uses += 1
    return True


def _stored_time(value: object) -> datetime:
    """A timestamp as the event model reads it (RFC 3339, UTC)."""
    if not isinstance(value, str):
        raise ValueError(f"time {value!r} is not a string")
    parsed = datetime.fromisoformat(value)
    if parsed.utcoffset() != timedelta(0):
        raise ValueError(f"time {value!r} is not UTC")
    return parsed.astimezone(UTC)
