"""Helpers for governance tests on the real embedded broker (tests/integration/
test_governance_crash.py, test_governance_group.py): the operator of a data directory, what a
topic holds, waiting on a condition with a deadline."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from ledger.config import Settings
from ledger.core.envelope import event_id, parse_envelope, parse_payload, payload_bytes
from ledger.core.events import AuthorizationDenied, AuthorizationGranted, Event
from ledger.core.governance_events import GovernanceApplied
from ledger.kafka.offsets import probe_highwaters, topic_partitions
from ledger.keyfiles import load_signer
from ledger.log.governance import OPERATOR_IDENTITY
from ledger.log.store import LedgerStore
from ledger.sdk.governance import Admin


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def operator(data: Path) -> Admin:
    """The operator admin of ``data`` (keys/operator.key, identity govledger:operator)."""
    return Admin(OPERATOR_IDENTITY, "*", load_signer(data / "keys" / "operator.key"))


def event_of(raw: bytes) -> Event:
    parsed = parse_envelope(raw)
    return parse_payload(parsed.payload_type, parsed.payload)


def id_of(signed: bytes | Event) -> str:
    """The event id of a signed envelope or of a parsed event."""
    return event_id(payload_bytes(event_of(signed) if isinstance(signed, bytes) else signed))


async def topic_events(bootstrap: str, topic: str) -> list[Event]:
    """Every event ``topic`` holds now: read from the start up to each partition's
    high-water mark (so nothing acknowledged before the call is missed)."""
    settings = Settings()
    partitions = await topic_partitions(settings, bootstrap, [topic])
    marks = await probe_highwaters(settings, bootstrap, partitions)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    events: list[Event] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + 30
        async def behind() -> bool:
            return any([await consumer.position(tp) < marks[tp] for tp in partitions])
        while await behind():
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its high-water marks")
            batch = await consumer.getmany(timeout_ms=200)
            events += [event_of(r.value) for part in batch.values() for r in part
                       if r.value is not None]
    finally:
        await consumer.stop()
    return events


async def wait_for_events(bootstrap: str, topic: str, what: str,
                          done: Callable[[list[Event]], bool],
                          timeout_s: float = 60) -> list[Event]:
    """Read ``topic`` again until ``done`` holds of what it holds; AssertionError naming
    ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = await topic_events(bootstrap, topic)
        if done(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def subjects(envelope: bytes) -> set[str]:
    """What a decision about ``envelope`` names: its event id, or the hash of its bytes
    when it was refused on arrival (an unknown key, a bad signature)."""
    return {id_of(envelope), hashlib.sha256(envelope).hexdigest()}


def decision_about(events: list[Event], envelope: bytes
                   ) -> AuthorizationGranted | AuthorizationDenied | None:
    """The one decision about the request ``envelope`` among ``events``, or None."""
    names = subjects(envelope)
    found = {id_of(e): e for e in events  # copies of one decision (a re-publication) are one
             if isinstance(e, AuthorizationGranted | AuthorizationDenied) and e.request_id in names}
    assert len(found) <= 1, f"{len(found)} decisions about {id_of(envelope)[:16]}: {found}"
    return next(iter(found.values()), None)


def applied_of(events: list[Event], governance_id: str) -> list[GovernanceApplied]:
    """The GovernanceApplied answers to ``governance_id`` among ``events``."""
    return [e for e in events if isinstance(e, GovernanceApplied)
            and e.request_id == governance_id]


def wait_until(what: str, condition: Callable[[], bool], timeout_s: float = 60) -> None:
    """Poll ``condition`` (a file, a ledger) until it holds; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def ledger_leaves(ledger_db: Path, kinds: list[str]) -> list[tuple[str, str | None, bytes]]:
    """(event id, parent ref, leaf bytes) of every leaf of ``kinds`` in the ledger now."""
    with LedgerStore(ledger_db) as store:
        return [(leaf.event_id, leaf.parent_ref, leaf.leaf) for leaf in store.iter_kinds(kinds)]
