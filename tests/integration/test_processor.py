"""The decision worker against the real embedded broker and real SQLite files."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from ledger.config import Settings
from ledger.core.envelope import parse_envelope, parse_payload, sign_event, verify_envelope
from ledger.core.events import (
    AuthorizationDenied,
    AuthorizationGranted,
    Event,
)
from ledger.core.streams import Stream
from ledger.errors import Reason, Unavailable
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.topics import Topics
from ledger.keyfiles import load_keyring
from processors.app import build_worker
from processors.journal import Journal
from tests.factories import ALICE, ENV, T0, request
from tests.service_support import collect, make_data_dir, produce

pytestmark = pytest.mark.integration


def event_of(raw: bytes) -> Event:
    parsed = parse_envelope(raw)
    return parse_payload(parsed.payload_type, parsed.payload)


async def decide(settings: Settings, bootstrap: str, inputs: list[bytes],
                 expect: int) -> list[bytes]:
    topics = Topics(settings.topic_prefix)
    worker = build_worker(settings, bootstrap)
    worker.clock = lambda: T0
    journal_threads = {t for t in threading.enumerate() if t.name.startswith("journal")}
    await worker.start()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await produce(bootstrap, topics.requests, [(b"k", raw) for raw in inputs])
        return await collect(bootstrap, topics.decisions, expect)
    finally:
        stop.set()
        await task
        await worker.stop()
        left = {t for t in threading.enumerate() if t.name.startswith("journal")}
        assert not left - journal_threads, "the worker's journal thread outlived stop()"


def test_grant_denial_and_poison_then_restart_gives_same_bytes(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    make_data_dir(tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data", topic_prefix=topics.prefix, partitions=4)
    good = sign_event(request(), ALICE)
    bad_policy = sign_event(request(nonce="nonce-0000000002", actions=("delete",),
                                    resource="prod/db/*"), ALICE)
    poison = b"\x00not an envelope"
    after = sign_event(request(nonce="nonce-0000000003", environments=(ENV,)), ALICE)
    out = asyncio.run(decide(settings, broker.bootstrap, [good, bad_policy, poison, after], 4))
    events = [event_of(raw) for raw in out]
    assert sum(isinstance(e, AuthorizationGranted) for e in events) == 2
    denials = [e for e in events if isinstance(e, AuthorizationDenied)]
    assert sorted(d.reasons[0] for d in denials) == [Reason.MALFORMED, Reason.POLICY_DENY]
    dead = asyncio.run(collect(broker.bootstrap, topics.deadletter, 1))
    assert dead == [poison]
    good_id = verify_envelope(good, load_keyring(settings.data_dir / "keyring.json"), T0).event_id
    first = {raw for raw, e in zip(out, events, strict=True)
             if isinstance(e, AuthorizationGranted) and e.request_id == good_id}
    assert len(first) == 1

    # A new worker on the same data directory, fed the same request again: the same bytes.
    again = asyncio.run(decide(settings, broker.bootstrap, [good], 5))
    assert sorted(again[:4]) == sorted(out) or set(out) <= set(again)
    redelivered = [raw for raw in again if (e := event_of(raw)) and
                   isinstance(e, AuthorizationGranted) and e.request_id == good_id]
    assert set(redelivered) == first and len(redelivered) == 2


async def read_all(bootstrap: str, topic: str, settle_s: float = 1.0
                   ) -> list[tuple[int, int, bytes]]:
    """Every (partition, offset, value) of ``topic`` until nothing new came for ``settle_s``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[tuple[int, int, bytes]] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < settle_s:
            batch = await consumer.getmany(timeout_ms=200)
            fresh = [(r.partition, r.offset, r.value) for part in batch.values() for r in part
                     if r.value is not None]
            if fresh:
                got += fresh
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return got


def granted_ids(records: list[tuple[int, int, bytes]]) -> dict[int, list[str]]:
    """Per decisions partition, the request ids of its grants in offset order."""
    out: dict[int, list[str]] = {}
    for partition, _, raw in sorted(records, key=lambda r: r[:2]):
        event = event_of(raw)
        if isinstance(event, AuthorizationGranted):
            out.setdefault(partition, []).append(event.request_id)
    return out


def test_pipelined_batches_keep_order_and_a_journal_failure_publishes_nothing_after_it(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    """Many small batches in flight at once. When the journal fails on one batch, the worker
    stops with Unavailable and publishes exactly what was journaled before it (nothing of the
    failed batch or any later one); a restarted worker decides the rest, repeating the earlier
    decisions byte for byte; on every decisions partition, grants appear in journal order."""
    make_data_dir(tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data", topic_prefix=topics.prefix, partitions=4,
                        rate_limit_per_s=1e6, rate_limit_burst=10**6)
    inputs = [sign_event(request(nonce=f"nonce-pipe-{i:08d}"), ALICE) for i in range(240)]
    keyring = load_keyring(settings.data_dir / "keyring.json")
    request_ids = {verify_envelope(raw, keyring, T0).event_id for raw in inputs}

    async def run_worker(fail_at: int | None) -> None:
        worker = build_worker(settings, broker.bootstrap)
        worker.clock = lambda: T0
        worker.max_batch = 8
        calls = 0
        real_append = worker.journal.append

        def append(*args: object, **kwargs: object) -> int:
            nonlocal calls
            calls += 1
            if calls == fail_at:
                raise Unavailable("injected journal failure")
            return real_append(*args, **kwargs)  # type: ignore[arg-type]

        worker.journal.append = append  # type: ignore[method-assign]
        await worker.start()
        stop = asyncio.Event()
        try:
            if fail_at is not None:
                await produce(broker.bootstrap, topics.requests, [(b"k", r) for r in inputs])
                with pytest.raises(Unavailable, match="injected"):
                    await asyncio.wait_for(worker.run(stop), 60)
            else:
                task = asyncio.create_task(worker.run(stop))
                deadline = time.monotonic() + 60
                while (worker.journal.count() < len(inputs) + 1
                       and time.monotonic() < deadline):
                    await asyncio.sleep(0.1)
                stop.set()
                await task
        finally:
            await worker.stop()
            worker.journal.close()

    asyncio.run(run_worker(fail_at=3))  # call 1 journals the policy; the 2nd commit fails
    first = asyncio.run(read_all(broker.bootstrap, topics.decisions))
    published = [rid for ids in granted_ids(first).values() for rid in ids]
    journal = Journal(settings.data_dir / "processor.db")
    journaled = [e.outcome.subject for e in journal.entries() if e.stream is Stream.REQUESTS]
    journal.close()
    assert published and len(published) < len(inputs)
    assert sorted(published) == sorted(journaled)  # exactly what was journaled, once each

    asyncio.run(run_worker(fail_at=None))
    after = asyncio.run(read_all(broker.bootstrap, topics.decisions))
    grants = granted_ids(after)
    assert {rid for ids in grants.values() for rid in ids} == request_ids
    journal = Journal(settings.data_dir / "processor.db")
    order = {e.outcome.subject: e.seq for e in journal.entries()}
    journal.close()
    for ids in grants.values():
        seen = list(dict.fromkeys(ids))  # a republished tail may repeat: first sightings
        assert [order[rid] for rid in seen] == sorted(order[rid] for rid in seen)
    # every grant for a request decided before the failure is the same bytes as then
    then = {raw for _, _, raw in first}
    for _, _, raw in after:
        event = event_of(raw)
        if isinstance(event, AuthorizationGranted) and event.request_id in published:
            assert raw in then
