"""The store's two-tier lookup index on real SQLite files: 8-byte prefix collisions, merges,
reopening, decision_for, the schema 1 migration and a tampered index."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from ledger.errors import ProofError, Unavailable
from ledger.log.index import BUCKETS, DECISION_KINDS, bucket, lookup_key
from ledger.log.records import LeafRecord
from ledger.log.store import LedgerStore
from tests import reference_merkle as ref

pytestmark = pytest.mark.integration

PREFIX = bytes.fromhex("0123456789abcdef")


def rec(i: int, kind: str = "Test", parent: str | None = None, prefix: bytes = b"") -> LeafRecord:
    """A record whose id is sha256("id i"), optionally forced to start with ``prefix``."""
    raw = hashlib.sha256(b"id %d" % i).digest()
    return LeafRecord((prefix + raw[len(prefix):]).hex(), kind, b"leaf %d" % i, parent)


def ids(store: LedgerStore) -> list[str]:
    return [leaf.event_id for leaf in store.iter_leaves()]


@pytest.mark.parametrize("merge_at", [7, 1_000_000], ids=["merging", "recent-only"])
def test_ids_sharing_a_prefix_are_all_stored_found_and_deduplicated(tmp_path: Path,
                                                                    merge_at: int) -> None:
    path = tmp_path / "ledger.db"
    clash = [rec(i, prefix=PREFIX) for i in range(6)]
    plain = [rec(100 + i) for i in range(20)]
    with LedgerStore(path, writer=True, merge_at=merge_at) as store:
        first = store.append([clash[0], *plain[:5], clash[1], clash[0], clash[2]])
        assert (first.appended, first.duplicates) == (8, 1)
        second = store.append([*clash, *plain])
        assert (second.appended, second.duplicates) == (18, 8)
        assert len(set(ids(store))) == store.tree_size() == 26
    with LedgerStore(path, writer=True, merge_at=merge_at) as store:  # reload the recent tier
        again = store.append([*plain, *clash])
        assert (again.appended, again.duplicates) == (0, 26)
        assert store.root_at(26) == ref.mth([leaf.leaf for leaf in store.iter_leaves()])
    with LedgerStore(path) as reader:
        for r in [*clash, *plain]:
            found = reader.find(r.event_id)
            assert found is not None and found.leaf == r.leaf
        unknown = (PREFIX + bytes(24)).hex()
        assert reader.find(unknown) is None
        assert reader.find("not hex") is None


def test_merges_move_keys_out_of_the_recent_tier(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    recs = [rec(i) for i in range(280)]
    with LedgerStore(path, writer=True, merge_at=50) as store:
        for start in range(0, 280, 40):
            store.append(recs[start:start + 40])
        merged = store.conn.execute("SELECT count(*) FROM keys").fetchone()[0]
        recent = store.conn.execute("SELECT count(*) FROM recent_keys").fetchone()[0]
        assert merged + recent == 280 and merged > 0 and recent < 50
        dup = store.append(recs[::7])
        assert (dup.appended, dup.duplicates) == (0, len(recs[::7]))
        assert store.meta("indexed") == "280"
    with LedgerStore(path) as reader:
        assert all(reader.find(r.event_id) == reader.leaf(i) for i, r in enumerate(recs))


def test_decision_for_returns_the_lowest_decision_leaf(tmp_path: Path) -> None:
    request, other = rec(1, "AuthorizationRequested"), rec(2, "AuthorizationRequested")
    child = rec(3, "AuthorizationRequested", parent=request.event_id)  # not a decision
    denied = rec(4, "AuthorizationDenied", parent=request.event_id)
    late = rec(5, "AuthorizationGranted", parent=request.event_id)
    executed = rec(6, "ExecutionAllowed", parent=other.event_id)
    path = tmp_path / "ledger.db"
    with LedgerStore(path, writer=True, merge_at=4) as store:
        store.append([request, other, child])
        assert store.decision_for(request.event_id) is None
        store.append([denied])
        store.append([late, executed, rec(7)])  # this batch merges the recent tier
    with LedgerStore(path) as reader:
        assert reader.decision_for(request.event_id) == reader.leaf(3)
        assert reader.decision_for(other.event_id) == reader.leaf(5)
        assert reader.decision_for(denied.event_id) is None
        assert reader.decision_for("zz") is None
    assert set(DECISION_KINDS) == {"AuthorizationGranted", "AuthorizationDenied",
                                   "ExecutionAllowed", "ExecutionRefused"}


def test_a_schema_1_ledger_is_indexed_when_a_writer_opens_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    recs = [rec(i, "AuthorizationGranted", parent=rec(1000 + i).event_id) for i in range(30)]
    with LedgerStore(path, writer=True) as store:
        store.append(recs)
    conn = sqlite3.connect(path)  # rewrite it as schema 1 had it: no key tables
    conn.executescript("DROP TABLE keys; DROP TABLE recent_keys; "
                       "DELETE FROM meta WHERE key = 'indexed'; "
                       "UPDATE meta SET value = '1' WHERE key = 'schema'; "
                       "CREATE UNIQUE INDEX leaves_event_id ON leaves(event_id);")
    conn.close()
    with LedgerStore(path, writer=True) as store:
        assert store.meta("schema") == "2"
        assert store.conn.execute("SELECT count(*) FROM keys").fetchone()[0] == 60
        assert store.append(recs[:3]).duplicates == 3
        assert store.find(recs[17].event_id) == store.leaf(17)
        assert store.decision_for(rec(1017).event_id) == store.leaf(17)
        names = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
        assert "leaves_event_id" not in names


def test_an_index_covering_deleted_leaves_refuses_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with LedgerStore(path, writer=True) as store:
        store.append([rec(i) for i in range(10)])
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER leaves_append_only_delete")
    conn.execute("DELETE FROM leaves WHERE idx >= 8")
    conn.commit()
    conn.close()
    for _ in range(2):  # the failed open released the writer lock
        with pytest.raises(ProofError, match="covers 10 leaves"):
            LedgerStore(path, writer=True)


def test_index_tables_refuse_edits(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger.db", writer=True, merge_at=3) as store:
        store.append([rec(i) for i in range(5)])
        store.append([rec(9)])
        for sql in ("UPDATE keys SET idx = 0", "DELETE FROM keys",
                    "UPDATE recent_keys SET idx = 0"):
            with pytest.raises(sqlite3.IntegrityError):
                store.conn.execute(sql)


def test_a_reader_cannot_append(tmp_path: Path) -> None:
    LedgerStore(tmp_path / "ledger.db", writer=True).close()
    with LedgerStore(tmp_path / "ledger.db") as reader, pytest.raises(Unavailable):
        reader.append([rec(1)])


def test_buckets_are_key_ranges() -> None:
    assert [bucket(k) for k in (-(2**63), -1, 0, 2**59 - 1, 2**59, 2**63 - 1)] == [
        0, BUCKETS // 2 - 1, BUCKETS // 2, BUCKETS // 2, BUCKETS // 2 + 1, BUCKETS - 1]
    assert lookup_key(bytes.fromhex("ff" * 8 + "00" * 24)) == -1
