"""The SQLite Merkle log: leaves, stored node hashes, signed checkpoints, consumer offsets,
in one file (WAL, ``synchronous=FULL``).

Tables and triggers: :mod:`ledger.log.schema`. Node hashes live in pages of 64
(:mod:`ledger.log.pages`), so a proof is one small query; the lookup index (event id ->
leaf, decision subject -> decision leaf) is an LSM kept by
:class:`ledger.log.index.LookupIndex`. One writer at a time (an exclusive ``flock`` on
``<db>.lock``); each batch is one transaction (:mod:`ledger.log.appends` lays it out,
:mod:`ledger.log.commits` commits it). Readers may open the same file concurrently.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Final

import sqlite_utils

from ledger.core import merkle
from ledger.core.merkle import CompactRange, NodeId, TreeSize
from ledger.errors import ConfigError, ProofError, Unavailable
from ledger.log import appends
from ledger.log.appends import Ids
from ledger.log.commits import WAL_SIZE_LIMIT, Commits, Done, Failed, Last, PendingAppend
from ledger.log.index import LEAF_COLUMNS, MERGE_AT, LookupIndex
from ledger.log.pages import read_hashes
from ledger.log.records import BatchResult, CheckpointSigner, LeafRecord, Offsets, StoredLeaf
from ledger.log.schema import create_schema
from ledger.log.sqlite import (
    Transaction,
    Writing,
    lock_writer,
    open_sqlite,
    write_failed,
    writer_holds,
)

VERIFIED: Final = "verified"
"""Meta key of the sequencer's start-up check result (:meth:`LedgerStore.verified`)."""

_PRAGMAS = ("temp_store=MEMORY", "secure_delete=OFF")  # deleted rows: recent_keys copies
_CACHE_KIB: Final = {True: 65536, False: 262144}  # by readonly: the writer walks more pages

class LedgerStore:
    """A ledger database. ``writer=True`` takes the single-writer lock and may append;
    ``merge_at`` (rows of ``recent_keys`` before a merge) exists for tests. ``index`` is its
    :class:`ledger.log.index.LookupIndex`, written in each append's transaction.

    Raises ConfigError (missing file for a reader), Unavailable (SQLite, lock held) or, for a
    writer, ProofError (the lookup index claims more leaves than are stored).
    """

    def __init__(self, path: Path, *, writer: bool = False, merge_at: int = MERGE_AT,
                 commit_thread: bool = False) -> None:
        self.path = path
        self._lock_fd: int | None = None
        self._compact: CompactRange | None = None
        self._commits: Commits | None = None
        if writer:
            self._lock_fd = lock_writer(path)
        try:
            self._conn = open_sqlite(path, "ledger database", readonly=not writer, pragmas=(
                *_PRAGMAS, f"cache_size={-_CACHE_KIB[not writer]}", *((
                    "wal_autocheckpoint=0", f"journal_size_limit={WAL_SIZE_LIMIT}")
                    if writer else ())), check_same_thread=not commit_thread)
            self.db = sqlite_utils.Database(self._conn)
            self._index = LookupIndex(self._conn, merge_at)
            if writer:
                with self._tx():
                    create_schema(self.db)
                self.index.catch_up(self.tree_size())
                self._commits = Commits(self._conn, path, thread=commit_thread)
        except BaseException:
            self.close()
            raise

    # -- schema and metadata -------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a metadata value once; a different existing value raises ConfigError."""
        old = self.meta(key)
        if old is not None and old != value:
            raise ConfigError(f"ledger {key} is {old!r}, not {value!r}")
        with self._tx():
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection, once the batch in flight (:meth:`append_begin`) is settled."""
        self.settle()
        return self._conn

    @property
    def index(self) -> LookupIndex:
        """The lookup index, once the batch in flight is settled."""
        self.settle()
        return self._index

    def fold_wal(self) -> None:
        """Fold the WAL into the database file and leave WAL mode, so the one file holds
        everything: a new ledger is moved into place that way (:meth:`Commits.fold_wal`).
        The next writer turns WAL back on. Raises Unavailable."""
        self._writer().fold_wal(self.path)

    def close(self) -> None:
        """Wait for the batch in flight (Commits.close), close the file and the lock."""
        try:
            if self._commits is not None:
                self._commits.close()
        finally:
            conn = getattr(self, "_conn", None)
            if conn is not None:
                conn.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self) -> Transaction:
        return Transaction(self.conn, "ledger")

    def _one(self, sql: str, params: Sequence[object] = ()) -> tuple[object, ...] | None:
        try:
            row: tuple[object, ...] | None = self.conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc
        return row

    # -- reads -----------------------------------------------------------------------------

    def tree_size(self) -> TreeSize:
        row = self._one("SELECT COALESCE(MAX(idx) + 1, 0) FROM leaves")
        return TreeSize(int(row[0]) if row else 0)  # type: ignore[call-overload]

    def hashes_by_id(self, ids: Sequence[int]) -> dict[int, bytes]:
        """Stored hashes by hash number, in one query per 999 pages; absent ones left out."""
        return read_hashes(self.conn, ids)

    def nodes(self, node_ids: Sequence[NodeId]) -> dict[NodeId, bytes]:
        """Stored hashes of ``node_ids`` in one query; absent nodes are left out."""
        by_id = self.hashes_by_id([merkle.stored_hash_index(n) for n in node_ids])
        return {n: by_id[i] for n in node_ids
                if (i := merkle.stored_hash_index(n)) in by_id}

    def root_at(self, size: int) -> bytes:
        """Root of the first ``size`` leaves from stored nodes. Raises ProofError."""
        if not 0 <= size <= self.tree_size():
            raise ProofError(f"no tree of size {size} in a ledger of {self.tree_size()}")
        return merkle.fold(self._border(size))

    def _border(self, size: int) -> list[bytes]:
        """The stored hashes of the right border of the tree of ``size`` leaves
        (:func:`ledger.core.merkle.root_plan`). Raises ProofError if one is missing."""
        plan = merkle.root_plan(size)
        found = self.nodes(plan)
        if len(found) != len(plan):
            raise ProofError(f"stored nodes for the tree of size {size} are missing")
        return [found[n] for n in plan]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 inclusion proof from stored nodes. Requires 0 <= index < size <= tree
        size. Raises ProofError."""
        if size > self.tree_size():
            raise ProofError(f"no tree of size {size} in a ledger of {self.tree_size()}")
        plan = merkle.inclusion_plan(index, size)
        return plan.combine(self.nodes(plan.node_ids()))

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof from stored nodes. Raises ProofError."""
        if new_size > self.tree_size():
            raise ProofError(f"no tree of size {new_size} in a ledger of {self.tree_size()}")
        plan = merkle.consistency_plan(old_size, new_size)
        return plan.combine(self.nodes(plan.node_ids()))

    def leaf(self, index: int) -> StoredLeaf:
        """The leaf at ``index``. Raises ProofError if there is none."""
        row = self._one(f"SELECT {LEAF_COLUMNS} FROM leaves WHERE idx = ?", (index,))  # noqa: S608
        if row is None:
            raise ProofError(f"no leaf at index {index}")
        return StoredLeaf.from_row(row)

    def find(self, event_id: str) -> StoredLeaf | None:
        """The leaf of an event id (hex), or None (also for a malformed id)."""
        row = self.index.event_row(event_id)
        return None if row is None else StoredLeaf.from_row(row)

    def decision_for(self, subject_id: str) -> StoredLeaf | None:
        """The lowest-index leaf whose ``parent_ref`` is ``subject_id`` (hex) and whose kind
        is one of :data:`ledger.log.index.DECISION_KINDS`, or None (also for a malformed
        id)."""
        row = self.index.decision_row(subject_id)
        return None if row is None else StoredLeaf.from_row(row)

    def contains(self, event_ids: Sequence[str]) -> set[str]:
        """Those of ``event_ids`` (hex) that have a leaf (:meth:`LookupIndex.contains`), for
        readers too (the processor reconciling its journal against the ledger). Raises
        Unavailable."""
        return self.index.contains(event_ids)

    def iter_kinds(self, kinds: Sequence[str], start: int = 0,
                   stop: int | None = None) -> Iterator[StoredLeaf]:
        """Leaves of the given kinds with ``start <= index < stop``, in index order."""
        marks = ",".join("?" * len(kinds))
        end = self.tree_size() if stop is None else stop
        try:
            cursor = self.conn.execute(
                f"SELECT {LEAF_COLUMNS} FROM leaves WHERE idx >= ? AND idx < ? "  # noqa: S608
                f"AND kind IN ({marks}) ORDER BY idx", (start, end, *kinds))
            for row in cursor:
                yield StoredLeaf.from_row(row)
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc

    def iter_leaves(self, start: int = 0) -> Iterator[StoredLeaf]:
        """Leaves in index order from ``start`` (as stored: gaps are not filled in)."""
        cursor = self.conn.execute(f"SELECT {LEAF_COLUMNS} FROM leaves WHERE idx >= ? "  # noqa: S608
                                   "ORDER BY idx", (start,))
        for row in cursor:
            yield StoredLeaf.from_row(row)

    def iter_leaf_rows(self, chunk: int = 4096) -> Iterator[list[tuple[object, ...]]]:
        """Raw ``leaves`` rows (idx, event_id, kind, parent_ref, leaf) in index order, ``chunk``
        at a time, as stored: no type check, no hex (the start-up check reads 1M of them).
        Raises Unavailable."""
        try:
            cursor = self.conn.execute(f"SELECT {LEAF_COLUMNS} FROM leaves ORDER BY idx")  # noqa: S608
            while rows := cursor.fetchmany(chunk):
                yield rows
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc

    def verified(self) -> int | None:
        """The checkpoint size the sequencer verified the whole ledger against when it
        opened it (meta ``verified``: that size and the SHA-256 of that checkpoint's note),
        or None: never, being verified now, or failed. Bound to the stored note, so a marker
        that names another checkpoint counts as none. Raises Unavailable."""
        marker = (self.meta(VERIFIED) or "").split(" ")
        if len(marker) != 2 or not marker[0].isdigit():
            return None
        note = self.checkpoint_at(int(marker[0]))
        if note is None or hashlib.sha256(note.encode()).hexdigest() != marker[1]:
            return None
        return int(marker[0])

    def writer_running(self) -> bool:
        """True while a writer (a sequencer) holds this ledger's lock. Raises Unavailable."""
        return writer_holds(self.path)

    def set_verified(self, size: int | None) -> None:
        """The writer records that it verified the ledger against its checkpoint at
        ``size`` (None: clears the marker, before a check). Raises Unavailable."""
        if self._lock_fd is None:
            raise Unavailable("this ledger store was opened read-only")
        with self._tx():
            self.conn.execute("DELETE FROM meta WHERE key = ?", (VERIFIED,))
            note = None if size is None else self.checkpoint_at(size)
            if note is not None:
                self.conn.execute("INSERT INTO meta VALUES (?, ?)", (VERIFIED, f"{size} "
                                  f"{hashlib.sha256(note.encode()).hexdigest()}"))

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every stored (size, signed note), by size."""
        return [(int(s), str(n)) for s, n in
                self.conn.execute("SELECT size, note FROM checkpoints ORDER BY size")]

    def latest_checkpoint(self) -> tuple[int, str] | None:
        row = self._one("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
        return None if row is None else (int(row[0]), str(row[1]))  # type: ignore[call-overload]

    def checkpoint_at(self, size: int) -> str | None:
        row = self._one("SELECT note FROM checkpoints WHERE size = ?", (size,))
        return None if row is None else str(row[0])

    def offsets(self) -> dict[tuple[str, int], int]:
        return {(str(t), int(p)): int(o) for t, p, o in
                self.conn.execute("SELECT topic, partition, next_offset FROM offsets")}

    # -- the one writer ----------------------------------------------------------------------

    def compact_range(self) -> CompactRange:
        """The right border of the stored tree (loaded once from stored nodes), once the
        batch in flight is settled."""
        self.settle()
        return self._tree()

    def _tree(self) -> CompactRange:
        """The right border of the tree as the last append left it (its COMMIT may still be
        in flight)."""
        if self._compact is None:
            size = self.tree_size()
            self._compact = CompactRange(size, self._border(size))
        return self._compact

    def append(self, records: Sequence[LeafRecord], offsets: Offsets | None = None,
               sign: CheckpointSigner | None = None) -> BatchResult:
        """Append one batch in one transaction: new leaves, their node hashes, their lookup
        keys, the consumer ``offsets`` and, if ``sign`` is given, a checkpoint signed over
        the root recomputed from the stored nodes. Events already stored (or repeated in the
        batch) are skipped: each id is looked up before the insert.

        Requires the writer lock. Raises Unavailable (SQLite) or ProofError (the stored
        root disagrees with the in-memory one); on error nothing is written.
        """
        return self._writer().now(*self._write(records, offsets, sign))

    def append_begin(self, records: Sequence[LeafRecord], offsets: Offsets | None = None,
                     sign: CheckpointSigner | None = None) -> PendingAppend:
        """:meth:`append`, its COMMIT (the WAL write and fsync) left running on the store's
        commit thread: the caller prepares its next batch meanwhile, and the next
        ``append_begin`` hashes and lays out its rows before it waits for this COMMIT.
        Nothing of the batch is sequenced before the returned handle's ``result()`` (or
        :meth:`settle`) returns; any other use of the store waits for it first. A failed
        COMMIT rolls the batch back as if it had never been written: ``result()`` and the
        next use of the store raise Unavailable. Raises as :meth:`append` for the write."""
        return self._writer().begin(*self._write(records, offsets, sign))

    def settle(self) -> BatchResult | None:
        """Wait for the batch in flight, if any: its result, or None. Raises what its
        COMMIT raised (Unavailable)."""
        return None if self._commits is None else self._commits.settle()

    def _writer(self) -> Commits:
        if self._commits is None:
            raise Unavailable("this ledger store was opened read-only")
        return self._commits

    def _write(self, records: Sequence[LeafRecord], offsets: Offsets | None,
               sign: CheckpointSigner | None,
               ) -> tuple[Last, Done, Failed]:
        """Everything of an append but its last statements and the COMMIT, in an open
        transaction; returns those statements (``last``: the index merge) and what to run
        once the COMMIT succeeded (``done``: the result) or failed (``failed``: rolls back,
        forgets the batch, returns the error to raise)."""
        commits, conn, index = self._writer(), self._conn, self._index
        ids = Ids.of(records)
        # While the COMMIT in flight (if any) runs, and then the merged tier's probe for
        # this batch's keys behind it on the commit thread, this thread lays the batch out
        # and hashes it as if no id were stored (again below if one is).
        probe = commits.after_commit(partial(index.merged_candidates, ids.keys))
        layout = appends.lay_out(records, ids, self._tree(), set())
        commits.check()
        base = self._tree()
        try:
            merged = probe()
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc
        with Writing(conn, "ledger"):  # committed by ``commits``: now or on its thread
            stored = index.stored_ids(ids.keys, ids.raw, merged)
            if stored or layout.base is not base:
                layout = appends.lay_out(records, ids, base, stored)
            pending = appends.write(conn, index, layout, offsets)
            note = None if sign is None else self._sign_in_tx(layout.tree, sign)
        self._compact = layout.tree
        appended = len(layout.leaf_rows)
        result = BatchResult(appended, len(records) - appended, TreeSize(layout.tree.size),
                             note)

        def done() -> BatchResult:
            index.remember(pending)
            return result

        def failed(exc: BaseException) -> BaseException:
            self._compact = base
            return write_failed(conn, exc, "ledger", "commit")

        return partial(index.merge, pending.merged), done, failed

    def sign_checkpoint(self, sign: CheckpointSigner) -> str:
        """Sign and store a checkpoint of the current tree (one transaction)."""
        compact = self.compact_range()
        with self._tx():
            return self._sign_in_tx(compact, sign)

    def _sign_in_tx(self, compact: CompactRange, sign: CheckpointSigner) -> str:
        # Recompute the root from what was stored, not from memory (DESIGN.md section 7).
        stored = merkle.fold(self._border(compact.size))
        if stored != compact.root():
            raise ProofError("stored tree disagrees with the sequencer's tree",
                             expected=compact.root().hex(), calculated=stored.hex())
        note = sign(TreeSize(compact.size), stored)
        self.conn.execute("INSERT OR IGNORE INTO checkpoints VALUES (?, ?)", (compact.size, note))
        return note
