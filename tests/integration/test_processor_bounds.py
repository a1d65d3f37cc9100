"""The decision worker's bounds on the real embedded broker with a real journal: a flood of
large distinct bad messages keeps little memory (and a redelivery is answered alike), and a
revocation of a 1,111-artifact subtree publishes every artifact of it."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from ledger.config import Settings
from ledger.core.envelope import parse_envelope, parse_payload, sign_event, verify_envelope
from ledger.core.events import (
    AuthorizationDenied,
    AuthorizationGranted,
    AuthorizationRevoked,
    RevocationApplied,
)
from ledger.errors import Reason
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.topics import Topics
from ledger.keyfiles import load_keyring
from tests.factories import ALICE, T0, request
from tests.service_support import collect, make_data_dir, produce, worker_running

pytestmark = pytest.mark.integration

MB = 1024 * 1024
FLOOD = 12


def bad_message(n: int) -> bytes:
    head = f'{{"payload":"{n:08d}'.encode()
    return head + b"A" * (2 * MB - len(head))


async def send(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                max_request_size=4 * MB)
    await producer.start()
    try:
        for n, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=str(n).encode())
    finally:
        await producer.stop()


def denials(values: list[bytes]) -> list[tuple[bytes, AuthorizationDenied]]:
    found = []
    for value in values:
        parsed = parse_envelope(value)
        event = parse_payload(parsed.payload_type, parsed.payload)
        if isinstance(event, AuthorizationDenied):
            found.append((value, event))
    return found


async def flood_then_redeliver(settings: Settings, bootstrap: str) -> tuple[int, list[bytes]]:
    """The bytes the worker's decision cache holds after the flood, and every decision."""
    topics = Topics(settings.topic_prefix)
    async with worker_running(settings, bootstrap) as worker:
        await send(bootstrap, topics.requests, [bad_message(n) for n in range(FLOOD)])
        await collect(bootstrap, topics.decisions, FLOOD)
        state = worker.engine.state
        kept = sum(len(o.key) + len(o.value) for outcome in state.decided.values()
                   for o in outcome.outputs)
        await send(bootstrap, topics.requests, [bad_message(3)])  # the same message again
        return kept, await collect(bootstrap, topics.decisions, FLOOD + 1)


def test_a_flood_of_large_bad_messages_keeps_denials_not_messages(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    make_data_dir(tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data", topic_prefix=topics.prefix, partitions=4)
    kept, decisions = asyncio.run(flood_then_redeliver(settings, broker.bootstrap))
    # 12 x 2 MB went through; about 1 KB of denial each stays (was the 2 MB message too)
    assert kept < FLOOD * 4096, f"the worker keeps {kept} bytes for {FLOOD} bad messages"
    found = denials(decisions)
    assert len(found) == FLOOD + 1
    assert all(event.reasons == (Reason.OVERSIZED,) for _, event in found)
    # the redelivered message got the very bytes of its first denial: one ledger leaf
    again = hashlib.sha256(bad_message(3)).hexdigest()
    twice = [value for value, event in found if event.request_id == again]
    assert len(twice) == 2 and twice[0] == twice[1]
    dead = asyncio.run(collect(broker.bootstrap, topics.deadletter, FLOOD + 1))
    assert dead.count(bad_message(3)) == 2 and len(dead) == FLOOD + 1


async def revoke_wide_tree(settings: Settings, bootstrap: str, children: int
                           ) -> tuple[list[str], list[bytes]]:
    """Grant a root and ``children`` children under it, revoke the root: the subtree's
    artifact ids and every decision published."""
    topics = Topics(settings.topic_prefix)
    keyring = load_keyring(settings.data_dir / "keyring.json")
    async with worker_running(settings, bootstrap):
        root = sign_event(request(nonce="wide-root-000001"), ALICE)
        root_id = verify_envelope(root, keyring, T0).event_id
        await produce(bootstrap, topics.requests, [(root_id.encode(), root)])
        grant = next(v for v in await collect(bootstrap, topics.decisions, 1)
                 if isinstance(event_of(v), AuthorizationGranted))
        artifact = verify_envelope(grant, keyring, T0).event_id
        kids = [sign_event(request(nonce=f"wide-child-{n:06d}", root=root_id, parent=artifact),
                           ALICE) for n in range(children)]
        await produce(bootstrap, topics.requests, [(root_id.encode(), k) for k in kids])
        revocation = sign_event(AuthorizationRevoked(
            signer="agent:alice", tenant="acme", nonce="wide-revoke-00001", issued_at=T0,
            artifact_id=artifact, root=root_id, reason="test"), ALICE)
        await produce(bootstrap, topics.revocations, [(root_id.encode(), revocation)])
        # the root's grant, a grant per child, the revocation's two chunks
        decisions = await collect(bootstrap, topics.decisions, children + 3, timeout_s=60)
        granted = [verify_envelope(v, keyring, T0).event_id for v in decisions
                   if isinstance(event_of(v), AuthorizationGranted)]
        return granted, decisions


def event_of(raw: bytes) -> object:
    parsed = parse_envelope(raw)
    return parse_payload(parsed.payload_type, parsed.payload)


def test_a_revocation_of_1111_artifacts_publishes_every_one_in_chunks(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    make_data_dir(tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data", topic_prefix=topics.prefix, partitions=4,
                        rate_limit_per_s=100_000, rate_limit_burst=100_000)
    granted, decisions = asyncio.run(revoke_wide_tree(settings, broker.bootstrap, 1110))
    assert len(granted) == 1111
    applied = [e for e in map(event_of, decisions) if isinstance(e, RevocationApplied)]
    assert sorted((e.chunk, e.chunks) for e in applied) == [(0, 2), (1, 2)]
    listed = [i for e in applied for i in e.revoked]
    assert len(listed) == 1111 and set(listed) == set(granted)
