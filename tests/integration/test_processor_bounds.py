"""The decision worker under a flood of large distinct bad messages, on the real embedded
broker with a real journal: what it keeps stays small, and a redelivery is answered alike."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from ledger.broker import EmbeddedBroker
from ledger.config import Settings
from ledger.core.envelope import parse_envelope, parse_payload
from ledger.core.events import AuthorizationDenied
from ledger.errors import Reason
from ledger.topics import Topics
from processors.app import build_worker
from tests.factories import T0
from tests.service_support import collect, make_data_dir

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
    worker = build_worker(settings, bootstrap)
    worker.clock = lambda: T0
    await worker.start()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await send(bootstrap, topics.requests, [bad_message(n) for n in range(FLOOD)])
        await collect(bootstrap, topics.decisions, FLOOD + 1)  # + the policy publication
        state = worker.engine.state
        kept = sum(len(o.key) + len(o.value) for outcome in state.decided.values()
                   for o in outcome.outputs)
        await send(bootstrap, topics.requests, [bad_message(3)])  # the same message again
        return kept, await collect(bootstrap, topics.decisions, FLOOD + 2)
    finally:
        stop.set()
        await task
        await worker.stop()
        worker.journal.close()


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
    redelivered = found[-1]
    assert [value for value, _ in found].count(redelivered[0]) == 2
    dead = asyncio.run(collect(broker.bootstrap, topics.deadletter, FLOOD + 1))
    assert dead.count(bad_message(3)) == 2 and len(dead) == FLOOD + 1
