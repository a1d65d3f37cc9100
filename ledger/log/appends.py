"""One append's rows, for the ledger's one writer (:class:`ledger.log.store.LedgerStore`):
records laid out as ``leaves`` rows and index entries after a tree, hashed onto a copy of
that tree's right border (:func:`lay_out`, no SQLite: it runs while the previous batch's
COMMIT does), then written in the store's open transaction (:func:`write`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.core import merkle
from ledger.core.merkle import CompactRange
from ledger.log.index import LookupIndex, NewLeaf, PendingKeys, lookup_key
from ledger.log.pages import write_hashes
from ledger.log.records import LeafRecord, Offsets
from ledger.log.sqlite import insert_rows

LeafRow = tuple[int, bytes, str, bytes | None, bytes]
"""A ``leaves`` row: (idx, raw event id, kind, raw parent id or None, leaf bytes)."""


@dataclass(frozen=True, slots=True)
class Ids:
    """A batch's event ids, raw, and their lookup keys (:func:`ledger.log.index.lookup_key`)."""

    raw: list[bytes]
    keys: list[int]

    @classmethod
    def of(cls, records: Sequence[LeafRecord]) -> Ids:
        """Raises ValueError for an id that is not hex."""
        raw = [bytes.fromhex(r.event_id) for r in records]
        return cls(raw, list(map(lookup_key, raw)))


@dataclass(frozen=True, slots=True)
class Layout:
    """Records as appended after the tree ``base``: their rows and index entries, the tree
    after them and its new stored hashes (from ``stored_hash_count(base.size)``)."""

    base: CompactRange
    leaf_rows: list[LeafRow]
    new_leaves: list[NewLeaf]
    tree: CompactRange
    hashes: list[bytes]


def lay_out(records: Sequence[LeafRecord], ids: Ids, base: CompactRange,
            stored: set[bytes]) -> Layout:
    """``records`` appended after ``base`` (left unchanged), leaving out ids in ``stored``
    (raw) and each id's repeats in the batch."""
    seen = set(stored)
    leaf_rows: list[LeafRow] = []
    new_leaves: list[NewLeaf] = []
    size = base.size
    for record, raw, k in zip(records, ids.raw, ids.keys, strict=True):
        if raw in seen:
            continue
        seen.add(raw)
        idx = size + len(leaf_rows)
        parent = None if record.parent_ref is None else bytes.fromhex(record.parent_ref)
        leaf_rows.append((idx, raw, record.kind, parent, record.leaf))
        new_leaves.append((idx, k, record.kind, parent))
    tree = CompactRange(size, list(base.hashes))
    hashes = tree.append_leaves([row[4] for row in leaf_rows])
    return Layout(base, leaf_rows, new_leaves, tree, hashes)


def write(conn: sqlite3.Connection, index: LookupIndex, layout: Layout,
          offsets: Offsets | None) -> PendingKeys:
    """Insert the layout's leaves, node hashes and index entries and the consumer
    ``offsets``, in the caller's open transaction. Raises sqlite3.Error."""
    insert_rows(conn, "INSERT INTO leaves", 5, layout.leaf_rows)
    write_hashes(conn, merkle.stored_hash_count(layout.base.size), layout.hashes)
    pending = index.write(layout.new_leaves, layout.tree.size)
    if offsets:
        conn.executemany("INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT(topic, partition) "
                         "DO UPDATE SET next_offset = excluded.next_offset",
                         [(t, p, o) for (t, p), o in offsets.items()])
    return pending
