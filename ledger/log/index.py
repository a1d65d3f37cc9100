"""The ledger's lookup index: event id -> leaf, decision subject -> decision leaf.

A B-tree on random 32-byte ids dirtied ~1,000 scattered pages per 1,000-leaf batch (85% of
the bytes written at 1M leaves). Instead the key ``k`` (first 8 id bytes, signed) lives in
two tiers, an LSM in the ledger's one file::

    keys(role, k, idx)                 merged, a B-tree clustered by (role, k, idx)
    recent_keys(b, idx, role, k)       the latest batches, clustered by (bucket, idx)

A batch's keys go to ``recent_keys``, the bucket being the top 5 bits of ``k`` (~100 pages
per batch). Once that tier holds :data:`MERGE_AT` rows, each batch transaction moves its
largest bucket, sorted, into ``keys``: a contiguous 1/32 of that B-tree, so merges are small
and frequent, not one long stall. A lookup probes ``keys`` and one ``recent_keys`` bucket,
then compares the full id on the leaf row, so ids sharing a prefix are all stored and found.
The only writer enforces "one leaf per event id" by looking up every id of a batch in its
transaction (:meth:`LookupIndex.stored_ids`), helped by an in-memory mirror of the recent
tier. Meta ``indexed`` records how many leaves the index covers.

:class:`LookupIndex` works on the connection of the :class:`ledger.log.store.LedgerStore`
that owns it; the store runs the batch transactions.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from ledger.errors import ProofError, Unavailable
from ledger.log.sqlite import MAX_VARIABLES, VARIABLES, Transaction, insert_rows

IN_CHUNK: Final = VARIABLES
_PROBE_CHUNK: Final = MAX_VARIABLES
BUCKET_BITS: Final = 5
BUCKETS: Final = 1 << BUCKET_BITS
MERGE_AT: Final = 1 << 18
"""Rows of ``recent_keys`` above which each batch merges its largest bucket into ``keys``."""
ROLE_EVENT: Final = 0
ROLE_SUBJECT: Final = 1
DECISION_KINDS: Final = ("AuthorizationGranted", "AuthorizationDenied", "ExecutionAllowed",
                         "ExecutionRefused")
LEAF_COLUMNS: Final = "idx, event_id, kind, parent_ref, leaf"

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS keys (role INTEGER NOT NULL, k INTEGER NOT NULL, "
    "idx INTEGER NOT NULL, PRIMARY KEY (role, k, idx)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS recent_keys (b INTEGER NOT NULL, idx INTEGER NOT NULL, "
    "role INTEGER NOT NULL, k INTEGER NOT NULL, PRIMARY KEY (b, idx, role)) WITHOUT ROWID",
    "DROP INDEX IF EXISTS leaves_event_id",  # schema 1: the UNIQUE index this replaces
    *(f"CREATE TRIGGER IF NOT EXISTS keys_append_only_{op.lower()} BEFORE {op} ON keys "
      "BEGIN SELECT RAISE(ABORT, 'keys is append-only'); END" for op in ("UPDATE", "DELETE")),
    "CREATE TRIGGER IF NOT EXISTS recent_keys_no_update BEFORE UPDATE ON recent_keys "
    "BEGIN SELECT RAISE(ABORT, 'recent_keys rows are never updated'); END",
)
"""The index tables and their triggers (``keys`` append-only, ``recent_keys`` rows never
updated: defence in depth, the audit is what detects tampering)."""
_KIND_MARKS = ", ".join(f"?{5 + n}" for n in range(len(DECISION_KINDS)))
_LOOKUP = (f"SELECT {LEAF_COLUMNS} FROM leaves WHERE idx IN (SELECT idx FROM keys "  # noqa: S608
           "WHERE role = ?1 AND k = ?2 UNION ALL SELECT idx FROM recent_keys WHERE b = ?3 "
           "AND role = ?1 AND k = ?2) AND {match} ORDER BY idx LIMIT 1")

KeyRow = tuple[int, int, int, int]
"""A ``recent_keys`` row: (bucket, idx, role, k)."""
NewLeaf = tuple[int, int, str, bytes | None]
"""A leaf to index: (idx, lookup key of its event id, kind, raw parent id or None)."""


def lookup_key(raw_id: bytes) -> int:
    """The index key of a 32-byte id: its first 8 bytes as a signed big-endian integer."""
    return int.from_bytes(raw_id[:8], "big", signed=True)


def bucket(k: int) -> int:
    """The ``recent_keys`` bucket of key ``k``: its top BUCKET_BITS bits, a key range."""
    return (k >> (64 - BUCKET_BITS)) + BUCKETS // 2


def _subject_row(idx: int, parent: bytes) -> KeyRow:
    """The ``recent_keys`` row that lets :meth:`LookupIndex.decision_row` find decision
    leaf ``idx`` (one of :data:`DECISION_KINDS`) by its ``parent`` id."""
    k = lookup_key(parent)
    return (bucket(k), idx, ROLE_SUBJECT, k)


def key_rows(leaves: Sequence[NewLeaf]) -> tuple[list[KeyRow], list[tuple[int, int]]]:
    """The index rows of new leaves, and their (k, idx) ROLE_EVENT pairs."""
    shift, half = 64 - BUCKET_BITS, BUCKETS // 2
    rows: list[KeyRow] = []
    for idx, k, kind, parent in leaves:
        rows.append(((k >> shift) + half, idx, ROLE_EVENT, k))  # bucket(k), inlined: hot
        if parent is not None and kind in DECISION_KINDS:
            rows.append(_subject_row(idx, parent))
    return rows, [(k, idx) for idx, k, _, _ in leaves]


@dataclass(frozen=True, slots=True)
class PendingKeys:
    """What a batch's :meth:`LookupIndex.write` changed, for :meth:`LookupIndex.remember`
    once the transaction commits: ROLE_EVENT (k, idx) pairs added, rows per bucket, and the
    buckets :meth:`LookupIndex.merge` moves into ``keys`` in that transaction."""

    added: list[tuple[int, int]]
    counts: list[int]
    merged: list[int]


class LookupIndex:
    """The two-tier index on ``conn``; ``merge_at`` (rows of ``recent_keys`` before a
    merge) exists for tests. Only the writer's instance writes and keeps the mirror."""

    def __init__(self, conn: sqlite3.Connection, merge_at: int = MERGE_AT) -> None:
        self.conn, self.merge_at = conn, merge_at
        # writer: recent_keys rows of role ROLE_EVENT, k -> idx, one dict per bucket (a
        # merged bucket's dict is dropped whole); prefix collisions in _clash
        self._recent: list[dict[int, int]] = [{} for _ in range(BUCKETS)]
        self._clash: list[tuple[int, int]] = []
        self._bucket_rows = [0] * BUCKETS

    # -- reads -----------------------------------------------------------------------------

    def _one(self, sql: str, params: Sequence[object]) -> tuple[object, ...] | None:
        try:
            row: tuple[object, ...] | None = self.conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc
        return row

    def event_row(self, event_id: str) -> tuple[object, ...] | None:
        """The ``leaves`` row of an event id (hex), or None (also for a malformed id)."""
        try:
            raw = bytes.fromhex(event_id)
        except ValueError:
            return None
        return self._lookup(ROLE_EVENT, raw, "event_id = ?4", (raw,))

    def decision_row(self, subject_id: str) -> tuple[object, ...] | None:
        """The lowest-index ``leaves`` row whose ``parent_ref`` is ``subject_id`` (hex) and
        whose kind is one of :data:`DECISION_KINDS`, or None (also for a malformed id)."""
        try:
            raw = bytes.fromhex(subject_id)
        except ValueError:
            return None
        return self._lookup(ROLE_SUBJECT, raw, f"parent_ref = ?4 AND kind IN ({_KIND_MARKS})",
                            (raw, *DECISION_KINDS))

    def _lookup(self, role: int, raw: bytes, match: str,
                params: tuple[object, ...]) -> tuple[object, ...] | None:
        k = lookup_key(raw)
        return self._one(_LOOKUP.format(match=match), (role, k, bucket(k), *params))

    def contains(self, event_ids: Sequence[str]) -> set[str]:
        """Those of ``event_ids`` (hex) that have a leaf: a few queries per 30,000 ids, for
        readers too. Malformed ids are never contained. Raises Unavailable."""
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
            for start in range(0, len(candidates), IN_CHUNK):
                chunk = candidates[start:start + IN_CHUNK]
                found.update(raw.hex() for (raw,) in self.conn.execute(
                    f"SELECT event_id FROM leaves WHERE idx IN ({','.join('?' * len(chunk))})",  # noqa: S608
                    chunk) if raw in raws)
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc
        return found

    def locate(self, role: int, raws: Sequence[bytes]) -> dict[bytes, int]:
        """The lowest leaf index per raw id of ``raws``: of the event with that id
        (``role`` ROLE_EVENT), or of the first decision (:data:`DECISION_KINDS`) whose
        ``parent_ref`` it is (ROLE_SUBJECT); ids without one are left out. A few queries
        per 30,000 ids, for readers too (the causal hold-back and the audit's order check).
        Raises Unavailable."""
        wanted = set(raws)
        keys = sorted({lookup_key(raw) for raw in wanted})
        column = "event_id" if role == ROLE_EVENT else "parent_ref"
        candidates: list[int] = []
        found: dict[bytes, int] = {}
        try:
            for start in range(0, len(keys), _PROBE_CHUNK):
                chunk = keys[start:start + _PROBE_CHUNK]
                marks = ",".join("?" * len(chunk))
                for table in ("keys", "recent_keys"):
                    candidates.extend(idx for (idx,) in self.conn.execute(
                        f"SELECT idx FROM {table} WHERE role = ? "  # noqa: S608
                        f"AND k IN ({marks})", (role, *chunk)))
            for start in range(0, len(candidates), IN_CHUNK):
                chunk = candidates[start:start + IN_CHUNK]
                for idx, raw, kind in self.conn.execute(
                        f"SELECT idx, {column}, kind FROM leaves WHERE idx IN "  # noqa: S608
                        f"({','.join('?' * len(chunk))})", chunk):
                    if raw in wanted and (role == ROLE_EVENT or kind in DECISION_KINDS) \
                            and idx < found.get(raw, idx + 1):
                        found[raw] = idx
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc
        return found

    def indexed(self) -> int:
        """How many leaves the index covers (meta ``indexed``; a writer's open indexes the
        rest). Raises ProofError if the value is not a count."""
        row = self._one("SELECT value FROM meta WHERE key = 'indexed'", ())
        recorded = (None if row is None else str(row[0])) or "0"
        if not recorded.isdigit():
            raise ProofError(f"the lookup index records {recorded!r} indexed leaves")
        return int(recorded)

    def iter_rows(self) -> Iterator[tuple[object, ...]]:
        """Every index row (role, k, idx) of both tiers, as stored. Raises Unavailable."""
        try:
            for table in ("keys", "recent_keys"):
                yield from self.conn.execute(f"SELECT role, k, idx FROM {table}")  # noqa: S608
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc

    # -- the one writer, inside the store's batch transaction --------------------------------

    def merged_candidates(self, keys: Sequence[int]) -> list[int]:
        """Leaf indexes under ``keys`` (ROLE_EVENT) in the merged tier: one probe per 30,000
        keys, mostly inside one SQLite step (the store runs it on its commit thread while
        the batch is laid out). Raises sqlite3.Error."""
        found: list[int] = []
        for start in range(0, len(keys), _PROBE_CHUNK):
            chunk = keys[start:start + _PROBE_CHUNK]
            found.extend(idx for (idx,) in self.conn.execute(
                f"SELECT idx FROM keys WHERE role = {ROLE_EVENT} AND k IN "  # noqa: S608
                f"({','.join('?' * len(chunk))})", chunk))
        return found

    def stored_ids(self, keys: Sequence[int], raw_ids: Sequence[bytes],
                   merged: list[int] | None = None) -> set[bytes]:
        """Those of ``raw_ids`` already stored: prefix hits in both tiers (``merged``: the
        :meth:`merged_candidates` of ``keys``, probed now if not given), then full ids.
        Raises sqlite3.Error."""
        recent, shift, half = self._recent, 64 - BUCKET_BITS, BUCKETS // 2
        candidates = [i for k in keys if (i := recent[(k >> shift) + half].get(k)) is not None]
        if self._clash:
            wanted_keys = set(keys)
            candidates.extend(i for k, i in self._clash if k in wanted_keys)
        candidates.extend(self.merged_candidates(keys) if merged is None else merged)
        if not candidates:
            return set()
        wanted, found = set(raw_ids), set[bytes]()
        for start in range(0, len(candidates), IN_CHUNK):
            chunk = candidates[start:start + IN_CHUNK]
            found.update(raw for (raw,) in self.conn.execute(
                f"SELECT event_id FROM leaves WHERE idx IN ({','.join('?' * len(chunk))})",  # noqa: S608
                chunk) if raw in wanted)
        return found

    def write(self, leaves: Sequence[NewLeaf], size: int) -> PendingKeys:
        """Index a batch's new ``leaves`` and record that leaves below ``size`` are indexed.
        Call inside the batch transaction, then :meth:`merge` the returned buckets in it
        (the store does that on its commit thread, before the COMMIT), then
        :meth:`remember` after the commit."""
        rows, added = key_rows(leaves)
        return PendingKeys(added, *self._write_rows(rows, size, self.merge_at))

    def _write_rows(self, key_rows: list[KeyRow], size: int,
                    limit: int) -> tuple[list[int], list[int]]:
        """Insert ``key_rows`` and set meta ``indexed`` to ``size``. Returns the rows per
        bucket after the merge, and the buckets to merge: the largest, while
        ``recent_keys`` would hold ``limit`` rows or more."""
        insert_rows(self.conn, "INSERT INTO recent_keys", 4, key_rows)
        self.conn.execute("INSERT INTO meta VALUES ('indexed', ?) ON CONFLICT(key) DO UPDATE "
                          "SET value = excluded.value", (str(size),))
        counts = list(self._bucket_rows)
        for row in key_rows:
            counts[row[0]] += 1
        merged: list[int] = []
        while (total := sum(counts)) and total >= limit:
            b = max(range(BUCKETS), key=counts.__getitem__)
            counts[b] = 0
            merged.append(b)
        return counts, merged

    def merge(self, buckets: Sequence[int]) -> None:
        """Move the rows of ``buckets`` from ``recent_keys`` into ``keys`` (sorted: each
        bucket is a contiguous key range there), in the caller's transaction; a few SQLite
        steps, no Python per row. Raises sqlite3.Error."""
        for b in buckets:
            self.conn.execute("INSERT INTO keys SELECT role, k, idx FROM recent_keys "
                              "WHERE b = ? ORDER BY role, k, idx", (b,))
            self.conn.execute("DELETE FROM recent_keys WHERE b = ?", (b,))

    def remember(self, pending: PendingKeys) -> None:
        """After a commit: mirror ``recent_keys`` (role ROLE_EVENT, k -> idx) in memory."""
        self._bucket_rows = pending.counts
        recent, clash, merged = self._recent, self._clash, set(pending.merged)
        shift, half = 64 - BUCKET_BITS, BUCKETS // 2  # bucket(k), inlined: hot
        for b in merged:
            recent[b] = {}
        if merged:
            clash[:] = [(k, i) for k, i in clash if (k >> shift) + half not in merged]
        for k, idx in pending.added:
            b = (k >> shift) + half
            if b not in merged and recent[b].setdefault(k, idx) != idx:
                clash.append((k, idx))  # two ids share an 8-byte prefix: keep both

    def _load_mirror(self) -> None:
        """Mirror the recent tier from ``recent_keys`` (writer open), keeping every index of
        a shared prefix. Raises Unavailable."""
        self._recent, self._clash = [{} for _ in range(BUCKETS)], []
        try:
            rows = self.conn.execute("SELECT k, idx FROM recent_keys WHERE role = ? "
                                     "ORDER BY idx", (ROLE_EVENT,)).fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(f"ledger read failed: {exc}") from exc
        self.remember(PendingKeys(rows, self._bucket_rows, []))

    def catch_up(self, size: int) -> None:
        """Writer open: index leaves stored without keys (a schema 1 ledger, or leaves
        written by other means) straight into ``keys`` (one transaction), then load the
        recent tier. Raises ProofError if the index claims more leaves than the ``size``
        stored (rows deleted), Unavailable (SQLite)."""
        indexed = self.indexed()
        if indexed > size:
            raise ProofError(f"the lookup index covers {indexed} leaves, the ledger has {size}")
        if indexed < size:
            with Transaction(self.conn, "ledger"):
                leaves: list[NewLeaf] = []
                for idx, raw, kind, parent in self.conn.execute(
                        "SELECT idx, event_id, kind, parent_ref FROM leaves WHERE idx >= ?",
                        (indexed,)):
                    if not isinstance(raw, bytes):
                        raise ProofError(f"leaf {idx} has no binary event id")
                    leaves.append((idx, lookup_key(raw), kind,
                                   parent if isinstance(parent, bytes) else None))
                self.merge(self._write_rows(key_rows(leaves)[0], size, limit=0)[1])
        counts = [0] * BUCKETS
        for b, rows in self.conn.execute("SELECT b, COUNT(*) FROM recent_keys GROUP BY b"):
            counts[b] = rows
        self._bucket_rows = counts
        self._load_mirror()
