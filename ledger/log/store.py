"""The SQLite Merkle log: leaves, stored node hashes, signed checkpoints, consumer offsets.

Schema (one file, WAL, ``synchronous=FULL``)::

    meta(key PRIMARY KEY, value)                 origin, vkey, schema version, indexed,
                                                 verified (the start-up check's marker)
    leaves(idx INTEGER PRIMARY KEY, event_id BLOB, kind, parent_ref BLOB, leaf BLOB)
    hash_pages(page INTEGER PRIMARY KEY, hashes BLOB)
    checkpoints(size INTEGER PRIMARY KEY, note)  signed C2SP checkpoints
    offsets(topic, partition, next_offset)       Kafka positions, same transaction as leaves
    keys(role, k, idx) and recent_keys(b, idx, role, k)   the lookup index (index.py)

Node hashes live in pages of 64 (:mod:`ledger.log.pages`), so a proof is one small query;
the lookup index (event id -> leaf, decision subject -> decision leaf) is an LSM in ``keys``
and ``recent_keys`` kept by :class:`ledger.log.index.LookupIndex`, which the store owns and
writes in each batch's transaction. Triggers make ``leaves``, ``checkpoints`` (and, from
those modules, ``keys`` and ``hash_pages``) append-only: defence in depth; the audit is
what detects tampering.

One writer at a time (an exclusive ``flock`` on ``<db>.lock``); each batch is one
transaction. Readers may open the same file concurrently. Opened by
:func:`ledger.log.sqlite.open_sqlite`.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import sqlite_utils

from ledger.core import merkle
from ledger.core.merkle import CompactRange, LeafIndex, NodeId, TreeSize
from ledger.errors import ConfigError, ProofError, Unavailable
from ledger.log.index import LEAF_COLUMNS, MERGE_AT, LookupIndex, NewLeaf
from ledger.log.index import SCHEMA as INDEX_SCHEMA
from ledger.log.pages import PAGE_TRIGGERS, read_hashes, write_hashes
from ledger.log.records import BatchResult, CheckpointSigner, LeafRecord, Offsets, StoredLeaf
from ledger.log.sqlite import (
    Transaction,
    WalCheckpointer,
    insert_rows,
    lock_writer,
    open_sqlite,
    writer_holds,
)

SCHEMA_VERSION: Final = "2"
VERIFIED: Final = "verified"
"""Meta key of the sequencer's start-up check result (:meth:`LedgerStore.verified`)."""

_TRIGGERS = [
    *(f"CREATE TRIGGER IF NOT EXISTS {table}_append_only_{op.lower()} BEFORE {op} ON {table} "
      f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
      for table in ("leaves", "checkpoints") for op in ("UPDATE", "DELETE")),
    *PAGE_TRIGGERS,
]
_PRAGMAS = ("temp_store=MEMORY", "secure_delete=OFF")  # deleted rows: recent_keys copies
_CACHE_KIB: Final = {True: 65536, False: 262144}  # by readonly: the writer walks more pages

class LedgerStore:
    """A ledger database. ``writer=True`` takes the single-writer lock and may append;
    ``merge_at`` (rows of ``recent_keys`` before a merge) exists for tests. ``index`` is its
    :class:`ledger.log.index.LookupIndex`, written in each append's transaction.

    Raises ConfigError (missing file for a reader), Unavailable (SQLite, lock held) or, for a
    writer, ProofError (the lookup index claims more leaves than are stored).
    """

    def __init__(self, path: Path, *, writer: bool = False, merge_at: int = MERGE_AT) -> None:
        self.path = path
        self._lock_fd: int | None = None
        self._compact: CompactRange | None = None
        self._checkpointer: WalCheckpointer | None = None
        if writer:
            self._lock_fd = lock_writer(path)
        try:
            self.conn = open_sqlite(path, "ledger database", readonly=not writer, pragmas=(
                *_PRAGMAS, f"cache_size={-_CACHE_KIB[not writer]}",
                *(("wal_autocheckpoint=0",) if writer else ())))
            self.db = sqlite_utils.Database(self.conn)
            self.index = LookupIndex(self.conn, merge_at)
            if writer:
                self._create_schema()
                self.index.catch_up(self.tree_size())
                self._checkpointer = WalCheckpointer(path, "ledger database")
        except BaseException:
            self.close()
            raise

    # -- schema and metadata -------------------------------------------------------------

    def _create_schema(self) -> None:
        db = self.db
        with self._tx():
            db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
            db.table("leaves").create({"idx": int, "event_id": bytes, "kind": str,
                                 "parent_ref": bytes, "leaf": bytes}, pk="idx",
                                not_null={"event_id", "kind", "leaf"}, if_not_exists=True)
            db.table("hash_pages").create({"page": int, "hashes": bytes}, pk="page",
                                    not_null={"hashes"}, if_not_exists=True)
            db.table("checkpoints").create({"size": int, "note": str}, pk="size",
                                     not_null={"note"}, if_not_exists=True)
            db.table("offsets").create({"topic": str, "partition": int, "next_offset": int},
                                 pk=("topic", "partition"), if_not_exists=True)
            for statement in (*INDEX_SCHEMA, *_TRIGGERS):
                self.conn.execute(statement)
            self.conn.execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT(key) DO "
                              "UPDATE SET value = excluded.value", (SCHEMA_VERSION,))

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

    def fold_wal(self) -> None:
        """Fold the WAL into the database file and leave WAL mode (rollback-journal mode
        deletes the WAL), so the one file holds everything: a new ledger is moved into
        place that way. The next writer turns WAL back on. Stops this writer's checkpoint
        thread, whose connection would keep the mode from changing. Raises Unavailable."""
        self._stop_checkpointer()
        try:
            self.conn.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot fold the write-ahead log of {self.path}: {exc}") from exc

    def _stop_checkpointer(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    def close(self) -> None:
        self._stop_checkpointer()
        conn = getattr(self, "conn", None)
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
        """Stored hashes by hash number, in one query per 900 pages; absent ones left out."""
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
        plan = merkle.root_plan(size)
        found = self.nodes(plan)
        if len(found) != len(plan):
            raise ProofError(f"stored nodes for the root at size {size} are missing")
        return merkle.fold([found[n] for n in plan])

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
        row = self._one("SELECT idx, event_id, kind, parent_ref, leaf FROM leaves "
                        "WHERE idx = ?", (index,))
        if row is None:
            raise ProofError(f"no leaf at index {index}")
        return _stored(row)

    def find(self, event_id: str) -> StoredLeaf | None:
        """The leaf of an event id (hex), or None (also for a malformed id)."""
        row = self.index.event_row(event_id)
        return None if row is None else _stored(row)

    def decision_for(self, subject_id: str) -> StoredLeaf | None:
        """The lowest-index leaf whose ``parent_ref`` is ``subject_id`` (hex) and whose kind
        is one of :data:`ledger.log.index.DECISION_KINDS`, or None (also for a malformed
        id)."""
        row = self.index.decision_row(subject_id)
        return None if row is None else _stored(row)

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
                yield _stored(row)
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc

    def iter_leaves(self, start: int = 0) -> Iterator[StoredLeaf]:
        """Leaves in index order from ``start`` (as stored: gaps are not filled in)."""
        cursor = self.conn.execute("SELECT idx, event_id, kind, parent_ref, leaf FROM leaves "
                                   "WHERE idx >= ? ORDER BY idx", (start,))
        for row in cursor:
            yield _stored(row)

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
        """The right border of the stored tree (loaded once from stored nodes)."""
        if self._compact is None:
            size = self.tree_size()
            plan = merkle.root_plan(size)
            found = self.nodes(plan)
            if len(found) != len(plan):
                raise ProofError(f"stored nodes for the tree of size {size} are missing")
            self._compact = CompactRange(size, [found[n] for n in plan])
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
        if self._lock_fd is None:
            raise Unavailable("this ledger store was opened read-only")
        if self._checkpointer is not None:
            self._checkpointer.check()
        raw_ids = [bytes.fromhex(r.event_id) for r in records]
        from_bytes = int.from_bytes
        keys = [from_bytes(raw[:8], "big", signed=True) for raw in raw_ids]  # lookup_key
        compact = self.compact_range()
        size0, border0 = compact.size, list(compact.hashes)
        try:
            with self._tx():
                seen = self.index.stored_ids(keys, raw_ids)
                leaf_rows: list[tuple[int, bytes, str, bytes | None, bytes]] = []
                new_leaves: list[NewLeaf] = []
                for record, raw, k in zip(records, raw_ids, keys, strict=True):
                    if raw in seen:
                        continue
                    seen.add(raw)
                    idx = size0 + len(leaf_rows)
                    parent = None if record.parent_ref is None else bytes.fromhex(
                        record.parent_ref)
                    leaf_rows.append((idx, raw, record.kind, parent, record.leaf))
                    new_leaves.append((idx, k, record.kind, parent))
                new_hashes = compact.append_leaves([row[4] for row in leaf_rows])
                insert_rows(self.conn, "INSERT INTO leaves", 5, leaf_rows)
                write_hashes(self.conn, merkle.stored_hash_count(size0), new_hashes)
                pending = self.index.write(new_leaves, compact.size)
                if offsets:
                    self.conn.executemany(
                        "INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT(topic, partition) "
                        "DO UPDATE SET next_offset = excluded.next_offset",
                        [(t, p, o) for (t, p), o in offsets.items()])
                note = None
                if sign is not None:
                    note = self._sign_in_tx(compact, sign)
        except BaseException:
            compact.size, compact.hashes = size0, border0
            raise
        self.index.remember(pending)
        if self._checkpointer is not None:
            self._checkpointer.poke()
        return BatchResult(len(leaf_rows), len(records) - len(leaf_rows),
                           TreeSize(compact.size), note)

    def sign_checkpoint(self, sign: CheckpointSigner) -> str:
        """Sign and store a checkpoint of the current tree (one transaction)."""
        compact = self.compact_range()
        with self._tx():
            return self._sign_in_tx(compact, sign)

    def _sign_in_tx(self, compact: CompactRange, sign: CheckpointSigner) -> str:
        # Recompute the root from what was stored, not from memory (DESIGN.md section 7).
        stored = merkle.fold(list(self.nodes(merkle.root_plan(compact.size)).values()))
        if stored != compact.root():
            raise ProofError("stored tree disagrees with the sequencer's tree",
                             expected=compact.root().hex(), calculated=stored.hex())
        note = sign(TreeSize(compact.size), stored)
        self.conn.execute("INSERT OR IGNORE INTO checkpoints VALUES (?, ?)", (compact.size, note))
        return note

def _stored(row: tuple[object, ...]) -> StoredLeaf:
    idx, event_id, kind, parent, leaf = row
    if not (isinstance(idx, int) and isinstance(event_id, bytes) and isinstance(leaf, bytes)):
        raise ProofError(f"leaf row {idx!r} has the wrong column types")
    return StoredLeaf(LeafIndex(idx), event_id.hex(), str(kind),
                      parent.hex() if isinstance(parent, bytes) else None, leaf)
