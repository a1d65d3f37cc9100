"""Two decision workers in one consumer group on the real embedded broker, one shared journal
(real SQLite), while the operator governs: a key registration, a policy publication and a
tenant suspension. The governance topic has one partition, so one worker decides governance
and the other applies it from the journal before its next batch; both must end in the same
governance state, and decide requests on the partitions each owns under the same governance
(issue 13, "two workers in a group apply the same sequence")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from ledger.config import Settings
from ledger.core.envelope import event_id, payload_bytes, sign_event
from ledger.core.events import AuthorizationDenied, AuthorizationGranted, Event
from ledger.core.keys import Signer
from ledger.datadir import example_policies
from ledger.errors import Reason
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.clients import partition_for
from ledger.kafka.topics import Topics
from processors.app import build_worker
from processors.core.engine import Engine
from processors.core.outcomes import Outcome
from processors.policy import PolicyBundle, bundle_digest
from processors.worker import DecisionWorker
from tests.conftest import TEST_PARTITIONS
from tests.factories import ALICE, request, seeded_signer
from tests.governance_support import (
    applied_of,
    decision_about,
    id_of,
    now,
    operator,
    subjects,
    wait_for_events,
)
from tests.integration.test_group import owned, stop_workers, until
from tests.service_support import make_data_dir, produce

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
CAROL, CAROL_ID, ALICE_ID = seeded_signer("carol"), "agent:carol", "agent:alice"
REPORTS_POLICY = ('@id("read-reports")\npermit (principal, action == Action::"read", '
                  'resource in Resource::"reports/*");\n')


def request_on(partitions: set[int], signer: tuple[str, Signer], resource: str,
               nonce: str, issued_at: datetime) -> bytes:
    """A signed request whose id (its own lineage root) hashes to one of ``partitions``;
    ``resource`` has a ``{n}`` the search fills."""
    for n in range(1000):
        candidate = request(signer=signer[0], nonce=f"{nonce}-{n:04d}".ljust(16, "0"),
                            issued_at=issued_at,
                            resource=resource.format(n=n))
        rid = event_id(payload_bytes(candidate))
        if partition_for(rid.encode(), TEST_PARTITIONS) in partitions:
            return sign_event(candidate, signer[1])
    raise AssertionError("no request id on those partitions")


def asks(who: str, signer: Signer, resource: str, tag: str) -> Callable[[set[int], int], bytes]:
    """A maker of one request of ``who`` for worker w on partitions it owns: the resource
    ``{resource}w{w}-{n}/x``, the nonce ``{tag}-w{w}-...``."""
    return lambda parts, w: request_on(parts, (who, signer), f"{resource}w{w}-{{n}}/x",
                                       f"{tag}-w{w}", now())


def governance_of(engine: Engine) -> tuple[object, ...]:
    """Everything of an engine's governance a decision can depend on."""
    state = engine.governance
    principals = sorted((p.identity, p.tenant, p.key_id, tuple(sorted(p.roles)),
                         p.not_before, p.not_after, p.revoked_at)
                        for p in state.keyring.principals())
    return (state.position, state.last_event, principals, sorted(state.suspended_tenants),
            sorted(state.suspended_principals), state.policy and state.policy.digest,
            state.shadow and state.shadow.digest, state.quorum, sorted(state.nonces),
            sorted(state.pending), engine.policy_digest)


def recorder(subjects: set[str]) -> Callable[[Outcome, float], None]:
    """A worker observer adding the subject of every input it decides to ``subjects``."""
    def record(outcome: Outcome, _: float) -> None:
        subjects.add(outcome.subject)
    return record


class Group:
    """Two workers of the group, the topics, and the decisions topic read back."""

    def __init__(self, workers: list[DecisionWorker], bootstrap: str, topics: Topics) -> None:
        self.workers, self.bootstrap, self.topics = workers, bootstrap, topics
        self.decided: list[set[str]] = [set() for _ in workers]  # subjects each decided
        for worker, mine in zip(workers, self.decided, strict=True):
            worker.stats.observers.append(recorder(mine))

    def decider(self, envelope: bytes) -> int:
        """Which worker decided ``envelope`` (each input is decided by exactly one)."""
        by = [n for n, mine in enumerate(self.decided) if subjects(envelope) & mine]
        assert len(by) == 1, by
        return by[0]

    async def govern(self, *envelopes: bytes) -> list[Event]:
        """Produce governance events; return the decisions topic once each is applied."""
        await produce(self.bootstrap, self.topics.governance,
                      [(b"governance", e) for e in envelopes])
        ids = [id_of(e) for e in envelopes]
        return await wait_for_events(self.bootstrap, self.topics.decisions, "governance applied",
                                     lambda es: all(len(applied_of(es, i)) == 1 for i in ids))

    async def decide(self, *envelopes: bytes) -> list[AuthorizationGranted | AuthorizationDenied]:
        """Produce requests keyed by their own ids; return their decisions in order."""
        await produce(self.bootstrap, self.topics.requests,
                      [(id_of(e).encode(), e) for e in envelopes])
        events = await wait_for_events(self.bootstrap, self.topics.decisions, "decisions",
                                       lambda es: all(decision_about(es, e) for e in envelopes))
        found = [decision_about(events, e) for e in envelopes]
        return [d for d in found if d is not None]

    def each(self, make: Callable[[set[int], int], bytes]) -> list[bytes]:
        """One request per worker, on a partition that worker owns (the n-th for worker n)."""
        return [make(owned(w, self.topics.requests), n) for n, w in enumerate(self.workers)]

    async def decide_each(self, *makers: Callable[[set[int], int], bytes]
                          ) -> list[AuthorizationGranted | AuthorizationDenied]:
        """:meth:`each` for every maker; decided, each by the worker it was meant for."""
        envelopes = [e for make in makers for e in self.each(make)]
        decisions = await self.decide(*envelopes)
        assert [self.decider(e) for e in envelopes] == [0, 1] * len(makers)
        return decisions


async def scenario(settings: Settings, bootstrap: str, topics: Topics) -> None:
    workers = [build_worker(settings, bootstrap) for _ in range(2)]
    stops = [asyncio.Event() for _ in workers]
    for worker in workers:
        assert worker.use_group
        await worker.start()
    tasks = [asyncio.create_task(w.run(s)) for w, s in zip(workers, stops, strict=True)]
    group = Group(workers, bootstrap, topics)
    try:
        a, b = workers
        everything = set(range(TEST_PARTITIONS))
        await until("a split of the request partitions and one owner of governance", lambda: (
            bool(owned(a, topics.requests)) and bool(owned(b, topics.requests))
            and owned(a, topics.requests) | owned(b, topics.requests) == everything
            and len(owned(a, topics.governance) | owned(b, topics.governance)) == 1))
        split = [owned(w, topics.requests) for w in workers]
        start = a.engine.governance.position
        assert start == b.engine.governance.position > 0

        # Before: carol's key is unknown; alice may not read reports.
        for denied in await group.decide_each(asks(ALICE_ID, ALICE, "reports/", "before")):
            assert isinstance(denied, AuthorizationDenied), denied
            assert denied.governance == start

        # 1. A key registration and a policy publication, decided by one worker.
        admin = operator(settings.data_dir)
        files = {**PolicyBundle.load(example_policies()).files(), "extra.cedar": REPORTS_POLICY}
        registration = admin.register(CAROL_ID, CAROL.public_key, ("reader", "requester"),
                                      tenant="acme", reason="a new agent")
        publication = admin.publish_policy(files, bundle_digest(files), "2")
        events = await group.govern(registration, publication)
        assert [applied_of(events, id_of(e))[0].position for e in (registration, publication)
                ] == [start + 1, start + 2]
        governor = group.decider(registration)  # the other applies it from the journal
        assert group.decider(publication) == governor
        for granted in await group.decide_each(asks(CAROL_ID, CAROL, "db/orders/", "carol"),
                                               asks(ALICE_ID, ALICE, "reports/", "after")):
            assert isinstance(granted, AuthorizationGranted), granted
            assert granted.governance == start + 2
        assert governance_of(a.engine) == governance_of(b.engine)

        # 2. The kill switch: both workers deny the tenant's requests, carol's included.
        suspension = admin.suspend_tenant("acme", reason="incident 13")
        await group.govern(suspension)
        assert group.decider(suspension) == governor
        for denied in await group.decide_each(asks(CAROL_ID, CAROL, "db/orders/", "carol-late"),
                                              asks(ALICE_ID, ALICE, "db/orders/", "alice-late")):
            assert isinstance(denied, AuthorizationDenied), denied
            assert denied.reasons == (Reason.TENANT_SUSPENDED,)
            assert denied.governance == start + 3

        # The same sequence applied by both: the same state, nothing rebalanced meanwhile.
        assert governance_of(a.engine) == governance_of(b.engine)
        assert a.engine.governance.position == start + 3
        assert a.engine.governance.suspended_tenants == {"acme"}
        assert a.engine.policy_digest == bundle_digest(files)
        assert [owned(w, topics.requests) for w in workers] == split
    finally:
        await stop_workers(stops, tasks, workers)


def test_two_workers_of_a_group_apply_the_same_governance_sequence(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    make_data_dir(tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data", topic_prefix=topics.prefix,
                        partitions=TEST_PARTITIONS, processor_group=True,
                        kafka_session_timeout_ms=6_000)
    asyncio.run(scenario(settings, broker.bootstrap, topics))
