"""Causal leaf order (issue 15 item 4) on the real embedded broker: the sequencer holds back
an event that arrives before its cause, never stores a consumer offset past a held event,
loses nothing held or grouped when SIGKILLed, and orders a backlog of the real processor."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.config import Settings
from ledger.core.envelope import sign_event, sign_event_with_id
from ledger.core.governance_events import PolicyPublished
from ledger.datadir import DataDir
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.clients import partition_for
from ledger.kafka.topics import Topics
from ledger.keyfiles import load_keyring, load_signer
from ledger.log.audit import audit_ledger
from ledger.log.causal import check_order
from ledger.log.governance import OPERATOR_IDENTITY
from ledger.log.holdback import Holdback
from ledger.log.ledger_dir import open_ledger
from ledger.log.sequencer import keyring_verifier
from ledger.log.store import LedgerStore
from ledger.log.worker import SequencerWorker
from tests.factories import ALICE, ENV, T0, request
from tests.ledger_support import grant, leaf_order
from tests.service_support import make_data_dir, produce

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4

# The sequencer of `govledger sequencer` (keys in force from the ledger's governance, as
# ledger/server/service.py follows them), with a hold-back that outlasts the test (the
# default time bound would release the held grant before the kill).
SEQUENCER = """
import asyncio, sys
from pathlib import Path
from ledger.config import Settings
from ledger.kafka.topics import Topics
from ledger.log.governance import follow_ledger, governance_verifier
from ledger.log.holdback import Holdback
from ledger.log.ledger_dir import open_ledger
from ledger.log.store import LedgerStore
from ledger.log.worker import SequencerWorker

async def main() -> None:
    data, bootstrap, prefix = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    settings = Settings(data_dir=data, kafka_bootstrap=bootstrap, partitions=4,
                        topic_prefix=prefix)
    with LedgerStore(data / "ledger.db") as store:
        governance = follow_ledger(data, store)
    def opener():
        sequencer = open_ledger(data, governance_verifier(governance),
                                checkpoint_interval=0.5)
        sequencer.holdback = Holdback(max_wait_s=600)
        return sequencer
    worker = await SequencerWorker.open(settings, bootstrap, Topics(prefix), opener)
    await worker.start()
    print("running", flush=True)
    await worker.run(asyncio.Event())

asyncio.run(main())
"""


order = leaf_order


def _topics(broker: EmbeddedBroker) -> Topics:
    from ledger.kafka.topics import ensure_topics
    names = Topics(prefix=f"c{uuid.uuid4().hex[:12]}.")
    asyncio.run(ensure_topics(broker.bootstrap, names.all(), PARTITIONS, 1))
    return names


def _wait_for(check: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        time.sleep(0.05)


def _start(data: DataDir, broker: EmbeddedBroker, topics: Topics) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", SEQUENCER, str(data.root), broker.bootstrap,
                             topics.prefix], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "running":
        _kill(proc)
        raise AssertionError("the sequencer did not start")
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()


def test_sigkill_while_a_grant_waits_for_its_request_loses_nothing(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data")
    topics = _topics(broker)
    authority = load_signer(data.authority_key)
    now = datetime.now(UTC).replace(microsecond=0)
    asked, asked_id = sign_event_with_id(request(nonce="causal-kill-0000001", issued_at=now),
                                         ALICE)
    granted, granted_id = grant(asked_id, asked_id, None, 0, "causal-kill-grant-01",
                                signer=authority)
    # An event without causes (a governance event, signed by the operator's admin key).
    policy, policy_id = sign_event_with_id(PolicyPublished(
        signer=OPERATOR_IDENTITY, tenant="*", nonce="causal-kill-policy-1", issued_at=now,
        version="causal-kill", policy_digest=ENV,
        files={"policy.cedar": "permit(principal, action, resource);"}),
        load_signer(data.operator_key))
    key = asked_id.encode()  # grant then policy on the same partition of gov.decisions
    partition = partition_for(key, PARTITIONS)
    with LedgerStore(data.ledger_db) as store:
        genesis = store.tree_size()  # the data directory starts with the governance genesis

    proc = _start(data, broker, topics)
    try:
        asyncio.run(produce(broker.bootstrap, topics.decisions, [(key, granted), (key, policy)]))
        _wait_for(lambda: order(data.root, policy_id) != [None])
        with LedgerStore(data.ledger_db) as store:
            stored_offset = store.offsets().get((topics.decisions, partition))
        assert order(data.root, granted_id) == [None]  # held: its request has not come
    finally:
        _kill(proc)
    assert stored_offset == 0  # the grant's offset: a restart reads it again

    asyncio.run(produce(broker.bootstrap, topics.requests, [(key, asked)]))
    proc = _start(data, broker, topics)
    try:
        _wait_for(lambda: None not in order(data.root, asked_id, granted_id))
    finally:
        _kill(proc)
    first_policy, request_at, grant_at = order(data.root, policy_id, asked_id, granted_id)
    assert first_policy == genesis and request_at is not None and grant_at is not None
    assert request_at < grant_at
    with LedgerStore(data.ledger_db) as store:
        assert store.tree_size() == genesis + 3  # the policy event read twice, stored once
    assert audit_ledger(data.root, data.keyring).ok


def test_sigkill_inside_group_commits_loses_nothing_committed(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data")
    topics = _topics(broker)
    now = datetime.now(UTC).replace(microsecond=0)
    events = [(f"k{i % 16}".encode(),
               sign_event(request(nonce=f"group-kill-{i:010d}", issued_at=now), ALICE))
              for i in range(4000)]
    asyncio.run(_produce_all(broker.bootstrap, topics.requests, events))

    def sizes() -> tuple[int, int]:
        with LedgerStore(data.ledger_db) as store:
            latest = store.latest_checkpoint()
            return store.tree_size(), 0 if latest is None else latest[0]
    genesis = sizes()[0]  # the data directory starts with the governance genesis
    proc = _start(data, broker, topics)
    try:
        _wait_for(lambda: sizes()[0] >= genesis + 500)
        committed = sizes()[0]
    finally:
        _kill(proc)
    assert committed < genesis + len(events), "the kill came after the last group"
    assert sizes()[0] >= committed  # nothing committed (acknowledged) is lost

    proc = _start(data, broker, topics)  # its start-up check verifies what the kill left
    try:
        _wait_for(lambda: sizes() == (genesis + len(events),) * 2)
    finally:
        _kill(proc)
    with LedgerStore(data.ledger_db) as store:
        stored = {leaf.leaf for leaf in store.iter_leaves(genesis)}
    assert stored == {value for _, value in events}  # each once: read again, stored once
    assert audit_ledger(data.root, data.keyring).ok


async def _produce_all(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key) for key, value in items]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def test_a_backlog_of_the_real_pipeline_is_sequenced_in_causal_order(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    # The processor decides a delegation and a revocation first; the sequencer then reads
    # the whole backlog, which crosses topics both ways (a grant answers gov.requests, a
    # child request refers to a grant on gov.decisions, an acknowledgement answers
    # gov.revocations): whatever order it fetches the topics in, some event comes early.
    from ledger.core.events import AuthorizationRevoked
    from ledger.sdk.client import Client
    from tests.integration.test_reconcile import ledger_holds, sequencer_running
    from tests.service_support import worker_running

    data = make_data_dir(tmp_path / "data")
    topics = _topics(broker)
    settings = Settings(data_dir=data.root, kafka_bootstrap=None, partitions=PARTITIONS,
                        topic_prefix=topics.prefix)
    keyring = load_keyring(data.keyring)

    async def decide() -> list[str]:
        async with worker_running(settings, broker.bootstrap), \
                Client(settings, broker.bootstrap, keyring) as client:
            root_id = await client.submit(request(nonce="backlog-root-000001"), ALICE)
            root = await client.decision(root_id, timeout=30)
            assert root.allow and root.artifact_id is not None
            child_id = await client.submit(request(nonce="backlog-child-00001", root=root_id,
                                                   parent=root.artifact_id), ALICE)
            child = await client.decision(child_id, timeout=30)
            assert child.allow and child.artifact_id is not None
            revocation_id = await client.revoke(AuthorizationRevoked(
                signer="agent:alice", tenant="acme", nonce="backlog-revoke-0001",
                issued_at=T0, artifact_id=root.artifact_id, root=root_id), ALICE)
            applied = await client.decision(revocation_id, timeout=30)
            assert applied.allow
            return [root_id, root.artifact_id, child_id, child.artifact_id, revocation_id,
                    applied.verified.event_id]

    async def sequence(ids: list[str]) -> set[str]:
        async with sequencer_running(settings, broker.bootstrap, keyring):
            return await ledger_holds(settings, ids)

    ids = asyncio.run(decide())
    assert asyncio.run(sequence(ids)) == set(ids)
    root, grant1, child, grant2, revocation, applied = order(data.root, *ids)
    assert root < grant1 < child < grant2  # type: ignore[operator]
    assert grant1 < revocation < applied  # type: ignore[operator]
    with LedgerStore(data.ledger_db) as store:
        assert check_order(store).first_violation is None


def test_a_grant_whose_request_never_comes_is_sequenced_after_the_bound_and_logged(
        broker: EmbeddedBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = make_data_dir(tmp_path / "data")
    topics = _topics(broker)
    settings = Settings(data_dir=data.root, kafka_bootstrap=None, partitions=PARTITIONS,
                        topic_prefix=topics.prefix)
    keyring = load_keyring(data.keyring)
    lone, lone_id = grant("e" * 64, "e" * 64, None, 0, "never-asked-grant-1",
                          signer=load_signer(data.authority_key))
    late: list[dict[str, int]] = []
    with LedgerStore(data.ledger_db) as store:
        genesis = store.tree_size()  # the data directory starts with the governance genesis

    def opener():  # type: ignore[no-untyped-def]
        sequencer = open_ledger(data.root, keyring_verifier(keyring))
        sequencer.holdback = Holdback(max_wait_s=0.3)
        return sequencer

    async def scenario() -> None:
        worker = await SequencerWorker.open(
            settings, broker.bootstrap, topics, opener,
            on_batch=lambda result: late.append(result.late_by_reason()) if result.late
            else None)
        await worker.start()
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            await produce(broker.bootstrap, topics.decisions, [(b"k", lone)])
            deadline = time.monotonic() + 30
            while not late and time.monotonic() < deadline and not task.done():
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task
            await worker.close()

    with caplog.at_level("WARNING", logger="govledger.sequencer"):
        asyncio.run(scenario())
    assert late == [{"cause-missing": 1}]
    assert order(data.root, lone_id) == [genesis]
    assert any("without their causes" in r.getMessage() and lone_id[:16] in r.getMessage()
               for r in caplog.records)


def test_reading_a_backlog_a_held_event_waits_for_its_cause_behind_the_consumer(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    # One partition of gov.requests holds 3,000 other requests before the 300 that 300
    # grants on gov.decisions answer; all is produced before the sequencer starts, with a
    # time bound far shorter than reading the backlog takes. The bound runs only while the
    # sequencer is caught up, so no grant goes in before its request.
    data = make_data_dir(tmp_path / "data")
    topics = _topics(broker)
    settings = Settings(data_dir=data.root, kafka_bootstrap=None, partitions=PARTITIONS,
                        topic_prefix=topics.prefix)
    keyring = load_keyring(data.keyring)
    authority = load_signer(data.authority_key)
    before = [(b"one", sign_event(request(nonce=f"backlog-x-{n:09d}"), ALICE))
              for n in range(3000)]
    asked, granted = [], []
    for n in range(300):
        envelope, request_id = sign_event_with_id(request(nonce=f"backlog-{n:011d}"), ALICE)
        asked.append((b"one", envelope))
        granted.append((request_id.encode(), grant(request_id, request_id, None, 0,
                                                   f"backlog-g-{n:09d}", signer=authority)[0]))
    asyncio.run(_produce_all(broker.bootstrap, topics.requests, before + asked))
    asyncio.run(_produce_all(broker.bootstrap, topics.decisions, granted))
    with LedgerStore(data.ledger_db) as store:  # the governance genesis, then the backlog
        total = store.tree_size() + len(before) + len(asked) + len(granted)

    def opener():  # type: ignore[no-untyped-def]
        sequencer = open_ledger(data.root, keyring_verifier(keyring))
        sequencer.holdback = Holdback(max_wait_s=0.05)
        return sequencer

    async def scenario() -> int:
        worker = await SequencerWorker.open(settings, broker.bootstrap, topics, opener,
                                            max_batch=100)
        await worker.start()
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            deadline = time.monotonic() + 90
            while worker.stats.tree_size < total and time.monotonic() < deadline \
                    and not task.done():
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task
            await worker.close()
        return worker.stats.late

    assert asyncio.run(scenario()) == 0
    with LedgerStore(data.ledger_db) as store:
        assert store.tree_size() == total
        assert check_order(store).first_violation is None
