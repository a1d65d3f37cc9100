"""The processor journal on a real SQLite file: durable, idempotent, restorable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from ledger.core.envelope import sign_event
from ledger.core.streams import Stream
from processors.journal import Journal
from tests.factories import ALICE, T0, request
from tests.unit.test_engine import engine

pytestmark = pytest.mark.integration


def test_append_recall_and_restore(tmp_path: Path) -> None:
    eng = engine()
    journal = Journal(tmp_path / "processor.db")
    raws = [sign_event(request(nonce=f"nonce-{n:012d}"), ALICE) for n in range(5)] + [b"junk"]
    batch = [(Stream.REQUESTS, T0, raw, eng.handle(Stream.REQUESTS, raw, T0)) for raw in raws]
    assert journal.last_seq() == 0
    last = journal.append(batch)
    assert last == 6 == journal.count() == journal.last_seq()
    # Redelivered outcomes are not journaled twice.
    again = [(Stream.REQUESTS, T0, raw, eng.handle(Stream.REQUESTS, raw, T0)) for raw in raws]
    assert all(o.replayed for *_, o in again)
    assert journal.append(again) == 6 and journal.count() == 6
    for *_, outcome in batch:
        recalled = journal.recall(outcome.subject)
        assert recalled is not None
        assert (recalled.outputs, recalled.allow, recalled.reasons) == (
            outcome.outputs, outcome.allow, outcome.reasons)
    journal.close()

    reopened = Journal(tmp_path / "processor.db")
    fresh = engine()
    for entry in reopened.entries():
        fresh.restore(entry.stream, entry.raw, entry.arrival, entry.outcome)
    for raw, (*_, outcome) in zip(raws, batch, strict=True):
        assert fresh.handle(Stream.REQUESTS, raw, T0).outputs == outcome.outputs


def test_published_watermark(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "p.db")
    assert journal.published_seq() == 0
    journal.mark_published(5)
    journal.mark_published(3)
    assert journal.published_seq() == 5


def test_wal_and_full_sync(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "p.db")
    assert journal.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_engine_recall_falls_back_to_the_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "p.db")
    first = engine()
    raw = sign_event(request(), ALICE)
    outcome = first.handle(Stream.REQUESTS, raw, T0)
    journal.append([(Stream.REQUESTS, T0, raw, outcome)])
    second = engine()
    second.recall = journal.recall  # nothing restored: the cache is empty
    assert second.handle(Stream.REQUESTS, raw, T0).outputs == outcome.outputs


def test_unwritable_journal_is_unavailable(tmp_path: Path) -> None:
    from ledger.errors import Unavailable
    path = tmp_path / "p.db"
    path.mkdir()  # a directory where the file should be
    with pytest.raises(Unavailable):
        Journal(path)


def journal_of_requests(path: Path, count: int, tag: str) -> Journal:
    """A journal holding ``count`` granted requests, decided by a fresh engine."""
    live = engine()
    journal = Journal(path)
    raws = [sign_event(request(nonce=f"{tag}-{n:012d}"), ALICE) for n in range(count)]
    journal.append([(Stream.REQUESTS, T0, raw, live.handle(Stream.REQUESTS, raw, T0))
                    for raw in raws])
    return journal


def test_a_long_restore_reports_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """Restoring a big journal takes minutes: the worker says how far it is."""
    import processors.catchup as catchup
    import processors.worker as agents
    from ledger.config import Settings
    from ledger.kafka.topics import Topics
    monkeypatch.setattr(catchup, "FREEZE_EVERY_RESTORED", 2)
    monkeypatch.setattr(catchup, "RESTORE_REPORT_S", 0.0)
    journal = journal_of_requests(tmp_path / "processor.db", 5, "nonce")
    worker = agents.DecisionWorker(Settings(), "unused:0", Topics("gov."), engine(), journal)
    with caplog.at_level("INFO", logger="govledger.processor"):
        assert worker.catch_up() == 5
    progress = [r.getMessage() for r in caplog.records if "restoring" in r.getMessage()]
    assert progress == ["restoring the processor journal: 2 entries applied, at entry 2 of 5",
                        "restoring the processor journal: 4 entries applied, at entry 4 of 5"]
    journal.close()


def test_a_second_different_decision_for_a_subject_is_refused_whole(tmp_path: Path) -> None:
    """Two workers of a group decided the same request (a rebalance race): the first to
    journal wins; the loser's whole batch, offsets included, is refused with Unavailable, so
    it publishes nothing and one request keeps one decision."""
    from datetime import timedelta

    from ledger.errors import Unavailable
    journal = Journal(tmp_path / "processor.db")
    raw = sign_event(request(nonce="nonce-race-000001"), ALICE)
    other = sign_event(request(nonce="nonce-race-000002"), ALICE)
    first = engine().handle(Stream.REQUESTS, raw, T0)
    later = T0 + timedelta(seconds=1)
    loser = engine()
    second, fresh = loser.handle(Stream.REQUESTS, raw, later), loser.handle(
        Stream.REQUESTS, other, later)
    assert first.outputs != second.outputs  # signed at another time
    journal.append([(Stream.REQUESTS, T0, raw, first)], {("gov.requests", 0): 1})
    with pytest.raises(Unavailable, match="already decided by another worker"):
        journal.append([(Stream.REQUESTS, later, other, fresh),
                        (Stream.REQUESTS, later, raw, second)], {("gov.requests", 0): 3})
    assert journal.count() == 1 and journal.offsets() == {("gov.requests", 0): 1}
    recalled = journal.recall(first.subject)
    assert recalled is not None and recalled.outputs == first.outputs
    # the same outputs again are simply skipped; first_wins skips even different ones
    assert journal.append([(Stream.REQUESTS, T0, raw, first)]) == 1
    assert journal.append([(Stream.REQUESTS, later, raw, second)], first_wins=True) == 1
    assert journal.count() == 1
    journal.close()



def test_a_group_worker_applies_deferred_effects_as_a_full_restore_would(
        tmp_path: Path) -> None:
    """A worker of a group restores every entry's nonce at once but keeps the lineage effects
    of trees on partitions it never owned waiting. Applied later, they give exactly the state
    a full restore gives; an input acting in such a tree loads it first."""
    from ledger.config import Settings
    from ledger.errors import Reason
    from ledger.kafka.clients import partition_for
    from ledger.kafka.topics import Topics
    from processors.core.engine import Engine
    from processors.core.outcomes import Outcome
    from processors.worker import DecisionWorker
    from tests.unit.test_engine import ask, child, execute, revoke

    live = engine()
    rows: list[tuple[Stream, datetime, bytes, Outcome]] = []
    decide = live.handle

    def journaled(stream: Stream, raw: bytes, now: datetime) -> Outcome:
        outcome = decide(stream, raw, now)
        rows.append((stream, now, raw, outcome))
        return outcome

    live.handle = journaled  # type: ignore[method-assign]
    x_root = ask(live, nonce="nonce-x-root-0001", resource="db/*")
    x = x_root.subject
    x_mid = child(live, x_root, x, "nonce-x-mid-00001", resource="db/*")
    x_leaf = child(live, x_mid, x, "nonce-x-leaf-0001", resource="db/orders/*",
                   single_use=True)
    x_other = child(live, x_root, x, "nonce-x-oth-00001", resource="db/orders/*",
                    single_use=True)
    used = execute(live, x_other, x, "exec-x-other-0001")
    cut = revoke(live, x_mid, x, ALICE, "agent:alice", "revoke-x-mid-0001")
    y_root = ask(live, nonce="nonce-y-root-0002", resource="db/*")
    assert all(o.allow for o in (x_root, x_mid, x_leaf, x_other, used, cut, y_root))
    journal = Journal(tmp_path / "processor.db")
    journal.append(rows)

    def worker(group: bool) -> DecisionWorker:
        return DecisionWorker(Settings(), "unused:0", Topics("gov."), engine(), journal,
                              use_group=group)

    full, grouped = worker(False), worker(True)
    assert full.catch_up() == grouped.catch_up() == len(rows) == 7
    assert grouped.engine.state.lineage.grants == {}  # every effect waits...
    reused = ask(grouped.engine, nonce="nonce-y-root-0002", resource="db/orders/*")
    assert reused.reasons == (Reason.REPLAY,)  # ...but every nonce is known

    # Load the partition of tree x only (4 partitions, as a group would find them).
    grouped.catchup.tree_partitions = 4
    x_part = partition_for(x.encode(), 4)
    asyncio.run(grouped.catchup.apply_deferred(lambda key: partition_for(key, 4) == x_part))
    assert partition_for(y_root.subject.encode(), 4) != x_part  # tree y stays waiting

    def state(w: DecisionWorker) -> dict[str, object]:
        return {aid: (r.artifact, r.uses, r.revoked_by)
                for aid, r in w.engine.state.lineage.grants.items()
                if r.artifact.lineage.root == x}

    assert state(grouped) == state(full) and len(state(full)) >= 4
    # The same follow-ups on tree x decide byte for byte alike.
    follow_ups: list[Callable[[Engine], Outcome]] = [
            lambda e: execute(e, x_leaf, x, "exec-x-leaf-00002"),   # revoked above the leaf
            lambda e: execute(e, x_other, x, "exec-x-other-0002"),  # single use, used
            lambda e: child(e, x_root, x, "nonce-x-new-00001", resource="db/orders/*"),
            lambda e: child(e, x_leaf, x, "nonce-x-new-00002", resource="db/orders/*")]
    for follow_up in follow_ups:
        a, b = follow_up(full.engine), follow_up(grouped.engine)
        assert (a.outputs, a.reasons) == (b.outputs, b.reasons)
    assert execute(full.engine, x_leaf, x, "exec-x-leaf-00003").reasons == (
        Reason.ARTIFACT_REVOKED,)
    # An input acting in tree y, not loaded here (it came on another partition than its
    # tree's), loads y first: decided exactly as with the full history.
    assert y_root.subject.encode() in grouped.catchup.deferred
    a = child(full.engine, y_root, y_root.subject, "nonce-y-new-00001")
    b = child(grouped.engine, y_root, y_root.subject, "nonce-y-new-00001")
    assert a.allow and (a.outputs, a.reasons) == (b.outputs, b.reasons)
    assert y_root.subject.encode() not in grouped.catchup.deferred
    journal.close()


def test_a_group_worker_yields_while_it_applies_waiting_effects(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Taking over partitions of a big journal applies many waiting effects inside the group
    session: the event loop (the group heartbeat) must get turns meanwhile; the effects wait
    as journal positions, read back when applied."""
    import processors.catchup as catchup
    import processors.worker as agents
    from ledger.config import Settings
    from ledger.kafka.topics import Topics
    monkeypatch.setattr(catchup, "APPLY_CHUNK", 4)
    journal = journal_of_requests(tmp_path / "processor.db", 24, "nonce-yield")
    worker = agents.DecisionWorker(Settings(), "unused:0", Topics("gov."), engine(), journal,
                                   use_group=True)
    assert worker.catch_up() == 24
    assert sum(map(len, worker.catchup.deferred.values())) == 24
    assert all(isinstance(seq, int) for seqs in worker.catchup.deferred.values() for seq in seqs)

    async def apply_with_a_neighbour() -> int:
        turns = 0

        async def neighbour() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)
        task = asyncio.create_task(neighbour())
        await asyncio.sleep(0)
        before = turns
        assert await worker.catchup.apply_deferred(lambda key: True) == 24
        task.cancel()
        return turns - before

    assert asyncio.run(apply_with_a_neighbour()) >= 24 // 4 - 1
    assert len(worker.engine.state.lineage.grants) == 24 and not worker.catchup.deferred
    journal.close()
