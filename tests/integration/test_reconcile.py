"""The processor journal against the ledger, on the real embedded broker and real SQLite files
(processors/reconcile.py; issue 11, cases 1 and 3).

Complete: whatever the broker forgot, every input the worker decided on and every output it
published reaches the ledger. Consistent: a worker whose journal lacks decisions the ledger
holds rebuilds them from the ledger before it decides anything, or refuses to start.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka import TopicPartition

import processors.reconcile_loop
from ledger.config import Settings
from ledger.core.envelope import parse_envelope, parse_payload, sign_event, verify_envelope
from ledger.core.events import (
    AuthorizationDenied,
    AuthorizationGranted,
    AuthorizationRevoked,
    Event,
)
from ledger.core.keys import KeyRing
from ledger.core.streams import Stream
from ledger.datadir import DataDir
from ledger.errors import ProofError, Reason, Unavailable
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.offsets import probe_highwaters
from ledger.kafka.topics import Topics, ensure_topics
from ledger.keyfiles import load_keyring
from ledger.log.ledger_dir import open_ledger
from ledger.log.sequencer import keyring_verifier
from ledger.log.store import LedgerStore
from ledger.log.worker import SequencerWorker
from processors.app import build_engine
from processors.core.outcomes import Outcome
from processors.journal import Entry, Journal
from processors.reconcile import LEDGERED, Reconciler
from tests.conftest import TEST_PARTITIONS
from tests.factories import ALICE, T0, request
from tests.service_support import collect, make_data_dir, produce, worker_running

pytestmark = pytest.mark.integration
PARTITIONS = TEST_PARTITIONS  # as the topics fixture creates them


def settings_for(data: Path, topics: Topics) -> Settings:
    return Settings(data_dir=data, topic_prefix=topics.prefix, partitions=PARTITIONS,
                    checkpoint_interval_s=0.2)


def decisions_in(journal: Journal) -> list[Entry]:
    """The journal's entries beside the governance history imported from the ledger."""
    return [e for e in journal.entries() if e.stream is not Stream.GOVERNANCE]


def event_of(raw: bytes) -> Event:
    parsed = parse_envelope(raw)
    return parse_payload(parsed.payload_type, parsed.payload)


def requests(count: int, tag: str) -> list[bytes]:
    return [sign_event(request(nonce=f"{tag}-nonce-{n:08d}"), ALICE) for n in range(count)]


def event_ids(envelopes: Sequence[bytes], settings: Settings) -> list[str]:
    keyring = load_keyring(DataDir(settings.data_dir).keyring)
    return [verify_envelope(raw, keyring, None).event_id for raw in envelopes]


@asynccontextmanager
async def sequencer_running(settings: Settings, bootstrap: str,
                            keyring: KeyRing | None = None) -> AsyncIterator[None]:
    if keyring is None:
        keyring = load_keyring(DataDir(settings.data_dir).keyring)

    def opener():  # type: ignore[no-untyped-def]
        return open_ledger(settings.data_dir, keyring_verifier(keyring),
                           checkpoint_interval=settings.checkpoint_interval_s)
    worker = await SequencerWorker.open(settings, bootstrap, Topics(settings.topic_prefix),
                                        opener)
    await worker.start()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task
        await worker.close()


async def ledger_holds(settings: Settings, ids: Sequence[str], timeout_s: float = 30) -> set[str]:
    """Poll the ledger until it holds every id of ``ids`` (or time runs out); what it holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        with LedgerStore(DataDir(settings.data_dir).ledger_db) as store:
            held = store.contains(list(ids))
        if held == set(ids) or time.monotonic() > deadline:
            return held
        await asyncio.sleep(0.1)


def test_a_wiped_broker_loses_no_request_of_the_ledger(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 1: decided, the broker restarts empty before the sequencer logged anything: the
    worker's start publishes the journaled requests again, not only its decisions (in
    rounds of 5 journal entries here, so the rounds are tested too)."""
    monkeypatch.setattr(processors.reconcile_loop, "RECONCILE_ROUND", 5)
    make_data_dir(tmp_path / "data")
    inputs = requests(12, "wipe")

    async def scenario() -> None:
        with EmbeddedBroker() as broker:
            topics = Topics(prefix="w.")
            await ensure_topics(broker.bootstrap, topics.all(), PARTITIONS, 1)
            settings = settings_for(tmp_path / "data", topics)
            async with worker_running(settings, broker.bootstrap):
                await produce(broker.bootstrap, topics.requests, [(b"k", r) for r in inputs])
                decided = await collect(broker.bootstrap, topics.decisions, 12)
            assert len(decided) == 12
            broker.restart()  # memory-only: every topic and offset is gone
            await ensure_topics(broker.bootstrap, topics.all(), PARTITIONS, 1)
            async with sequencer_running(settings, broker.bootstrap), \
                    worker_running(settings, broker.bootstrap):
                wanted = event_ids(inputs, settings) + event_ids(decided, settings)
                held = await ledger_holds(settings, wanted)
            assert held == set(wanted), f"{len(set(wanted) - held)} events never logged"
    asyncio.run(scenario())


def test_events_the_ledger_lost_are_published_again_without_a_broker_wipe(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    """The broker never restarted, but the ledger's consumed offsets are past events it does
    not hold (as after Kafka's retention dropped them while the sequencer was down): the
    broker will not deliver them again. Once the journal's ledgered watermark has been stuck
    for the grace period, the running worker publishes them again and the sequencer logs
    them."""
    data = make_data_dir(tmp_path / "data")
    settings = settings_for(data.root, topics)
    inputs = requests(6, "lost")

    async def scenario() -> None:
        async with worker_running(settings, broker.bootstrap) as w:
            w.reconcile_loop.grace_s = 1.0  # before its first round (RECONCILE_EVERY_S)
            await produce(broker.bootstrap, topics.requests, [(b"k", r) for r in inputs])
            decided = await collect(broker.bootstrap, topics.decisions, 6)
            wanted = event_ids(inputs, settings) + event_ids(decided, settings)
            parts = [TopicPartition(t, p) for t in topics.all() for p in range(PARTITIONS)
                     if t not in topics.single_partition() or p == 0]
            ends = await probe_highwaters(settings, broker.bootstrap, parts)
            sequencer = open_ledger(settings.data_dir, keyring_verifier(load_keyring(
                data.keyring)))
            sequencer.append_records([], {(tp.topic, tp.partition): o for tp, o in ends.items()})
            sequencer.close()
            async with sequencer_running(settings, broker.bootstrap):
                held = await ledger_holds(settings, wanted)
                assert held == set(wanted)
                assert await w.reconcile() == 0  # nothing lacks now
        journal = Journal(data.journal)
        try:  # every entry is in the ledger now: the watermark says so
            assert journal.meta(LEDGERED) == journal.last_seq()
        finally:
            journal.close()
    asyncio.run(scenario())


async def decisions_about(bootstrap: str, topic: str, subjects: Sequence[str],
                          timeout_s: float = 30) -> dict[str, list[bytes]]:
    """Every decision on ``topic`` about each of ``subjects``, read until each has one."""
    found: dict[str, list[bytes]] = {s: [] for s in subjects}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = {s: [] for s in subjects}
        for raw in await collect(bootstrap, topic, 10_000, timeout_s=1.0):
            event = event_of(raw)
            subject = event.parent_ref()
            if subject in found and isinstance(event, AuthorizationGranted | AuthorizationDenied):
                found[subject].append(raw)
        if all(found.values()):
            break
    return found


def test_a_deleted_journal_is_rebuilt_from_the_ledger_before_any_decision(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    """Case 3: stop, delete processor.db, start: the worker rebuilds grants, revocations and
    nonces from the ledger. A new body with a used nonce is REPLAY (it was granted before),
    the original request resent gets its original grant (it was denied REPLAY before), and
    a child under a revoked parent is PARENT_REVOKED (PARENT_UNKNOWN before)."""
    data = make_data_dir(tmp_path / "data")
    settings = settings_for(data.root, topics)
    first = sign_event(request(nonce="rebuild-00000001"), ALICE)
    second = sign_event(request(nonce="rebuild-00000002"), ALICE)
    first_id, second_id = event_ids([first, second], settings)

    async def scenario() -> None:
        async with sequencer_running(settings, broker.bootstrap):
            async with worker_running(settings, broker.bootstrap):
                await produce(broker.bootstrap, topics.requests,
                              [(first_id.encode(), first), (second_id.encode(), second)])
                seen = await decisions_about(broker.bootstrap, topics.decisions,
                                             [first_id, second_id])
                grant = seen[second_id][0]
                grant_id = event_ids([grant], settings)[0]
                revoke = sign_event(AuthorizationRevoked(
                    signer="agent:alice", tenant="acme", nonce="rebuild-00000003",
                    issued_at=T0, artifact_id=grant_id, root=second_id, reason="test"), ALICE)
                await produce(broker.bootstrap, topics.revocations, [(second_id.encode(), revoke)])
                everything = event_ids([first, second, revoke, *seen[first_id], grant],
                                       settings)
                assert await ledger_holds(settings, everything) == set(everything)
                # two grants and the revocation's acknowledgement
                applied = [raw for raw in await collect(broker.bootstrap, topics.decisions, 3)
                           if event_of(raw).kind == "RevocationApplied"]
                assert await ledger_holds(settings, event_ids(applied, settings)) == set(
                    event_ids(applied, settings))
            for name in ("processor.db", "processor.db-wal", "processor.db-shm"):
                (data.root / name).unlink(missing_ok=True)

            replayed = sign_event(request(nonce="rebuild-00000001", resource="db/other/*"),
                                  ALICE)
            child = sign_event(request(nonce="rebuild-00000004", root=second_id,
                                       parent=grant_id), ALICE)
            replayed_id, child_id = event_ids([replayed, child], settings)
            async with worker_running(settings, broker.bootstrap):
                await produce(broker.bootstrap, topics.requests,
                              [(replayed_id.encode(), replayed), (second_id.encode(), child),
                               (first_id.encode(), first)])
                after = await decisions_about(broker.bootstrap, topics.decisions,
                                              [replayed_id, child_id, first_id])
        assert [event_of(r).reasons for r in after[replayed_id]] == [  # type: ignore[attr-defined]
            (Reason.REPLAY,)]
        assert [event_of(r).reasons for r in after[child_id]] == [  # type: ignore[attr-defined]
            (Reason.PARENT_REVOKED,)]
        assert set(after[first_id]) == set(seen[first_id])  # the original grant, byte for byte
        assert isinstance(event_of(seen[first_id][0]), AuthorizationGranted)
    asyncio.run(scenario())


def ledger_of(settings: Settings, envelopes: Sequence[bytes]) -> None:
    keyring = load_keyring(DataDir(settings.data_dir).keyring)
    sequencer = open_ledger(settings.data_dir, keyring_verifier(keyring))
    try:
        assert sequencer.submit(list(envelopes)).appended == len(envelopes)
    finally:
        sequencer.close()


@contextmanager
def reconciler_of(settings: Settings, *, sequencer: bool = True) -> Iterator[Reconciler]:
    """A Reconciler over the data directory, with (by default) a sequencer holding the
    ledger meanwhile, as in a running service: it verified the ledger when it opened it."""
    data = DataDir(settings.data_dir)
    engine = build_engine(settings)
    writer = (open_ledger(settings.data_dir, keyring_verifier(engine.keyring))
              if sequencer else None)
    reconciler = Reconciler(data.journal, data.ledger_db, keyring=engine.keyring,
                            authority_identity=engine.identity, limits=engine.limits)
    try:
        yield reconciler
    finally:
        reconciler.close()
        if writer is not None:
            writer.close()


def test_a_recent_decision_whose_request_the_ledger_lacks_stops_the_rebuild(
        tmp_path: Path) -> None:
    """Without the request its nonce cannot be remembered: refuse to start while it still
    matters; after the nonce retention, rebuild the decision alone."""
    data = make_data_dir(tmp_path / "data")
    settings = settings_for(data.root, Topics())
    raw = sign_event(request(nonce="lonely-nonce-0001"), ALICE)
    grant = build_engine(settings).handle(Stream.REQUESTS, raw, T0).outputs[0].value
    ledger_of(settings, [grant])  # the grant, not its request
    with reconciler_of(settings) as reconciler:
        with pytest.raises(Unavailable, match="nonces"):
            reconciler.rebuild(T0 + timedelta(minutes=1))
        assert not decisions_in(reconciler.journal)
        assert reconciler.rebuild(T0 + timedelta(days=1)) == 1
        (entry,) = decisions_in(reconciler.journal)
        assert (entry.stream, entry.raw, entry.outcome.allow) == (Stream.DECISIONS, b"", True)
        assert reconciler.rebuild(T0 + timedelta(days=1)) == 0  # checked up to the ledger end
    engine = build_engine(settings)
    journal = Journal(data.journal)
    try:
        for stored in decisions_in(journal):
            engine.restore(stored.stream, stored.raw, stored.arrival, stored.outcome)
    finally:
        journal.close()
    assert len(engine.state.lineage.grants) == 1  # the grant is known again, re-verified


def test_a_rebuilt_request_spends_its_nonce_and_keeps_its_decision(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data")
    settings = settings_for(data.root, Topics())
    raw = sign_event(request(nonce="kept-nonce-000001"), ALICE)
    denied = sign_event(request(nonce="kept-nonce-000002", actions=("delete",),
                                resource="prod/db/*"), ALICE)
    engine = build_engine(settings)
    outputs = [engine.handle(Stream.REQUESTS, r, T0).outputs[0].value for r in (raw, denied)]
    ledger_of(settings, [raw, denied, *outputs])
    with reconciler_of(settings) as reconciler:
        assert reconciler.rebuild(T0 + timedelta(minutes=1)) == 2
    journal = Journal(data.journal)
    fresh = build_engine(settings, journal)
    try:
        for stored in journal.entries():  # the governance history first, then the decisions
            assert stored.stream in (Stream.GOVERNANCE, Stream.REQUESTS)
            fresh.restore(stored.stream, stored.raw, stored.arrival, stored.outcome)
        again = fresh.handle(Stream.REQUESTS, raw, T0 + timedelta(seconds=5))
        assert again.replayed and again.outputs[0].value == outputs[0]
        twin = sign_event(request(nonce="kept-nonce-000001", resource="db/other/*"), ALICE)
        reused = fresh.handle(Stream.REQUESTS, twin, T0 + timedelta(seconds=5))
        assert reused.allow is False and reused.reasons == (Reason.REPLAY,)
    finally:
        journal.close()


def test_a_journal_that_contradicts_the_ledger_stops_the_start(tmp_path: Path) -> None:
    """One decision per request id: a journal holding another decision for a request than
    the ledger does is refused, never silently trusted."""
    data = make_data_dir(tmp_path / "data")
    settings = settings_for(data.root, Topics())
    raw = sign_event(request(nonce="twice-nonce-00001"), ALICE)
    logged = build_engine(settings).handle(Stream.REQUESTS, raw, T0).outputs[0].value
    ledger_of(settings, [raw, logged])
    journal = Journal(data.journal)
    other = build_engine(settings).handle(Stream.REQUESTS, raw, T0 + timedelta(seconds=1))
    assert other.outputs[0].value != logged
    journal.append([(Stream.REQUESTS, T0, raw, other)])
    journal.close()
    with reconciler_of(settings) as reconciler, pytest.raises(
            Unavailable, match="not the decision the processor journal holds"):
        reconciler.rebuild(T0 + timedelta(minutes=1))


def test_the_processor_rebuilds_only_from_a_ledger_a_running_sequencer_verified(
        tmp_path: Path) -> None:
    """Its start-up check not passed (or failed), or no sequencer holding the ledger (the
    marker outlives the sequencer: the file may have been edited since): nothing is taken
    from the ledger, which may be tampered."""
    data = make_data_dir(tmp_path / "data")
    settings = settings_for(data.root, Topics())
    raw = sign_event(request(nonce="unverified-nonce-1"), ALICE)
    ledger_of(settings, [raw, build_engine(settings).handle(Stream.REQUESTS, raw, T0)
                         .outputs[0].value])  # a sequencer opened it, verified it, stopped
    with LedgerStore(data.ledger_db) as store:
        assert store.verified() is not None and not store.writer_running()
    with reconciler_of(settings, sequencer=False) as reconciler:
        with pytest.raises(Unavailable, match="no sequencer holds the ledger"):
            reconciler.rebuild(T0)
        assert reconciler.unledgered().scanned == 0
    with LedgerStore(data.ledger_db, writer=True) as store:
        store.set_verified(None)  # a writer holds it, but its check has not passed
        with reconciler_of(settings, sequencer=False) as reconciler, pytest.raises(
                Unavailable, match="not verified"):
            reconciler.rebuild(T0)


def test_a_ledger_edited_after_its_sequencer_stopped_is_not_rebuilt_from(
        tmp_path: Path) -> None:
    """The review's case: a RevocationApplied deleted from the file while no sequencer runs,
    processor.db lost: the processor must not rebuild the grant without its revocation."""
    data = make_data_dir(tmp_path / "data")
    settings = settings_for(data.root, Topics())
    engine = build_engine(settings)
    raw = sign_event(request(nonce="edited-nonce-0001"), ALICE)
    grant = engine.handle(Stream.REQUESTS, raw, T0)
    grant_id = event_ids([grant.outputs[0].value], settings)[0]
    request_id = event_ids([raw], settings)[0]
    revoke = sign_event(AuthorizationRevoked(
        signer="agent:alice", tenant="acme", nonce="edited-nonce-0002", issued_at=T0,
        artifact_id=grant_id, root=request_id, reason="test"), ALICE)
    applied = engine.handle(Stream.REVOCATIONS, revoke, T0)
    ledger_of(settings, [raw, grant.outputs[0].value, revoke, applied.outputs[0].value])
    with sqlite3.connect(data.ledger_db) as conn:
        conn.execute("DROP TRIGGER leaves_append_only_delete")
        conn.execute("DELETE FROM leaves WHERE idx = (SELECT MAX(idx) FROM leaves)")
    conn.close()
    with reconciler_of(settings, sequencer=False) as reconciler:
        with pytest.raises(Unavailable, match="no sequencer holds the ledger"):
            reconciler.rebuild(T0 + timedelta(minutes=1))
        assert not decisions_in(reconciler.journal)
    with pytest.raises(ProofError):  # and the sequencer refuses the edited file
        ledger_of(settings, [])


def test_an_input_the_ledger_refuses_does_not_stall_the_watermark(tmp_path: Path) -> None:
    """The review's case: an agent signs an AuthorizationGranted and writes it to the
    request topic. The processor now refuses it by the ledger's own admission rule (so its
    subject is the hash of its bytes and nothing claims it belongs in the ledger); and a
    journal written before that (its subject the event id) does not stop the watermark at
    it either: every later entry is still checked."""
    data = make_data_dir(tmp_path / "data")
    settings = settings_for(data.root, Topics())
    engine = build_engine(settings)
    honest = sign_event(request(nonce="honest-nonce-0001"), ALICE)
    parsed = parse_envelope(engine.handle(Stream.REQUESTS, honest, T0).outputs[0].value)
    grant = parse_payload(parsed.payload_type, parsed.payload)
    forged = sign_event(grant.model_copy(update={"signer": "agent:alice",
                                                 "nonce": "forged-nonce-00001"}), ALICE)
    refused = engine.handle(Stream.REQUESTS, forged, T0)
    assert refused.subject == hashlib.sha256(forged).hexdigest()
    assert refused.reasons == (Reason.IDENTITY_MISMATCH,)
    # As the processor journaled it before it applied the ledger's rule: verified, denied
    # UNSUPPORTED_VERSION (wrong stream), its subject the event id.
    forged_id = verify_envelope(forged, load_keyring(data.keyring), None).event_id
    older = Outcome(forged_id, tuple(o for o in refused.outputs
                                     if o.stream is not Stream.DEADLETTER), False,
                    (Reason.UNSUPPORTED_VERSION,))
    later = sign_event(request(nonce="later-nonce-00001"), ALICE)
    later_outcome = engine.handle(Stream.REQUESTS, later, T0)
    journal = Journal(data.journal)
    journal.append([(Stream.REQUESTS, T0, forged, refused),
                    (Stream.REQUESTS, T0, forged, older),
                    (Stream.REQUESTS, T0, later, later_outcome)])
    journal.close()
    logged = [o.value for o in (*refused.outputs, *later_outcome.outputs)
              if o.stream is not Stream.DEADLETTER]
    ledger_of(settings, [*logged, later])
    with reconciler_of(settings) as reconciler:
        found = reconciler.unledgered()
        reconciler.mark_ledgered(found.ledgered_upto)
        assert found.missing == ()
        assert reconciler.journal.meta(LEDGERED) == reconciler.journal.last_seq()


def test_a_rebuild_forgets_no_nonce_the_engine_still_remembers(tmp_path: Path) -> None:
    """The review's case: a request issued 29 s ahead of the processor's clock keeps its
    nonce up to the clock skew longer; a rebuild without the request uses the engine's own
    horizon, so the same reuse is REPLAY after a rebuild as without one."""
    data = make_data_dir(tmp_path / "data")
    settings = settings_for(data.root, Topics())
    live = build_engine(settings)
    raw = sign_event(request(nonce="skewed-nonce-0001", issued_at=T0 + timedelta(seconds=29)),
                     ALICE)
    grant = live.handle(Stream.REQUESTS, raw, T0)
    assert grant.allow
    ledger_of(settings, [grant.outputs[0].value])  # the request itself never reached it
    later = T0 + live.limits.nonce_retention + timedelta(seconds=10)
    with reconciler_of(settings) as reconciler:
        with pytest.raises(Unavailable, match="nonces"):  # still remembered by the engine
            reconciler.rebuild(later)
        past = later + live.limits.max_clock_skew
        assert reconciler.rebuild(past) == 1
    twin = sign_event(request(nonce="skewed-nonce-0001", resource="db/other/*",
                              issued_at=later), ALICE)
    assert live.handle(Stream.REQUESTS, twin, later).reasons == (Reason.REPLAY,)


def test_a_ledger_restored_from_an_older_copy_gets_the_journals_events_again(
        tmp_path: Path) -> None:
    """The review's case: the watermark says the journal's events are leaves; a ledger
    restored from a backup taken before them no longer holds them."""
    data = make_data_dir(tmp_path / "data")
    settings = settings_for(data.root, Topics())
    ledger_of(settings, [])
    backup = tmp_path / "backup.db"
    shutil.copy(data.ledger_db, backup)
    raw = sign_event(request(nonce="restored-nonce-01"), ALICE)
    outcome = build_engine(settings).handle(Stream.REQUESTS, raw, T0)
    journal = Journal(data.journal)
    journal.append([(Stream.REQUESTS, T0, raw, outcome)])
    journal.close()
    ledger_of(settings, [raw, outcome.outputs[0].value])
    with reconciler_of(settings) as reconciler:
        reconciler.mark_ledgered(reconciler.unledgered().ledgered_upto)
        assert reconciler.journal.meta(LEDGERED) == 1
    for suffix in ("-wal", "-shm"):
        Path(f"{data.ledger_db}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, data.ledger_db)  # the disk is lost; the backup is restored
    with reconciler_of(settings) as reconciler:
        found = reconciler.unledgered()
    assert len(found.missing) == 2  # the request and its decision, to be published again


def test_a_sequencer_that_stops_during_the_scan_no_longer_vouches_for_the_ledger(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review's case: trust is asked after the ledger was read, so a sequencer that
    stopped meanwhile (a large ledger takes seconds to scan) makes the rebuild refuse."""
    data = make_data_dir(tmp_path / "data")
    settings = settings_for(data.root, Topics())
    raw = sign_event(request(nonce="window-nonce-00001"), ALICE)
    ledger_of(settings, [raw, build_engine(settings).handle(Stream.REQUESTS, raw, T0)
                         .outputs[0].value])
    with reconciler_of(settings, sequencer=False) as reconciler:
        writer = open_ledger(settings.data_dir, keyring_verifier(load_keyring(data.keyring)))
        scan = LedgerStore.iter_kinds

        def scan_then_stop(store: LedgerStore, *args: object, **kwargs: object) -> object:
            writer.close()  # the sequencer stops while the processor reads
            return scan(store, *args, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(LedgerStore, "iter_kinds", scan_then_stop)
        with pytest.raises(Unavailable, match="no sequencer holds the ledger"):
            reconciler.rebuild(T0 + timedelta(minutes=1))
        assert not decisions_in(reconciler.journal)
