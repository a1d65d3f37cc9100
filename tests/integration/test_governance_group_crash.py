"""Two processor processes in one consumer group (the real broker, one journal, the real
sequencer): the one that decides governance (the governance topic has one partition) is
SIGKILLed around the operator's TenantSuspended (tests/processor_child.py). The other takes
the governance partition over and applies the suspension once; restarted, the first decides
under it too: both workers end on the same governance, whichever partition a request is on
(issue 13, "Bad input and faults")."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from pathlib import Path

import pytest

from ledger.core.envelope import event_id, payload_bytes, sign_event
from ledger.core.events import AuthorizationDenied, AuthorizationGranted
from ledger.errors import Reason
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.clients import partition_for
from ledger.kafka.topics import Topics
from ledger.log.audit import audit_ledger
from tests.conftest import TEST_PARTITIONS
from tests.factories import ALICE, request
from tests.governance_support import (
    applied_of,
    decision_about,
    id_of,
    now,
    operator,
    subjects,
    topic_events,
    wait_for_events,
    wait_until,
)
from tests.integration.test_governance_crash import (
    SUSPENSION,
    Scene,
    check_journal,
    check_ledger,
)
from tests.processor_child import Processor
from tests.service_support import produce

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
Decision = AuthorizationGranted | AuthorizationDenied


def on_partition(partition: int, nonce: str) -> bytes:
    """A request of alice whose id (its own lineage root) hashes to ``partition``."""
    for n in range(1000):
        candidate = request(issued_at=now(), nonce=f"{nonce}-{n:04d}".ljust(16, "0"),
                            resource=f"db/orders/{nonce}-{n}/*")
        if partition_for(event_id(payload_bytes(candidate)).encode(),
                         TEST_PARTITIONS) == partition:
            return sign_event(candidate, ALICE)
    raise AssertionError(f"no request id on partition {partition}")


def spread(scene: Scene, processes: list[Processor], tag: str,
           timeout_s: float = 90) -> tuple[list[Decision], list[bytes]]:
    """Rounds of one request per partition until every one of ``processes`` decided part of
    a round (the group has settled with each owning partitions); returns that round's
    decisions and requests."""
    deadline = time.monotonic() + timeout_s
    for round_ in itertools.count():
        sent = [on_partition(p, f"{tag}-r{round_}-p{p}") for p in range(TEST_PARTITIONS)]
        asyncio.run(produce(scene.bootstrap, scene.topics.requests,
                            [(id_of(raw).encode(), raw) for raw in sent]))
        events = scene.decisions(f"round {round_} of {tag}", *sent)
        deciders = {n for n, proc in enumerate(processes) for raw in sent
                    if subjects(raw) & proc.decided()}
        if deciders == set(range(len(processes))):
            decisions = [decision_about(events, raw) for raw in sent]
            return [d for d in decisions if d is not None], sent
        assert time.monotonic() < deadline, f"{tag}: the group never split the partitions"
    raise AssertionError("unreachable")


@pytest.mark.slow  # ~40 s each: two group rebalances, one waiting out the dead member
@pytest.mark.parametrize("point", ["decided", "journaled"])
def test_the_survivor_of_a_group_applies_the_suspension_its_peer_died_on_once(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics, point: str) -> None:
    scene = Scene(tmp_path, broker, topics, group=True)
    suspension = operator(scene.data).suspend_tenant("acme", reason="incident 13")
    sid = id_of(suspension)
    try:
        workers = [Processor(scene.settings, scene.bootstrap, tmp_path / f"p{n}.log",
                             (sid, point), once=tmp_path / "crashed",
                             record=tmp_path / f"p{n}.decided") for n in range(2)]
        granted, _ = spread(scene, workers, "before")
        assert all(isinstance(d, AuthorizationGranted) for d in granted), granted
        position = granted[0].governance
        assert position is not None and {d.governance for d in granted} == {position}

        # The worker that decides the suspension dies at the crash point.
        asyncio.run(produce(scene.bootstrap, topics.governance, [(b"governance", suspension)]))
        wait_until("a worker to die", lambda: any(w.proc.poll() is not None for w in workers))
        dead = next(w for w in workers if w.proc.poll() is not None)
        survivor = next(w for w in workers if w is not dead)
        assert dead.died() == -signal.SIGKILL, dead.log_path.read_text()
        assert sid in dead.decided() and sid not in survivor.decided()

        # The survivor takes every partition, the governance one included, and applies the
        # suspension; in force from its answer on (before it, nobody had applied it).
        acks = applied_of(asyncio.run(wait_for_events(
            scene.bootstrap, topics.decisions, "the suspension's answer",
            lambda es: bool(applied_of(es, sid)))), sid)
        assert acks[0].position == position + 1
        denied, alone = spread(scene, [survivor], "survivor")
        # Both workers again: the restarted one decides under the suspension too.
        restarted = Processor(scene.settings, scene.bootstrap, dead.log_path,
                              record=tmp_path / "restarted.decided")
        both, together = spread(scene, [survivor, restarted], "both")
        for decision in denied + both:
            assert isinstance(decision, AuthorizationDenied), decision
            assert decision.reasons == (Reason.TENANT_SUSPENDED,)
            assert decision.governance == position + 1
        assert sid in survivor.decided()  # decided again, or answered from the journal
        acks = applied_of(asyncio.run(topic_events(scene.bootstrap, topics.decisions)), sid)
        assert {id_of(a) for a in acks} == {id_of(acks[0])}  # one answer (maybe sent twice)
        assert survivor.stop() == 0 and restarted.stop() == 0
        check_ledger(scene.data, suspension, acks[0], alone + together)
        check_journal(scene.settings, SUSPENSION, suspension, position + 1)
    finally:
        scene.close()
    assert audit_ledger(scene.data).ok
