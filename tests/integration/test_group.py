"""Two decision workers in one consumer group on the real embedded broker, sharing one journal.

What a group must keep: REPLAY across partitions owned by different workers; and when a
worker leaves, the survivor decides the trees it takes over with their full history (the
lineage effects it kept waiting while it did not own them, processors/worker.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from ledger.config import Settings
from ledger.core.envelope import event_id, parse_envelope, parse_payload, payload_bytes, sign_event
from ledger.core.events import (
    AuthorizationDenied,
    AuthorizationGranted,
    AuthorizationRequested,
    AuthorizationRevoked,
    Event,
    RevocationApplied,
)
from ledger.errors import Reason
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.clients import partition_for
from ledger.kafka.topics import Topics
from processors.app import build_worker
from processors.worker import DecisionWorker
from tests.conftest import TEST_PARTITIONS
from tests.factories import ALICE, T0, request
from tests.service_support import make_data_dir, produce

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def event_of(raw: bytes) -> Event:
    parsed = parse_envelope(raw)
    return parse_payload(parsed.payload_type, parsed.payload)


async def stop_workers(stops: list[asyncio.Event], tasks: list[asyncio.Task[None]],
                       workers: list[DecisionWorker]) -> None:
    """Stop running workers: their run loops first, then each worker and its journal."""
    for stop in stops:
        stop.set()
    for task in tasks:
        if not task.done():
            await task
    for worker in workers:
        await worker.stop()
        worker.journal.close()


def owned(worker: DecisionWorker, topic: str) -> set[int]:
    consumer = worker._consumer  # which partitions the group gave it
    if consumer is None:
        return set()
    return {tp.partition for tp in consumer.assignment() if tp.topic == topic}


async def until(what: str, condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def request_on(partitions: set[int], tag: str, **kwargs: object) -> AuthorizationRequested:
    """A request whose id (its own lineage root) hashes to one of ``partitions``."""
    for n in range(1000):
        candidate = request(resource=f"db/orders/{tag}{n}/*", **kwargs)  # type: ignore[arg-type]
        rid = event_id(payload_bytes(candidate))
        if partition_for(rid.encode(), TEST_PARTITIONS) in partitions:
            return candidate
    raise AssertionError("no request id on those partitions")


@dataclass
class Decisions:
    """Reads ``gov.decisions`` from the start; finds the decision about one subject."""

    bootstrap: str
    topic: str

    async def about(self, match: Callable[[Event], bool], timeout_s: float = 30) -> Event:
        consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap,
                                    group_id=None, auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        event = event_of(record.value or b"")
                        if match(event):
                            return event
        finally:
            await consumer.stop()
        raise AssertionError("no such decision")


def about_request(rid: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, AuthorizationGranted | AuthorizationDenied) and (
        e.request_id == rid)


async def scenario(settings: Settings, bootstrap: str, topics: Topics) -> None:
    workers = [build_worker(settings, bootstrap) for _ in range(2)]
    stops = [asyncio.Event() for _ in workers]
    for worker in workers:
        assert worker.use_group
        worker.clock = lambda: T0
        await worker.start()
    tasks = [asyncio.create_task(w.run(s)) for w, s in zip(workers, stops, strict=True)]
    decisions = Decisions(bootstrap, topics.decisions)
    try:
        a, b = workers
        everything = set(range(TEST_PARTITIONS))
        for topic in (topics.requests, topics.revocations, topics.executions):
            await until("a split of every input topic", lambda t=topic: (  # type: ignore[misc]
                bool(owned(a, t)) and bool(owned(b, t)) and not owned(a, t) & owned(b, t)
                and owned(a, t) | owned(b, t) == everything))
        # Range assignment: partition p of every input topic belongs to the same worker.
        assert owned(a, topics.requests) == owned(a, topics.executions) == owned(
            a, topics.revocations)

        # 1. A root on a's partitions is granted by a.
        root = request_on(owned(a, topics.requests), "a", nonce="group-nonce-0001")
        root_id = event_id(payload_bytes(root))
        await produce(bootstrap, topics.requests, [(root_id.encode(), sign_event(root, ALICE))])
        grant = await decisions.about(about_request(root_id))
        assert isinstance(grant, AuthorizationGranted)
        grant_id = event_id(payload_bytes(grant))

        # 2. The same nonce on a request that lands on b's partitions: REPLAY, across workers.
        replay = request_on(owned(b, topics.requests), "b", nonce="group-nonce-0001")
        replay_id = event_id(payload_bytes(replay))
        await produce(bootstrap, topics.requests,
                      [(replay_id.encode(), sign_event(replay, ALICE))])
        denied = await decisions.about(about_request(replay_id))
        assert isinstance(denied, AuthorizationDenied)
        assert denied.reasons == (Reason.REPLAY,)
        # b knows the nonce but has not spent time on a's tree: its grant waits.
        assert grant_id not in b.engine.state.lineage.grants
        assert root_id.encode() in b.catchup.deferred

        # 3. a leaves; b takes every partition and decides a's tree with its history.
        stops[0].set()
        await tasks[0]
        await a.stop()
        await until("b owning every partition",
                    lambda: owned(b, topics.requests) == everything, timeout_s=90)
        inside = root.scope.resource.removesuffix("*")
        child = request(nonce="group-nonce-0002", resource=inside + "child/*",
                        root=root_id, parent=grant_id)
        child_id = event_id(payload_bytes(child))
        await produce(bootstrap, topics.requests, [(root_id.encode(), sign_event(child, ALICE))])
        child_grant = await decisions.about(about_request(child_id))
        assert isinstance(child_grant, AuthorizationGranted), child_grant
        assert child_grant.artifact.lineage.depth == 1
        child_artifact = event_id(payload_bytes(child_grant))

        # 4. Revoking the root cascades to the child; a later child is PARENT_REVOKED.
        revocation = AuthorizationRevoked(signer="agent:alice", tenant="acme",
                                          nonce="group-nonce-0003", issued_at=T0,
                                          artifact_id=grant_id, root=root_id, reason="test")
        await produce(bootstrap, topics.revocations,
                      [(root_id.encode(), sign_event(revocation, ALICE))])
        applied = await decisions.about(lambda e: isinstance(e, RevocationApplied))
        assert isinstance(applied, RevocationApplied)
        assert set(applied.revoked) == {grant_id, child_artifact}
        late = request(nonce="group-nonce-0004", resource=inside + "child/late/*",
                       root=root_id, parent=child_artifact)
        late_id = event_id(payload_bytes(late))
        await produce(bootstrap, topics.requests, [(root_id.encode(), sign_event(late, ALICE))])
        refused = await decisions.about(about_request(late_id))
        assert isinstance(refused, AuthorizationDenied)
        assert refused.reasons == (Reason.PARENT_REVOKED,)
    finally:
        await stop_workers(stops, tasks, workers)


def test_a_group_keeps_replay_across_workers_and_history_across_a_rebalance(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    make_data_dir(tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data", topic_prefix=topics.prefix,
                        partitions=TEST_PARTITIONS, processor_group=True,
                        kafka_session_timeout_ms=6_000)
    asyncio.run(scenario(settings, broker.bootstrap, topics))
