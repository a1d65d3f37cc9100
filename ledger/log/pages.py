"""The ledger's node hashes, stored in pages of 64 (table ``hash_pages``).

Every complete subtree hash is numbered by :func:`ledger.core.merkle.stored_hash_index`
(appending leaf ``i`` writes its leaf hash, then each subtree it completes, so numbers only
grow) and hash number ``h`` lives at byte ``32 * (h % 64)`` of ``hash_pages`` row ``h // 64``.
A batch of 1,000 leaves writes ~32 page rows instead of ~2,000 hash rows, and a proof is one
``WHERE page IN (...)`` query of at most ~2 log2(n) small rows. A trigger lets a page only
grow (its old bytes must stay a prefix). Functions here take the store's connection; the
store runs the transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Final

from ledger.core import merkle
from ledger.errors import ProofError, Unavailable
from ledger.log.index import IN_CHUNK

PAGE: Final = 64
PAGE_BYTES: Final = PAGE * merkle.HASH_SIZE
PAGE_TRIGGERS: Final = (
    "CREATE TRIGGER IF NOT EXISTS hash_pages_append_only_delete BEFORE DELETE ON hash_pages "
    "BEGIN SELECT RAISE(ABORT, 'hash_pages is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS hash_pages_grow_only BEFORE UPDATE ON hash_pages "
    "WHEN NEW.page != OLD.page OR substr(NEW.hashes, 1, length(OLD.hashes)) != OLD.hashes "
    "BEGIN SELECT RAISE(ABORT, 'hash_pages may only grow'); END",
)


def iter_pages(conn: sqlite3.Connection) -> Iterator[tuple[int, bytes]]:
    """(page number, page bytes) in page order, as stored."""
    yield from conn.execute("SELECT page, hashes FROM hash_pages ORDER BY page")


def read_pages(conn: sqlite3.Connection, pages: Sequence[int]) -> dict[int, bytes]:
    """Page bytes by page number, one query per 900 pages. Raises Unavailable."""
    out: dict[int, bytes] = {}
    try:
        for start in range(0, len(pages), IN_CHUNK):
            chunk = pages[start:start + IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            out.update(conn.execute(
                f"SELECT page, hashes FROM hash_pages WHERE page IN ({marks})",  # noqa: S608
                chunk))
    except sqlite3.Error as exc:
        raise Unavailable(f"ledger read failed: {exc}") from exc
    return out


def read_hashes(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, bytes]:
    """Stored hashes by hash number; absent ones left out. Raises Unavailable."""
    pages = read_pages(conn, sorted({i // PAGE for i in ids}))
    out: dict[int, bytes] = {}
    for i in ids:
        blob = pages.get(i // PAGE)
        at = (i % PAGE) * merkle.HASH_SIZE
        if blob is not None and at + merkle.HASH_SIZE <= len(blob):
            out[i] = blob[at:at + merkle.HASH_SIZE]
    return out


def write_hashes(conn: sqlite3.Connection, first_id: int, hashes: list[bytes]) -> None:
    """Store ``hashes`` numbered from ``first_id`` (extending the partial last page). Call
    inside a transaction. Raises ProofError if that page is not exactly the hashes before
    ``first_id``."""
    if not hashes:
        return
    blob = b"".join(hashes)
    page, offset = divmod(first_id, PAGE)
    if offset:  # extend the partial last page
        prefix = read_pages(conn, [page]).get(page, b"")
        if len(prefix) != offset * merkle.HASH_SIZE:
            raise ProofError(f"hash page {page} has {len(prefix)} bytes, expected "
                             f"{offset * merkle.HASH_SIZE}")
        blob = prefix + blob
    rows = [(page + n, blob[start:start + PAGE_BYTES])
            for n, start in enumerate(range(0, len(blob), PAGE_BYTES))]
    conn.executemany("INSERT INTO hash_pages VALUES (?, ?) ON CONFLICT(page) "
                     "DO UPDATE SET hashes = excluded.hashes", rows)
