"""The decision worker against the real embedded broker and real SQLite files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ledger.broker import EmbeddedBroker
from ledger.config import Settings
from ledger.core.envelope import parse_envelope, parse_payload, sign_event, verify_envelope
from ledger.core.events import (
    AuthorizationDenied,
    AuthorizationGranted,
    Event,
    PolicyPublished,
)
from ledger.errors import Reason
from ledger.keyfiles import load_keyring
from ledger.topics import Topics
from processors.app import build_worker
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


def test_grant_denial_and_poison_then_restart_gives_same_bytes(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    make_data_dir(tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data", topic_prefix=topics.prefix, partitions=4)
    good = sign_event(request(), ALICE)
    bad_policy = sign_event(request(nonce="nonce-0000000002", actions=("delete",),
                                    resource="prod/db/*"), ALICE)
    poison = b"\x00not an envelope"
    after = sign_event(request(nonce="nonce-0000000003", environments=(ENV,)), ALICE)
    out = asyncio.run(decide(settings, broker.bootstrap, [good, bad_policy, poison, after], 5))
    events = [event_of(raw) for raw in out]
    assert sum(isinstance(e, PolicyPublished) for e in events) == 1
    assert sum(isinstance(e, AuthorizationGranted) for e in events) == 2
    denials = [e for e in events if isinstance(e, AuthorizationDenied)]
    assert sorted(d.reasons[0] for d in denials) == [Reason.MALFORMED, Reason.POLICY_DENY]
    dead = asyncio.run(collect(broker.bootstrap, topics.deadletter, 1))
    assert dead == [poison]
    good_id = verify_envelope(good, load_keyring(settings.data_dir / "keyring.json"), T0).event_id
    first = {raw for raw, e in zip(out, events, strict=True)
             if isinstance(e, AuthorizationGranted) and e.request_id == good_id}
    assert len(first) == 1

    # A new worker on the same data directory, fed the same request again: the same bytes,
    # and no second PolicyPublished (the policy digest is unchanged).
    again = asyncio.run(decide(settings, broker.bootstrap, [good], 6))
    assert sorted(again[:5]) == sorted(out) or set(out) <= set(again)
    redelivered = [raw for raw in again if (e := event_of(raw)) and
                   isinstance(e, AuthorizationGranted) and e.request_id == good_id]
    assert set(redelivered) == first and len(redelivered) == 2
    assert sum(isinstance(event_of(raw), PolicyPublished) for raw in again) == 1
