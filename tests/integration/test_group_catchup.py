"""Two workers of a group on one shared journal (real SQLite), decision by decision against
one uninterrupted engine: whatever partition an input arrives on (keyed by its lineage root
or not) and whichever worker decides it, every decision is byte for byte the one the
uninterrupted run makes. No broker here: the group's partition assignment is given by a
stand-in with the two methods the worker asks (tests/integration/test_group.py runs a group
on the real broker).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from ledger.config import Settings
from ledger.core.envelope import sign_event
from ledger.core.events import AuthorizationRevoked, Event
from ledger.core.execution_events import ExecutionRequested
from ledger.core.streams import Stream
from ledger.errors import Reason
from ledger.kafka.clients import partition_for
from ledger.kafka.topics import Topics
from processors.core.engine import Engine
from processors.core.outcomes import Outcome
from processors.journal import Journal
from processors.worker import DecisionWorker
from tests.factories import ALICE, ENV, T0, request
from tests.unit.test_engine import RUNNER, engine, grant_of

pytestmark = pytest.mark.integration
TOPICS = Topics("gov.")
INPUTS = (TOPICS.requests, TOPICS.revocations, TOPICS.executions)


@dataclass
class Assignment:
    """What the group coordinator gave a worker: the methods DecisionWorker asks."""

    partitions: set[int]
    count: int = 4

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.count))

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(t, p) for t in INPUTS for p in self.partitions}


@dataclass
class Record:
    topic: str
    partition: int
    value: bytes
    offset: int = 0
    key: bytes | None = None


@dataclass
class Group:
    journal: Journal
    workers: list[DecisionWorker] = field(default_factory=list)
    assignments: list[Assignment] = field(default_factory=list)

    @classmethod
    def of_two(cls, path: Path) -> Group:
        group = cls(Journal(path))
        for owned in ({0, 1}, {2, 3}):
            worker = DecisionWorker(Settings(), "unused:0", TOPICS, engine(), group.journal,
                                    use_group=True, clock=lambda: T0)
            worker.catch_up()
            assignment = Assignment(owned)
            worker._consumer = assignment  # type: ignore[assignment]
            group.workers.append(worker)
            group.assignments.append(assignment)
        return group

    def repartition(self, count: int) -> None:
        """Partitions added to every input topic: keys move, the group reassigns."""
        half = count // 2
        for assignment, owned in zip(self.assignments,
                                     (set(range(half)), set(range(half, count))), strict=True):
            assignment.count, assignment.partitions = count, owned

    def send(self, stream: Stream, raw: bytes, key: bytes) -> Outcome:
        """Deliver to the owner of the partition ``key`` hashes to; decide and journal."""
        count = self.assignments[0].count
        partition = partition_for(key, count)
        worker = next(w for w, a in zip(self.workers, self.assignments, strict=True)
                      if partition in a.partitions)
        record = Record(TOPICS.name(stream.value), partition, raw, key=key)
        handled = asyncio.run(worker._decide([record]))  # type: ignore[list-item]
        self.journal.append(handled)
        return handled[0][3]


def script(rng: random.Random) -> list[Callable[[Engine, dict[str, Outcome]],
                                                 tuple[Stream, bytes, str, str]]]:
    """A tree's life: root, children, a single-use leaf used twice, a revocation, uses and a
    child after it, a second tree, a replayed nonce. Each step returns (stream, envelope,
    its lineage root, a name for its outcome)."""
    tag = rng.randrange(10**6)

    def req(name: str, parent: str | None, nonce: str, resource: str,
            single_use: bool = False) -> Callable[..., tuple[Stream, bytes, str, str]]:
        def step(live: Engine, done: dict[str, Outcome]) -> tuple[Stream, bytes, str, str]:
            root = done["root"].subject if parent else None
            parent_id = grant_of(done[parent])[0] if parent else None
            event = request(nonce=nonce, resource=resource, root=root, parent=parent_id,
                            single_use=single_use)
            raw = sign_event(event, ALICE)
            return Stream.REQUESTS, raw, root or "", name
        return step

    def use(name: str, target: str, nonce: str) -> Callable[..., tuple[Stream, bytes, str, str]]:
        def step(live: Engine, done: dict[str, Outcome]) -> tuple[Stream, bytes, str, str]:
            root = done["root"].subject
            event: Event = ExecutionRequested(
                signer="runner:1", tenant="acme", nonce=nonce, issued_at=T0,
                artifact_id=grant_of(done[target])[0], root=root, action="read",
                resource="db/orders/7", environment=ENV)
            return Stream.EXECUTIONS, sign_event(event, RUNNER), root, name
        return step

    def revoke(name: str, target: str, nonce: str) -> Callable[..., tuple[Stream, bytes, str, str]]:
        def step(live: Engine, done: dict[str, Outcome]) -> tuple[Stream, bytes, str, str]:
            root = done["root"].subject
            event = AuthorizationRevoked(signer="agent:alice", tenant="acme", nonce=nonce,
                                         issued_at=T0, artifact_id=grant_of(done[target])[0],
                                         root=root, reason="test")
            return Stream.REVOCATIONS, sign_event(event, ALICE), root, name
        return step

    n = f"{tag:06d}"
    return [
        req("root", None, f"nonce-root-{n}", "db/*"),
        req("mid", "root", f"nonce-mid--{n}", "db/*"),
        req("leaf", "mid", f"nonce-leaf-{n}", "db/orders/*", single_use=True),
        use("use1", "leaf", f"exec-one--{n}"),
        use("use2", "leaf", f"exec-two--{n}"),
        req("side", "root", f"nonce-side-{n}", "db/orders/*"),
        revoke("cut", "mid", f"revoke----{n}"),
        use("use3", "root", f"exec-three{n}"),
        use("use4", "side", f"exec-four-{n}"),
        req("late", "leaf", f"nonce-late-{n}", "db/orders/*"),
        req("again", None, f"nonce-root-{n}", "db/orders/*"),
    ]


@pytest.mark.parametrize("seed", range(12))
def test_every_group_decision_is_the_uninterrupted_one(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    group = Group.of_two(tmp_path / "processor.db")
    live = engine()
    done: dict[str, Outcome] = {}
    repartition_at = rng.choice([None, None, 3, 6])
    for n, step in enumerate(script(rng)):
        if n == repartition_at:
            group.repartition(8)
        stream, raw, root, name = step(live, done)
        expected = live.handle(stream, raw, T0)
        tree = (root or expected.subject).encode()
        # Keyed by its lineage root, or (a producer that did not) by something else.
        key = tree if rng.random() < 0.5 else f"other-{rng.random()}".encode()
        got = group.send(stream, raw, key)
        assert (got.outputs, got.allow, got.reasons) == (
            expected.outputs, expected.allow, expected.reasons), (seed, name)
        done[name] = expected
    # The script exercised what it is for.
    assert done["use2"].reasons == (Reason.ARTIFACT_CONSUMED,)
    assert done["use3"].allow and done["use4"].allow
    assert done["late"].reasons == (Reason.PARENT_REVOKED,)
    assert done["again"].reasons == (Reason.REPLAY,)
    group.journal.close()


def test_a_root_granted_off_its_partition_is_revoked_for_every_worker(tmp_path: Path) -> None:
    """A review's case: worker a grants a root that came on a's partition though its tree
    hashes to b's; b revokes it (keyed right); an execution that comes to a again is refused
    ARTIFACT_REVOKED, as in an uninterrupted run (a allowed it before the fix)."""
    group = Group.of_two(tmp_path / "processor.db")
    live = engine()
    steps = script(random.Random(7))
    done: dict[str, Outcome] = {}
    a_key = next(f"k{i}".encode() for i in range(100) if partition_for(f"k{i}".encode(), 4) < 2)
    b_key = next(f"k{i}".encode() for i in range(100)
                 if partition_for(f"k{i}".encode(), 4) >= 2)
    stream, raw, _, _ = steps[0](live, done)
    root_outcome = live.handle(stream, raw, T0)
    tree = root_outcome.subject.encode()
    owner = 0 if partition_for(tree, 4) < 2 else 1
    to_other = b_key if owner == 0 else a_key  # the worker that does not own the tree
    assert group.send(stream, raw, to_other).outputs == root_outcome.outputs
    done["root"] = done["mid"] = root_outcome
    stream, raw, _, _ = steps[6](live, done)  # revoke the root itself, keyed by its tree
    assert group.send(stream, raw, tree).allow is live.handle(stream, raw, T0).allow is True
    stream, raw, _, _ = steps[7](live, done)  # use the root, on the other worker again
    expected = live.handle(stream, raw, T0)
    assert expected.reasons == (Reason.ARTIFACT_REVOKED,)
    assert group.send(stream, raw, to_other).reasons == expected.reasons
    group.journal.close()
