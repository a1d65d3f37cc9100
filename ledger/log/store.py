"""The SQLite Merkle log: leaves, stored node hashes, signed checkpoints, consumer offsets.

Schema (one file, WAL, ``synchronous=FULL``)::

    meta(key PRIMARY KEY, value)                 origin, vkey, schema version, indexed,
                                                 verified (the start-up check's marker)
    leaves(idx INTEGER PRIMARY KEY, event_id BLOB, kind, parent_ref BLOB, leaf BLOB)
    hash_pages(page INTEGER PRIMARY KEY, hashes BLOB)
    checkpoints(size INTEGER PRIMARY KEY, note)  signed C2SP checkpoints
    offsets(topic, partition, next_offset)       Kafka positions, same transaction as leaves
    keys(role, k, idx) and recent_keys(b, idx, role, k)   the lookup index, see below

Node hashes: every complete subtree hash is numbered by
:func:`ledger.core.merkle.stored_hash_index` (appending leaf ``i`` writes its leaf hash, then
each subtree it completes, so numbers only grow) and hash number ``h`` lives at byte
``32 * (h % 64)`` of ``hash_pages`` row ``h // 64``. A batch of 1,000 leaves writes ~32
page rows instead of ~2,000 hash rows, and a proof is one ``WHERE page IN (...)`` query of
at most ~2 log2(n) small rows.

Lookup index (event id -> leaf; decision subject -> decision leaf, role 1): a B-tree on
random 32-byte ids dirtied ~1,000 scattered pages per 1,000-leaf batch (85% of the bytes
written at 1M leaves). Instead the key ``k`` (first 8 id bytes, signed) lives in two tiers,
an LSM in one file: a batch's keys go to ``recent_keys`` clustered by ``(bucket, idx)``, the
bucket being the top 5 bits of ``k`` (~100 pages per batch). Once that tier holds
:data:`MERGE_AT` rows, each batch transaction moves its largest bucket, sorted, into
``keys``: a contiguous 1/32 of that B-tree, so merges are small and frequent, not one long
stall. A lookup probes ``keys`` and one ``recent_keys`` bucket, then compares the full id on
the leaf row, so ids sharing a prefix are all stored and found. The only writer enforces
"one leaf per event id" by looking up every id of a batch in its transaction.

Triggers make ``leaves``, ``checkpoints`` and ``keys`` append-only, forbid updates of
``recent_keys`` and let a hash page only grow (its old bytes must stay a prefix): defence in
depth, the audit is what detects tampering.

One writer at a time (an exclusive ``flock`` on ``<db>.lock``); each batch is one
transaction. Readers may open the same file concurrently.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import sqlite_utils

from ledger.core import merkle
from ledger.core.merkle import CompactRange, LeafIndex, NodeId, TreeSize
from ledger.errors import ConfigError, ProofError, Unavailable

SCHEMA_VERSION: Final = "2"
_IN_CHUNK: Final = 900
_PROBE_CHUNK: Final = 30_000 if sqlite3.sqlite_version_info >= (3, 32) else 900  # bind limit
PAGE: Final = 64
_PAGE_BYTES: Final = PAGE * merkle.HASH_SIZE
BUCKET_BITS: Final = 5
BUCKETS: Final = 1 << BUCKET_BITS
MERGE_AT: Final = 1 << 18
"""Rows of ``recent_keys`` above which each batch merges its largest bucket into ``keys``."""
VERIFIED: Final = "verified"
"""Meta key of the sequencer's start-up check result (:meth:`LedgerStore.verified`)."""
ROLE_EVENT: Final = 0
ROLE_SUBJECT: Final = 1
DECISION_KINDS: Final = ("AuthorizationGranted", "AuthorizationDenied", "ExecutionAllowed",
                         "ExecutionRefused")
_LEAF_COLUMNS: Final = "idx, event_id, kind, parent_ref, leaf"

_TRIGGERS = [
    *(f"CREATE TRIGGER IF NOT EXISTS {table}_append_only_{op.lower()} BEFORE {op} ON {table} "
      f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
      for table in ("leaves", "checkpoints", "keys") for op in ("UPDATE", "DELETE")),
    "CREATE TRIGGER IF NOT EXISTS recent_keys_no_update BEFORE UPDATE ON recent_keys "
    "BEGIN SELECT RAISE(ABORT, 'recent_keys rows are never updated'); END",
    "CREATE TRIGGER IF NOT EXISTS hash_pages_append_only_delete BEFORE DELETE ON hash_pages "
    "BEGIN SELECT RAISE(ABORT, 'hash_pages is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS hash_pages_grow_only BEFORE UPDATE ON hash_pages "
    "WHEN NEW.page != OLD.page OR substr(NEW.hashes, 1, length(OLD.hashes)) != OLD.hashes "
    "BEGIN SELECT RAISE(ABORT, 'hash_pages may only grow'); END",
]
_INDEX_TABLES = [
    "CREATE TABLE IF NOT EXISTS keys (role INTEGER NOT NULL, k INTEGER NOT NULL, "
    "idx INTEGER NOT NULL, PRIMARY KEY (role, k, idx)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS recent_keys (b INTEGER NOT NULL, idx INTEGER NOT NULL, "
    "role INTEGER NOT NULL, k INTEGER NOT NULL, PRIMARY KEY (b, idx, role)) WITHOUT ROWID",
    "DROP INDEX IF EXISTS leaves_event_id",  # schema 1: the UNIQUE index this replaces
]
_PRAGMAS = ("synchronous=FULL", "temp_store=MEMORY", "busy_timeout=10000",
            "secure_delete=OFF")  # deleted rows are recent_keys copies of public ids
_KIND_MARKS = ", ".join(f"?{5 + n}" for n in range(len(DECISION_KINDS)))
_LOOKUP = (f"SELECT {_LEAF_COLUMNS} FROM leaves WHERE idx IN (SELECT idx FROM keys "  # noqa: S608
           "WHERE role = ?1 AND k = ?2 UNION ALL SELECT idx FROM recent_keys WHERE b = ?3 "
           "AND role = ?1 AND k = ?2) AND {match} ORDER BY idx LIMIT 1")

Offsets = Mapping[tuple[str, int], int]
CheckpointSigner = Callable[[TreeSize, bytes], str]
"""Signs the checkpoint of (size, root) and returns the signed note text."""


def lookup_key(raw_id: bytes) -> int:
    """The index key of a 32-byte id: its first 8 bytes as a signed big-endian integer."""
    return int.from_bytes(raw_id[:8], "big", signed=True)


def bucket(k: int) -> int:
    """The ``recent_keys`` bucket of key ``k``: its top BUCKET_BITS bits, a key range."""
    return (k >> (64 - BUCKET_BITS)) + BUCKETS // 2


def _subject_row(idx: int, parent: bytes) -> tuple[int, int, int, int]:
    """The ``recent_keys`` row that lets :meth:`LedgerStore.decision_for` find decision
    leaf ``idx`` (one of :data:`DECISION_KINDS`) by its ``parent`` id."""
    k = lookup_key(parent)
    return (bucket(k), idx, ROLE_SUBJECT, k)


@dataclass(frozen=True, slots=True)
class LeafRecord:
    """A verified event ready to become a leaf. ``event_id`` and ``parent_ref`` are hex."""

    event_id: str
    kind: str
    leaf: bytes
    parent_ref: str | None = None


@dataclass(frozen=True, slots=True)
class StoredLeaf:
    index: LeafIndex
    event_id: str
    kind: str
    parent_ref: str | None
    leaf: bytes


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one append transaction did."""

    appended: int
    duplicates: int
    tree_size: TreeSize
    checkpoint: str | None


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            if not path.exists():
                raise ConfigError(f"no ledger database at {path}")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
        for pragma in _PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
        conn.execute(f"PRAGMA cache_size={-65536 if readonly else -262144}")  # KiB
    except sqlite3.Error as exc:
        raise Unavailable(f"cannot open ledger database {path}: {exc}") from exc
    return conn


class LedgerStore:
    """A ledger database. ``writer=True`` takes the single-writer lock and may append;
    ``merge_at`` (rows of ``recent_keys`` before a merge) exists for tests.

    Raises ConfigError (missing file for a reader), Unavailable (SQLite, lock held) or, for a
    writer, ProofError (the lookup index claims more leaves than are stored).
    """

    def __init__(self, path: Path, *, writer: bool = False, merge_at: int = MERGE_AT) -> None:
        self.path, self.merge_at = path, merge_at
        self._lock_fd: int | None = None
        self._compact: CompactRange | None = None
        # writer: recent_keys rows of role ROLE_EVENT, k -> idx (prefix collisions in _clash)
        self._recent: dict[int, int] = {}
        self._clash: list[tuple[int, int]] = []
        self._bucket_rows = [0] * BUCKETS
        if writer:
            try:
                self._lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:  # a full disk or a read-only directory
                raise Unavailable(f"cannot open {path}.lock: {exc}") from exc
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(self._lock_fd)
                raise Unavailable(f"another writer holds {path}.lock") from exc
        try:
            self.conn = _connect(path, readonly=not writer)
            self.db = sqlite_utils.Database(self.conn)
            if writer:
                self._create_schema()
                self._catch_up_index()
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
            for statement in (*_INDEX_TABLES, *_TRIGGERS):
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

    def close(self) -> None:
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

    # -- plumbing --------------------------------------------------------------------------

    def _tx(self) -> _Transaction:
        return _Transaction(self.conn)

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
        pages = self._pages(sorted({i // PAGE for i in ids}))
        out: dict[int, bytes] = {}
        for i in ids:
            blob = pages.get(i // PAGE)
            at = (i % PAGE) * merkle.HASH_SIZE
            if blob is not None and at + merkle.HASH_SIZE <= len(blob):
                out[i] = blob[at:at + merkle.HASH_SIZE]
        return out

    def _pages(self, pages: Sequence[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        try:
            for start in range(0, len(pages), _IN_CHUNK):
                chunk = pages[start:start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                out.update(self.conn.execute(
                    f"SELECT page, hashes FROM hash_pages WHERE page IN ({marks})",  # noqa: S608
                    chunk))
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc
        return out

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
        try:
            raw = bytes.fromhex(event_id)
        except ValueError:
            return None
        return self._lookup(ROLE_EVENT, raw, "event_id = ?4", (raw,))

    def decision_for(self, subject_id: str) -> StoredLeaf | None:
        """The lowest-index leaf whose ``parent_ref`` is ``subject_id`` (hex) and whose kind
        is one of :data:`DECISION_KINDS`, or None (also for a malformed id)."""
        try:
            raw = bytes.fromhex(subject_id)
        except ValueError:
            return None
        return self._lookup(ROLE_SUBJECT, raw, f"parent_ref = ?4 AND kind IN ({_KIND_MARKS})",
                            (raw, *DECISION_KINDS))

    def _lookup(self, role: int, raw: bytes, match: str,
                params: tuple[object, ...]) -> StoredLeaf | None:
        k = lookup_key(raw)
        row = self._one(_LOOKUP.format(match=match), (role, k, bucket(k), *params))
        return None if row is None else _stored(row)

    def contains(self, event_ids: Sequence[str]) -> set[str]:
        """Those of ``event_ids`` (hex) that have a leaf: a few queries per 30,000 ids, for
        readers too (the processor reconciling its journal against the ledger). Malformed
        ids are never contained. Raises Unavailable."""
        raws = set()
        for event_id in event_ids:
            with contextlib.suppress(ValueError):
                raws.add(bytes.fromhex(event_id))
        keys = sorted({lookup_key(raw) for raw in raws})
        candidates: list[int] = []
        try:
            for start in range(0, len(keys), _PROBE_CHUNK):
                chunk = keys[start:start + _PROBE_CHUNK]
                marks = ",".join("?" * len(chunk))
                for table in ("keys", "recent_keys"):
                    candidates.extend(idx for (idx,) in self.conn.execute(
                        f"SELECT idx FROM {table} WHERE role = {ROLE_EVENT} "  # noqa: S608
                        f"AND k IN ({marks})", chunk))
            found: set[str] = set()
            for start in range(0, len(candidates), _IN_CHUNK):
                chunk = candidates[start:start + _IN_CHUNK]
                found.update(raw.hex() for (raw,) in self.conn.execute(
                    f"SELECT event_id FROM leaves WHERE idx IN ({','.join('?' * len(chunk))})",  # noqa: S608
                    chunk) if raw in raws)
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc
        return found

    def iter_kinds(self, kinds: Sequence[str], start: int = 0,
                   stop: int | None = None) -> Iterator[StoredLeaf]:
        """Leaves of the given kinds with ``start <= index < stop``, in index order."""
        marks = ",".join("?" * len(kinds))
        end = self.tree_size() if stop is None else stop
        try:
            cursor = self.conn.execute(
                f"SELECT {_LEAF_COLUMNS} FROM leaves WHERE idx >= ? AND idx < ? "  # noqa: S608
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

    def iter_hash_pages(self) -> Iterator[tuple[int, bytes]]:
        """(page number, page bytes) in page order, as stored."""
        yield from self.conn.execute("SELECT page, hashes FROM hash_pages ORDER BY page")

    def iter_leaf_rows(self, chunk: int = 4096) -> Iterator[list[tuple[object, ...]]]:
        """Raw ``leaves`` rows (idx, event_id, kind, parent_ref, leaf) in index order, ``chunk``
        at a time, as stored: no type check, no hex (the start-up check reads 1M of them).
        Raises Unavailable."""
        try:
            cursor = self.conn.execute(f"SELECT {_LEAF_COLUMNS} FROM leaves ORDER BY idx")  # noqa: S608
            while rows := cursor.fetchmany(chunk):
                yield rows
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc

    def iter_index_rows(self) -> Iterator[tuple[object, ...]]:
        """Every lookup-index row (role, k, idx) of both tiers, as stored. Raises Unavailable."""
        try:
            for table in ("keys", "recent_keys"):
                yield from self.conn.execute(f"SELECT role, k, idx FROM {table}")  # noqa: S608
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
        """True while a writer (a sequencer) holds this ledger's lock: a shared lock on
        ``<db>.lock`` is refused then. Raises Unavailable if the lock file cannot be read."""
        try:
            fd = os.open(f"{self.path}.lock", os.O_RDONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            raise Unavailable(f"cannot open {self.path}.lock: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError as exc:
            raise Unavailable(f"cannot probe {self.path}.lock: {exc.strerror}") from exc
        finally:
            os.close(fd)
        return False

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

    def indexed(self) -> int:
        """How many leaves the lookup index covers (meta ``indexed``; a writer's open indexes
        the rest). Raises ProofError if the value is not a count."""
        recorded = self.meta("indexed") or "0"
        if not recorded.isdigit():
            raise ProofError(f"the lookup index records {recorded!r} indexed leaves")
        return int(recorded)

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
        raw_ids = [bytes.fromhex(r.event_id) for r in records]
        from_bytes, shift, half = int.from_bytes, 64 - BUCKET_BITS, BUCKETS // 2
        keys = [from_bytes(raw[:8], "big", signed=True) for raw in raw_ids]  # lookup_key
        compact = self.compact_range()
        size0, border0 = compact.size, list(compact.hashes)
        try:
            with self._tx():
                seen = self._stored_ids(keys, raw_ids)
                leaf_rows: list[tuple[int, bytes, str, bytes | None, bytes]] = []
                key_rows: list[tuple[int, int, int, int]] = []
                new_recent: list[tuple[int, int]] = []
                for record, raw, k in zip(records, raw_ids, keys, strict=True):
                    if raw in seen:
                        continue
                    seen.add(raw)
                    idx = size0 + len(leaf_rows)
                    parent = None if record.parent_ref is None else bytes.fromhex(
                        record.parent_ref)
                    leaf_rows.append((idx, raw, record.kind, parent, record.leaf))
                    key_rows.append(((k >> shift) + half, idx, ROLE_EVENT, k))  # bucket(k)
                    new_recent.append((k, idx))
                    if parent is not None and record.kind in DECISION_KINDS:
                        key_rows.append(_subject_row(idx, parent))
                new_hashes = compact.append_leaves([row[4] for row in leaf_rows])
                self.conn.executemany("INSERT INTO leaves VALUES (?, ?, ?, ?, ?)", leaf_rows)
                self._write_hashes(merkle.stored_hash_count(size0), new_hashes)
                merged = self._write_keys(key_rows, compact.size)
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
        self._remember(new_recent, *merged)
        return BatchResult(len(leaf_rows), len(records) - len(leaf_rows),
                           TreeSize(compact.size), note)

    def _stored_ids(self, keys: Sequence[int], raw_ids: Sequence[bytes]) -> set[bytes]:
        """Those of ``raw_ids`` already stored: prefix hits in both tiers, then full ids."""
        recent = self._recent
        candidates = [i for k in keys if (i := recent.get(k)) is not None]
        if self._clash:
            wanted_keys = set(keys)
            candidates.extend(i for k, i in self._clash if k in wanted_keys)
        for start in range(0, len(keys), _PROBE_CHUNK):
            chunk = keys[start:start + _PROBE_CHUNK]
            candidates.extend(idx for (idx,) in self.conn.execute(
                f"SELECT idx FROM keys WHERE role = {ROLE_EVENT} AND k IN "  # noqa: S608
                f"({','.join('?' * len(chunk))})", chunk))
        if not candidates:
            return set()
        wanted, found = set(raw_ids), set[bytes]()
        for start in range(0, len(candidates), _IN_CHUNK):
            chunk = candidates[start:start + _IN_CHUNK]
            found.update(raw for (raw,) in self.conn.execute(
                f"SELECT event_id FROM leaves WHERE idx IN ({','.join('?' * len(chunk))})",  # noqa: S608
                chunk) if raw in wanted)
        return found

    def _write_keys(self, key_rows: list[tuple[int, int, int, int]], size: int,
                    limit: int | None = None) -> tuple[list[int], set[int], list[int]]:
        """Insert the batch's lookup keys, record that leaves below ``size`` are indexed, and
        while ``recent_keys`` holds ``limit`` (default ``merge_at``) rows or more, move its
        largest bucket into ``keys``. Call inside the batch transaction. Returns the new rows
        per bucket, the merged buckets and the ROLE_EVENT keys that left the recent tier."""
        self.conn.executemany("INSERT INTO recent_keys VALUES (?, ?, ?, ?)", key_rows)
        self.conn.execute("INSERT INTO meta VALUES ('indexed', ?) ON CONFLICT(key) DO UPDATE "
                          "SET value = excluded.value", (str(size),))
        counts = list(self._bucket_rows)
        for row in key_rows:
            counts[row[0]] += 1
        merged: set[int] = set()
        gone: list[int] = []
        limit = self.merge_at if limit is None else limit
        while (total := sum(counts)) and total >= limit:
            b = max(range(BUCKETS), key=counts.__getitem__)
            gone.extend(k for (k,) in self.conn.execute(
                "SELECT k FROM recent_keys WHERE b = ? AND role = ?", (b, ROLE_EVENT)))
            self.conn.execute("INSERT INTO keys SELECT role, k, idx FROM recent_keys "
                              "WHERE b = ? ORDER BY role, k, idx", (b,))
            self.conn.execute("DELETE FROM recent_keys WHERE b = ?", (b,))
            counts[b] = 0
            merged.add(b)
        return counts, merged, gone

    def _remember(self, new_recent: list[tuple[int, int]], counts: list[int],
                  merged: set[int], gone: list[int]) -> None:
        """After a commit: mirror ``recent_keys`` (role ROLE_EVENT, k -> idx) in memory."""
        self._bucket_rows = counts
        recent = self._recent
        for k in gone:
            recent.pop(k, None)
        if merged:
            self._clash = [(k, i) for k, i in self._clash if bucket(k) not in merged]
            new_recent = [(k, i) for k, i in new_recent if bucket(k) not in merged]
        batch = dict(new_recent)
        if len(batch) == len(new_recent) and recent.keys().isdisjoint(batch):
            recent.update(batch)
            return
        for k, idx in new_recent:  # two ids share an 8-byte prefix: keep both
            if recent.setdefault(k, idx) != idx:
                self._clash.append((k, idx))

    def _catch_up_index(self) -> None:
        """Writer open: index leaves stored without keys (a schema 1 ledger, or leaves
        written by other means) straight into ``keys``, then load the recent tier. Raises
        ProofError if the index claims more leaves than are stored (rows deleted)."""
        size, recorded = self.tree_size(), self.meta("indexed") or "0"
        if not recorded.isdigit():
            raise ProofError(f"the lookup index records {recorded!r} indexed leaves")
        indexed = int(recorded)
        if indexed > size:
            raise ProofError(f"the lookup index covers {indexed} leaves, the ledger has {size}")
        if indexed < size:
            with self._tx():
                rows: list[tuple[int, int, int, int]] = []
                for idx, raw, kind, parent in self.conn.execute(
                        "SELECT idx, event_id, kind, parent_ref FROM leaves WHERE idx >= ?",
                        (indexed,)):
                    if not isinstance(raw, bytes):
                        raise ProofError(f"leaf {idx} has no binary event id")
                    k = lookup_key(raw)
                    rows.append((bucket(k), idx, ROLE_EVENT, k))
                    if isinstance(parent, bytes) and kind in DECISION_KINDS:
                        rows.append(_subject_row(idx, parent))
                self._write_keys(rows, size, limit=0)
        self._recent, self._clash, self._bucket_rows = {}, [], [0] * BUCKETS
        counts = [0] * BUCKETS
        recent: list[tuple[int, int]] = []
        for b, role, k, idx in self.conn.execute(
                "SELECT b, role, k, idx FROM recent_keys ORDER BY idx"):
            counts[b] += 1
            if role == ROLE_EVENT:
                recent.append((k, idx))
        self._remember(recent, counts, set(), [])

    def _write_hashes(self, first_id: int, hashes: list[bytes]) -> None:
        if not hashes:
            return
        blob = b"".join(hashes)
        page, offset = divmod(first_id, PAGE)
        if offset:  # extend the partial last page
            prefix = self._pages([page]).get(page, b"")
            if len(prefix) != offset * merkle.HASH_SIZE:
                raise ProofError(f"hash page {page} has {len(prefix)} bytes, expected "
                                 f"{offset * merkle.HASH_SIZE}")
            blob = prefix + blob
        rows = [(page + n, blob[start:start + _PAGE_BYTES])
                for n, start in enumerate(range(0, len(blob), _PAGE_BYTES))]
        self.conn.executemany("INSERT INTO hash_pages VALUES (?, ?) ON CONFLICT(page) "
                              "DO UPDATE SET hashes = excluded.hashes", rows)

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

class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error; SQLite errors become Unavailable."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger write failed: {exc}") from exc

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if kind is None:
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.Error as err:
                raise Unavailable(f"ledger commit failed: {err}{self._rollback()}") from err
        undone = self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise Unavailable(f"ledger write failed: {exc}{undone}") from exc
        if undone and exc is not None:  # the original error (a ProofError) goes on
            exc.add_note(f"ledger write:{undone}")

    def _rollback(self) -> str:
        """Roll back what is left of the transaction; "" or why that failed.

        SQLite may already have rolled back (SQLITE_FULL, SQLITE_IOERR: then a ROLLBACK
        fails with "no transaction is active"); a ROLLBACK that fails otherwise leaves the
        connection unusable, which the caller's Unavailable reports: it stops the writer.
        """
        if not self.conn.in_transaction:
            return ""
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error as err:
            return f" (and the rollback failed: {err})"
        return ""


def _stored(row: tuple[object, ...]) -> StoredLeaf:
    idx, event_id, kind, parent, leaf = row
    if not (isinstance(idx, int) and isinstance(event_id, bytes) and isinstance(leaf, bytes)):
        raise ProofError(f"leaf row {idx!r} has the wrong column types")
    return StoredLeaf(LeafIndex(idx), event_id.hex(), str(kind),
                      parent.hex() if isinstance(parent, bytes) else None, leaf)
