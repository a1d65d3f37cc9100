"""LedgerStore on a real SQLite file: batches, duplicates, offsets, proofs, atomicity."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.core import merkle
from ledger.core.merkle import TreeSize
from ledger.errors import ProofError, Unavailable
from ledger.log import commits
from ledger.log.records import LeafRecord
from ledger.log.store import LedgerStore
from tests import reference_merkle as ref

pytestmark = pytest.mark.integration


def records(n: int, start: int = 0) -> list[LeafRecord]:
    return [LeafRecord(hashlib.sha256(b"event %d" % i).hexdigest(), "Test",
                       b"leaf %d " % i + bytes(i % 50)) for i in range(start, start + n)]


def fake_sign(size: TreeSize, root: bytes) -> str:
    return f"{size} {root.hex()}\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LedgerStore]:
    with LedgerStore(tmp_path / "ledger.db", writer=True) as opened:
        yield opened


def test_store_uses_wal_and_full_sync(store: LedgerStore) -> None:
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_batches_build_the_rfc_9162_tree(store: LedgerStore) -> None:
    recs = records(300)
    for start in range(0, 300, 70):
        store.append(recs[start:start + 70])
    leaves = [r.leaf for r in recs]
    assert store.tree_size() == 300
    for size in (0, 1, 64, 65, 255, 300):
        assert store.root_at(size) == ref.mth(leaves[:size])
    for index in (0, 63, 64, 200, 299):
        assert store.inclusion_proof(index, 300) == ref.path(index, leaves)
    for old in (1, 64, 100, 299):
        assert store.consistency_proof(old, 300) == ref.proof(old, leaves[:300])


def test_batches_past_one_statement_store_every_row(store: LedgerStore) -> None:
    """Rows go in many per INSERT (sqlite.insert_rows: 199 leaves or 249 index rows a
    statement): batches of one, of a statement's rows and one more, of several statements."""
    sizes = [1, 199, 200, 249, 250, 450, 1]
    recs = records(sum(sizes))
    start = 0
    for size in sizes:
        assert store.append(recs[start:start + size]).appended == size
        start += size
    assert [leaf.event_id for leaf in store.iter_leaves()] == [r.event_id for r in recs]
    assert store.root_at(len(recs)) == ref.mth([r.leaf for r in recs])
    assert store.conn.execute("SELECT COUNT(*) FROM recent_keys").fetchone()[0] == len(recs)
    assert all(store.find(r.event_id) == store.leaf(i) for i, r in enumerate(recs))


def test_a_failed_wal_checkpoint_stops_the_next_append(store: LedgerStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The WAL is copied into the database off the writer's thread (WalCheckpointer); a
    checkpoint that fails (here its connection is gone; on a host, a failing disk) is
    raised by the writer's next append, which writes nothing."""
    assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert store._commits is not None
    checkpointer = store._commits._checkpoints
    assert checkpointer is not None
    monkeypatch.setattr(commits, "WAL_INLINE_PAGES", 0)  # checkpoint inline: no race
    store.append(records(3))
    checkpointer._conn.close()
    store.append(records(2, 3))  # committed; its checkpoint fails
    with pytest.raises(Unavailable, match="checkpoint failed"):
        store.append(records(2, 5))
    assert store.tree_size() == 5


def test_duplicates_are_skipped_within_and_across_batches(store: LedgerStore) -> None:
    recs = records(10)
    first = store.append([*recs[:5], recs[2]])
    assert (first.appended, first.duplicates) == (5, 1)
    second = store.append(recs)
    assert (second.appended, second.duplicates, second.tree_size) == (5, 5, 10)
    assert [store.leaf(i).event_id for i in range(10)] == [r.event_id for r in recs]
    assert store.find(recs[7].event_id) == store.leaf(7)
    count = store.conn.execute("SELECT COUNT(*) FROM leaves").fetchone()[0]
    assert count == 10


def test_offsets_and_checkpoint_commit_with_the_leaves(store: LedgerStore) -> None:
    result = store.append(records(3), {("gov.requests", 0): 3, ("gov.decisions", 1): 7},
                          fake_sign)
    assert result.checkpoint == fake_sign(TreeSize(3), store.root_at(3))
    assert store.offsets() == {("gov.requests", 0): 3, ("gov.decisions", 1): 7}
    assert store.latest_checkpoint() == (3, result.checkpoint)
    store.append(records(2, 3), {("gov.requests", 0): 5})
    assert store.offsets()[("gov.requests", 0)] == 5


def test_a_failed_batch_writes_nothing(store: LedgerStore) -> None:
    store.append(records(4))
    before = store.root_at(4)

    def broken_sign(size: TreeSize, root: bytes) -> str:
        raise ProofError("signing key unavailable")

    with pytest.raises(ProofError):
        store.append(records(5, 4), {("t", 0): 9}, broken_sign)
    assert store.tree_size() == 4
    assert store.offsets() == {}
    assert store.compact_range().root() == before
    store.append(records(5, 4))
    assert store.root_at(9) == ref.mth([r.leaf for r in records(9)])


def test_tables_are_append_only(store: LedgerStore) -> None:
    store.append(records(70), sign=fake_sign)
    for sql in ("UPDATE leaves SET leaf = x'00' WHERE idx = 1", "DELETE FROM leaves",
                "DELETE FROM hash_pages", "UPDATE hash_pages SET hashes = x'00' WHERE page = 0",
                "DELETE FROM checkpoints"):
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute(sql)


def test_one_writer_at_a_time_and_readers_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    writer = LedgerStore(path, writer=True)
    with pytest.raises(Unavailable, match="another writer"):
        LedgerStore(path, writer=True)
    writer.append(records(3))
    with LedgerStore(path) as reader:
        assert reader.tree_size() == 3
        with pytest.raises(Unavailable):
            reader.append(records(1, 3))
    writer.close()
    LedgerStore(path, writer=True).close()


def test_out_of_range_proofs_raise(store: LedgerStore) -> None:
    store.append(records(5))
    with pytest.raises(ProofError):
        store.inclusion_proof(5, 5)
    with pytest.raises(ProofError):
        store.inclusion_proof(0, 6)
    with pytest.raises(ProofError):
        store.consistency_proof(3, 6)
    with pytest.raises(ProofError):
        store.root_at(6)
    assert store.consistency_proof(5, 5) == []
    merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, store.root_at(5), [])
