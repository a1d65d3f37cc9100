"""Faults around the pipelined append (LedgerStore.append_begin, ledger/log/commits.py):
what a batch in flight, a failed COMMIT, a failed WAL checkpoint or an interrupted wait may
leave behind. Each test names the rule it holds the store to."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import pytest

from ledger.errors import Unavailable
from ledger.log import commits
from ledger.log.records import LeafRecord
from ledger.log.store import LedgerStore
from tests.disk_support import no_file_may_grow
from tests.ledger_support import poisoned

pytestmark = pytest.mark.integration


def rec(i: int, kind: str = "Test") -> LeafRecord:
    return LeafRecord(hashlib.sha256(b"id %d" % i).hexdigest(), kind, b"leaf %d" % i)


def test_reads_during_a_failing_commit_in_flight_never_see_its_rows(tmp_path: Path) -> None:
    """The writer's reads share the connection whose transaction is being committed, so a
    read that did not wait would see the batch's uncommitted rows. (What
    test_a_read_waits_for_the_commit_in_flight meant to check: it passes with the settle
    removed from both ``conn`` and ``index``, the COMMIT there succeeds.)"""
    with LedgerStore(tmp_path / "ledger.db", writer=True, commit_thread=True) as store:
        store.append([rec(i) for i in range(10)])
        poisoned(store)
        store.append_begin([*(rec(i) for i in range(10, 17)), rec(99, "Poison")])
        with pytest.raises(Unavailable, match="ledger commit failed"):
            store.tree_size()
        assert store.tree_size() == 10
        store.append_begin([rec(98, "Poison")])
        with pytest.raises(Unavailable, match="ledger commit failed"):
            store.find(rec(98).event_id)
        assert store.find(rec(98).event_id) is None


def test_compact_range_never_reports_a_tree_whose_commit_is_in_flight(tmp_path: Path) -> None:
    """compact_range() is "the right border of the stored tree": while a batch's COMMIT is
    in flight it waits for it (and raises if it failed), never answering with the tree of a
    batch that is then rolled back."""
    with LedgerStore(tmp_path / "ledger.db", writer=True, commit_thread=True) as store:
        store.append([rec(i) for i in range(10)])
        poisoned(store)
        store.append_begin([*(rec(i) for i in range(10, 17)), rec(99, "Poison")])
        try:
            size = store.compact_range().size
        except Unavailable:  # settled first, and the batch's COMMIT failed: fine
            size = store.compact_range().size
        assert size == 10


def test_a_checkpoint_failed_on_a_full_disk_stops_the_writer_only_until_there_is_room(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A WAL checkpoint copies committed frames into the database file; when it fails the
    frames stay in the (fsynced) WAL and the next poke retries it: nothing is lost, and a
    moment of full disk must not stop the writer once there is room again, as every other
    ledger write recovers (test_every_ledger_write_on_a_disk_that_takes_nothing_is_unavailable
    failed at random when a sticky checkpoint error did: the checkpoint thread, poked by its
    first append, ran inside the full-disk window)."""
    with LedgerStore(tmp_path / "ledger.db", writer=True, commit_thread=True) as store:
        assert store._commits is not None
        checkpointer = store._commits._checkpoints
        assert checkpointer is not None
        monkeypatch.setattr(checkpointer, "poke", lambda: None)  # the test runs it instead
        store.append([rec(0)])
        with no_file_may_grow():
            checkpointer._checkpoint()  # what the thread runs after that commit
        with contextlib.suppress(Unavailable):
            store.append([rec(1)])  # the failure may be reported once
        monkeypatch.undo()
        assert store.append([rec(2)]).appended == 1  # room again: the writer goes on


def test_an_interrupted_wait_for_a_commit_in_flight_keeps_its_ids_in_the_duplicate_check(
        tmp_path: Path) -> None:
    """A wait for the batch in flight that ends in a BaseException (Ctrl-C in a blocking
    Future.result() on the main thread) leaves the batch in flight: the next use of the
    store waits again and runs its outcome, so the mirror of the recent key tier learns
    its ids and the next append does not store the same event id again."""
    with LedgerStore(tmp_path / "ledger.db", writer=True, commit_thread=True) as store:
        handle = store.append_begin([rec(0)])
        commit = handle._commit

        class InterruptedWait:
            interrupted = False

            def result(self) -> object:
                commit.result()  # the COMMIT itself completes
                if not self.interrupted:  # the first wait is cut short, as by Ctrl-C
                    self.interrupted = True
                    raise KeyboardInterrupt
                return None

        handle._commit = InterruptedWait()  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            store.settle()
        again = store.append([rec(0)])
        assert (again.appended, again.duplicates, again.tree_size) == (0, 1, 1)


def test_a_fold_that_failed_leaves_the_writer_checkpointing_its_wal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fold_wal settles the batch in flight before it stops the checkpoint thread: when that
    batch's COMMIT failed the fold raises and the writer, still in WAL mode with
    ``wal_autocheckpoint=0``, must still checkpoint, or its WAL would grow with every
    batch."""
    monkeypatch.setattr(commits, "WAL_INLINE_PAGES", 0)  # every checkpoint inline: no race
    path = tmp_path / "ledger.db"
    with LedgerStore(path, writer=True, commit_thread=True) as store:
        store.append([rec(i) for i in range(10)])
        poisoned(store)
        store.append_begin([rec(99, "Poison")])
        with pytest.raises(Unavailable, match="ledger commit failed"):
            store.fold_wal()
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        wal = Path(f"{path}-wal")
        sizes = []
        for n in range(20):
            store.append([rec(i) for i in range(1000 + 200 * n, 1200 + 200 * n)])
            sizes.append(wal.stat().st_size)
        assert sizes[-1] <= 2 * sizes[1]  # checkpointed: the WAL is reused, not grown


def test_a_close_interrupted_while_it_waits_still_releases_the_writer_lock(
        tmp_path: Path) -> None:
    """LedgerStore.close runs Commits.close (wait for the batch in flight, join both
    threads), then closes the connection and the lock, whatever the wait raised
    (KeyboardInterrupt: Commits.close suppresses only Exception)."""
    path = tmp_path / "ledger.db"
    store = LedgerStore(path, writer=True, commit_thread=True)
    handle = store.append_begin([rec(0)])
    commit = handle._commit

    class InterruptedWait:
        def result(self) -> object:
            commit.result()
            raise KeyboardInterrupt  # every wait is cut short

    handle._commit = InterruptedWait()  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        store.close()
    try:
        with LedgerStore(path, writer=True) as again:
            assert again.tree_size() == 1
    finally:
        store.close()
