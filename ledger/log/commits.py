"""The ledger writer's disk work off its own thread: a batch's COMMIT on a commit thread
(:class:`PendingAppend`, from :meth:`ledger.log.store.LedgerStore.append_begin`) and the
WAL copied into the database file on a checkpoint thread (:class:`WalCheckpointer`); both
kept by :class:`Commits`, which also folds the WAL away for a new ledger file.

Both are single SQLite calls that release the GIL (the COMMIT writes and syncs the WAL; a
checkpoint copies WAL pages into the database and syncs it), so the writer's next batch is
prepared meanwhile on the other core. Durability is unchanged: ``synchronous=FULL``, one
fsync of the WAL per commit, and *sequenced* still means committed: nothing of a batch is
reported appended before its COMMIT returned (:meth:`PendingAppend.result`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from ledger.errors import Unavailable
from ledger.log.records import BatchResult
from ledger.log.sqlite import open_sqlite

WAL_INLINE_PAGES: Final = 8192
"""WAL pages (32 MiB of 4 KiB pages) from which :class:`WalCheckpointer` checkpoints on
the writer's thread too."""
WAL_SIZE_LIMIT: Final = 64 << 20
"""Bytes the writer's WAL file is cut back to once SQLite reuses it (``journal_size_limit``)."""


class PendingAppend:
    """A batch written in an open transaction whose COMMIT runs as ``commit`` (a future of
    the commit thread). :meth:`result` waits for it, then runs ``done`` once (success: the
    store keeps the batch, returns its result) or ``failed`` once (the store rolls back and
    forgets the batch; the error it returns is raised, to every caller)."""

    def __init__(self, commit: Future[object], done: Done, failed: Failed) -> None:
        self._commit, self._done, self._failed = commit, done, failed
        self._outcome: BatchResult | BaseException | None = None

    def result(self) -> BatchResult:
        """The batch's result once committed (the same on later calls). Raises what the
        commit raised (Unavailable), or what ``done`` raised."""
        if self._outcome is None:
            try:
                self._commit.result()
            except Exception as exc:
                self._outcome = self._failed(exc)
            else:
                try:
                    self._outcome = self._done()
                except Exception as exc:
                    self._outcome = exc
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome

    @property
    def settled(self) -> bool:
        """Whether the outcome is known (a wait cut short by an interrupt leaves it not)."""
        return self._outcome is not None


T = TypeVar("T")
Last = Callable[[], None]
"""A batch's last statements, run in its transaction just before the COMMIT (on the commit
thread with it): the lookup index's merge. Raises sqlite3.Error."""
Done = Callable[[], BatchResult]
"""Run once a batch's COMMIT succeeded: the store keeps the batch; returns its result."""
Failed = Callable[[BaseException], BaseException]
"""Run once a batch's COMMIT failed: the store rolls back and forgets the batch; returns the
error to raise."""


class Commits:
    """The ledger writer's COMMITs on ``conn``: inline (:meth:`now`) or, with
    ``thread=True`` (the connection then must allow other threads), on a commit thread of
    its own (:meth:`begin`, at most one in flight); and the WAL checkpoint thread of
    database ``path`` (:class:`WalCheckpointer`, poked after each commit)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, thread: bool) -> None:
        self._conn = conn
        self.inflight: PendingAppend | None = None
        self._thread = (ThreadPoolExecutor(1, thread_name_prefix="ledger-commit")
                        if thread else None)
        self._queued: Future[object] | None = None  # queued behind the COMMIT in flight
        self._checkpoints: WalCheckpointer | None = WalCheckpointer(path, "ledger database")
        self._closed = False

    def check(self) -> None:
        """Before a write: settle the batch in flight, then raise Unavailable if it or the
        last inline WAL checkpoint failed (then the connection is this thread's again)."""
        if self._closed:
            raise Unavailable("the ledger store is closed")
        try:
            self.settle()
            if self._checkpoints is not None:
                self._checkpoints.check()
        except BaseException:
            self._drain()
            raise

    def after_commit(self, read: Callable[[], T]) -> Callable[[], T]:
        """``read`` (of the connection) queued on the commit thread behind the COMMIT in
        flight, so it sees that batch while this thread goes on; returns the call that waits
        for its result (without a COMMIT in flight, the call runs ``read``). The caller
        makes that call before any other use of the connection."""
        if self.inflight is None or self._thread is None:
            return read
        queued: Future[T] = self._thread.submit(read)
        self._queued = queued  # type: ignore[assignment]
        return queued.result

    def _drain(self) -> None:
        queued, self._queued = self._queued, None
        if queued is not None:
            futures.wait([queued])

    def now(self, last: Last, done: Done, failed: Failed) -> BatchResult:
        """Run ``last`` and COMMIT the open transaction on this thread. Raises what
        ``failed`` returns."""
        try:
            self._finish(last)
        except sqlite3.Error as exc:
            raise failed(exc) from exc
        return self._done(done)()

    def begin(self, last: Last, done: Done, failed: Failed) -> PendingAppend:
        """Run ``last`` and COMMIT the open transaction on the commit thread (on this one
        without it: the handle is settled then); the handle is in flight until
        :meth:`settle`."""
        if self._thread is None:
            committed: Future[object] = Future()
            try:
                self._finish(last)
                committed.set_result(None)
            except sqlite3.Error as exc:
                committed.set_exception(exc)
        else:
            committed = self._thread.submit(self._finish, last)
        self.inflight = PendingAppend(committed, self._done(done), self._failed(failed))
        return self.inflight

    def _finish(self, last: Last) -> None:
        last()
        self._conn.execute("COMMIT")

    def _done(self, done: Done) -> Done:
        def committed() -> BatchResult:
            result = done()
            if self._checkpoints is not None:
                self._checkpoints.poke()
            return result
        return committed

    def _failed(self, failed: Failed) -> Failed:
        def rolled_back(exc: BaseException) -> BaseException:
            self._drain()  # a read queued behind the failed COMMIT ends before the rollback
            return failed(exc)
        return rolled_back

    def settle(self) -> BatchResult | None:
        """Wait for the batch in flight, if any: its result, or None. Raises what its
        COMMIT raised (Unavailable). A wait cut short (an interrupt) leaves the batch in
        flight, so the next use of the store waits for it again and runs its outcome."""
        pending = self.inflight
        if pending is None:
            return None
        try:
            return pending.result()
        finally:
            if pending.settled:
                self.inflight = None

    def fold_wal(self, path: Path) -> None:
        """Settle the batch in flight (a failed one raises here, the checkpoints going on),
        stop the checkpoint thread, whose connection would keep the mode from changing, and
        switch to rollback-journal mode, which checkpoints the WAL into the database file
        and deletes it. Raises Unavailable."""
        self.settle()
        self.stop_checkpoints()
        try:
            mode = self._conn.execute("PRAGMA journal_mode=DELETE").fetchone()
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot fold the write-ahead log of {path}: {exc}") from exc
        if mode is None or str(mode[0]).lower() != "delete":
            raise Unavailable(f"cannot fold the write-ahead log of {path}: the journal mode "
                              f"stayed {mode!r}")

    def stop_checkpoints(self) -> None:
        """Stop the checkpoint thread and close its connection (the writer's last
        checkpoint then is SQLite's own, on close or a journal-mode change)."""
        if self._checkpoints is not None:
            self._checkpoints.close()
            self._checkpoints = None

    def close(self) -> None:
        """Wait for the batch in flight (an outcome nobody asked for was never reported
        appended, so it is not raised), then stop both threads, whatever the wait raised."""
        self._closed = True
        try:
            with contextlib.suppress(Exception):
                self.settle()
        finally:
            self.inflight = None  # closed: an outcome still unknown is never reported
            try:
                self._drain()
                if self._thread is not None:
                    self._thread.shutdown(wait=True)
                    self._thread = None
            finally:
                self.stop_checkpoints()


class WalCheckpointer:
    """Copies the WAL of database ``path`` into the database file on a thread of its own,
    after each :meth:`poke` (SQLite's PASSIVE checkpoint through a second connection: it
    never blocks the writer or a reader), so the writer's COMMIT writes and syncs the WAL
    only. The writer turns its own automatic checkpoint off (``wal_autocheckpoint=0``).

    A checkpoint that fails loses nothing (the frames stay in the synced WAL); the next
    poke retries it on the writer's thread. So does a poke when the last checkpoint found
    :data:`WAL_INLINE_PAGES` or more pages in the WAL (the thread falls behind, or the
    writer's next transaction keeps SQLite from reusing the WAL), as SQLite's automatic
    checkpoint would: the WAL cannot grow without bound. An inline checkpoint that fails
    is raised once, by the writer's next :meth:`check`."""

    def __init__(self, path: Path, what: str) -> None:
        self.what = what
        self._conn = open_sqlite(path, what, check_same_thread=False)
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one checkpoint at a time on self._conn
        self._stopping = False
        self._wal_pages = 0
        self._retry = False
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="ledger-wal-checkpoint",
                                        daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Before a write. Raises Unavailable, once, if the last inline checkpoint failed
        (the database file or its disk is failing)."""
        error, self._error = self._error, None
        if error is not None:
            raise Unavailable(f"{self.what} checkpoint failed: {error}")

    def poke(self) -> None:
        """After a commit: checkpoint on the thread, or inline if the last one failed or
        the WAL is past its bound."""
        if self._retry or self._wal_pages >= WAL_INLINE_PAGES:
            error = self._checkpoint()
            if error is not None:
                self._error = error
        else:
            self._wake.set()

    def _checkpoint(self) -> Exception | None:
        with self._lock:
            try:
                row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except Exception as exc:  # kept: any failure is retried, none is lost
                self._retry = True
                return exc
            self._wal_pages = int(row[1]) if row is not None else 0
            self._retry = False
            return None

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            self._checkpoint()

    def close(self) -> None:
        """Stop the thread (after the checkpoint it runs, if any) and close its connection."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        with self._lock:
            self._conn.close()
