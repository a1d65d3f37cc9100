"""SIGKILL the processor around a governance event, on the real embedded broker and real
SQLite files: the event is applied exactly once, the next decisions are made under it, and
nothing is lost (issue 13, "Bad input and faults").

The processor runs as the child ``govledger up`` starts (``python -m processors``, one
worker owning every partition, its offsets in the journal), with the real sequencer beside
it in this process. The first run kills itself (SIGKILL, no clean-up of any kind) at one
point of the batch that holds the operator's TenantSuspended:

* ``decided``: the engine applied the suspension in memory, nothing is journaled;
* ``in-transaction``: the journal transaction holds the batch's rows, not yet committed;
* ``journaled``: the journal committed, nothing published (no GovernanceApplied on Kafka).

The second run is plain ``python -m processors``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from ledger.config import Settings
from ledger.core.envelope import read_stored, sign_event
from ledger.core.events import AuthorizationDenied, AuthorizationGranted
from ledger.core.governance_events import GovernanceApplied
from ledger.errors import Reason
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.topics import Topics
from ledger.log.audit import audit_ledger
from ledger.server.service import settings_env
from processors.app import build_engine
from processors.catchup import CatchUp
from processors.journal import Journal
from tests.conftest import TEST_PARTITIONS
from tests.factories import ALICE, request
from tests.governance_support import (
    applied_of,
    decision_about,
    id_of,
    ledger_leaves,
    now,
    operator,
    topic_events,
    wait_for_events,
    wait_until,
)
from tests.service_support import Running, produce

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]

# The processor's own entry point, with a crash point in Journal.append: SIGKILL (the process
# dies on the spot, from the journal's writer thread) at CRASH_POINT of the batch whose
# outcome for CRASH_SUBJECT is being journaled.
CRASHING_PROCESSOR = """
import os, signal, sys
from processors.journal import Journal
subject, point = os.environ["CRASH_SUBJECT"], os.environ["CRASH_POINT"]
append = Journal.append

def die():
    os.kill(os.getpid(), signal.SIGKILL)

class KillAtCommit:
    def __init__(self, conn):
        self.conn = conn
    def execute(self, sql, *args):
        if sql == "COMMIT":
            die()
        return self.conn.execute(sql, *args)
    def __getattr__(self, name):
        return getattr(self.conn, name)

def crashing_append(self, batch, *args, **kwargs):
    batch = list(batch)
    if not any(outcome.subject == subject for *_, outcome in batch):
        return append(self, batch, *args, **kwargs)
    if point == "decided":
        die()
    if point == "in-transaction":
        self._writer = KillAtCommit(self._writer)
    append(self, batch, *args, **kwargs)
    die()  # journaled

Journal.append = crashing_append
from processors.__main__ import main
main()
"""


class Processor:
    """``python -m processors`` (or the crashing variant) as a child process."""

    started: ClassVar[list[Processor]] = []

    def __init__(self, settings: Settings, bootstrap: str, log: Path,
                 crash: tuple[str, str] | None = None) -> None:
        Processor.started.append(self)
        self.ready = settings.data_dir / f".processor-ready-test-{os.getpid()}"
        self.ready.unlink(missing_ok=True)
        env = {**os.environ, **settings_env(settings), "GOVLEDGER_KAFKA_BOOTSTRAP": bootstrap}
        code = ["-m", "processors"]
        if crash is not None:
            env |= {"CRASH_SUBJECT": crash[0], "CRASH_POINT": crash[1]}
            code = ["-c", CRASHING_PROCESSOR]
        self.log = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, *code, "--ready-file", str(self.ready)],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until("the processor ready", lambda: self.ready.exists() or
                   self.proc.poll() is not None, timeout_s=60)
        assert self.proc.poll() is None, log.read_text()

    def died(self, timeout_s: float = 30) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self.log.close()
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.died()

    def kill(self) -> None:
        """After a failed test: nothing left running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()


def settings_for(data: Path, bootstrap: str, topics: Topics) -> Settings:
    return Settings(data_dir=data, kafka_bootstrap=bootstrap, topic_prefix=topics.prefix,
                    partitions=TEST_PARTITIONS, kafka_idempotent=False,
                    kafka_fetch_max_wait_ms=10, processor_group=False)


def journaled(data: Path, subject: str) -> int:
    journal = Journal(data / "processor.db")
    try:
        return 1 if journal.recall(subject) is not None else 0
    finally:
        journal.close()


@pytest.mark.parametrize("point", ["decided", "in-transaction", "journaled"])
def test_a_crash_around_a_suspension_applies_it_once_and_loses_nothing(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics, point: str) -> None:
    data = tmp_path / "data"
    sequencer = Running(data, components=("sequencer",), kafka_bootstrap=broker.bootstrap,
                        topic_prefix=topics.prefix, partitions=TEST_PARTITIONS,
                        kafka_idempotent=False, kafka_fetch_max_wait_ms=10)
    settings = settings_for(data, broker.bootstrap, topics)
    bootstrap, decisions = broker.bootstrap, topics.decisions
    try:
        first = Processor(settings, bootstrap, tmp_path / "processor.log")
        before = sign_event(request(issued_at=now(), nonce="before-the-crash-1"), ALICE)
        asyncio.run(produce(bootstrap, topics.requests, [(id_of(before).encode(), before)]))
        events = asyncio.run(wait_for_events(bootstrap, decisions, "the first decision",
                                             lambda es: decision_about(es, before)
                                             is not None))
        granted = decision_about(events, before)
        assert isinstance(granted, AuthorizationGranted)
        assert first.stop() == 0
        position = granted.governance
        assert position is not None and position > 0

        # The crashing run: the suspension and a request right behind it.
        suspension = operator(data).suspend_tenant("acme", reason="incident 13")
        suspension_id = id_of(suspension)
        crashing = Processor(settings, bootstrap, tmp_path / "processor.log",
                             crash=(suspension_id, point))
        behind = sign_event(request(issued_at=now(), nonce="behind-the-crash-1"), ALICE)
        asyncio.run(produce(bootstrap, topics.governance, [(b"governance", suspension)]))
        asyncio.run(produce(bootstrap, topics.requests, [(id_of(behind).encode(), behind)]))
        assert crashing.died() == -signal.SIGKILL, (tmp_path / "processor.log").read_text()
        assert journaled(data, suspension_id) == (1 if point == "journaled" else 0)
        published = asyncio.run(topic_events(bootstrap, decisions))
        assert applied_of(published, suspension_id) == []  # nothing left the dead process
        assert decision_about(published, behind) is None

        # Restarted: the suspension is in force, once, and governs what follows.
        again = Processor(settings, bootstrap, tmp_path / "processor.log")
        after = sign_event(request(issued_at=now(), nonce="after-the-restart1"), ALICE)
        asyncio.run(produce(bootstrap, topics.requests, [(id_of(after).encode(), after)]))
        events = asyncio.run(wait_for_events(
            bootstrap, decisions, "the decisions after the restart",
            lambda es: all(decision_about(es, r) is not None for r in (behind, after))))
        for raw in (behind, after):
            denied = decision_about(events, raw)
            assert isinstance(denied, AuthorizationDenied), denied
            assert denied.reasons == (Reason.TENANT_SUSPENDED,)
            assert denied.governance == position + 1
        acks = applied_of(events, suspension_id)
        assert len(acks) == 1, acks  # published (or re-published from the journal) once
        assert acks[0].position == position + 1
        assert again.stop() == 0

        # The ledger: the suspension and one GovernanceApplied for it, every decision.
        wanted = {suspension_id, id_of(acks[0]), id_of(behind), id_of(after)}
        wait_until("the ledger to hold the suspension and the decisions", lambda: wanted <= {
            e for e, _, _ in ledger_leaves(data / "ledger.db", [
                "TenantSuspended", "GovernanceApplied", "AuthorizationRequested"])})
        applied = [leaf for _, parent, leaf in ledger_leaves(data / "ledger.db",
                                                             ["GovernanceApplied"])
                   if parent == suspension_id]
        assert len(applied) == 1
        stored = read_stored(applied[0])
        assert stored is not None
        assert GovernanceApplied.model_validate_json(stored.payload).position == position + 1
        assert [e for e, _, _ in ledger_leaves(data / "ledger.db", ["TenantSuspended"])] == [
            suspension_id]
        decided = {e.request_id for e in events
                   if isinstance(e, AuthorizationGranted | AuthorizationDenied)}
        assert {id_of(before), id_of(behind), id_of(after)} <= decided  # nothing lost
    finally:
        for child in Processor.started:
            child.kill()
        Processor.started.clear()
        sequencer.stop()

    # The journal alone restores the same state: the suspension once, at position + 1.
    journal = Journal(data / "processor.db")
    try:
        engine = build_engine(settings, journal)
        CatchUp(engine, journal, group=False).run()
        assert engine.governance.position == position + 1
        assert engine.governance.suspended_tenants == {"acme"}
        assert engine.governance.last_event == suspension_id
    finally:
        journal.close()
    assert audit_ledger(data).ok
