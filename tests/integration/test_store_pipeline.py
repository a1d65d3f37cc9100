"""Group commit with the COMMIT on the store's commit thread (LedgerStore.append_begin):
the same ledger as one append at a time, ids repeated across a group in flight included; a
failed COMMIT in flight stores nothing and stops the next append; a SIGKILL during one
loses nothing acknowledged."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.errors import Unavailable
from ledger.log.records import BatchResult, LeafRecord
from ledger.log.store import LedgerStore
from tests import reference_merkle as ref
from tests.ledger_support import poisoned

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def rec(i: int, kind: str = "Test") -> LeafRecord:
    return LeafRecord(hashlib.sha256(b"id %d" % i).hexdigest(), kind, b"leaf %d" % i)


def state(store: LedgerStore) -> tuple[object, ...]:
    leaves = [(leaf.event_id, leaf.leaf) for leaf in store.iter_leaves()]
    return (leaves, store.root_at(store.tree_size()), sorted(store.index.iter_rows()),
            store.meta("indexed"))


def counts(result: BatchResult) -> tuple[int, int, int]:
    return result.appended, result.duplicates, result.tree_size


# Consecutive groups repeat each other's ids, so a group is checked against one in flight.
GROUPS = [[rec(i) for i in range(a, b)] + [rec(i) for i in again]
          for a, b, again in [(0, 30, ()), (20, 50, (1, 2)), (45, 80, (79,)), (0, 90, ()),
                              (90, 95, (90, 91)), (60, 130, ())]]


def test_pipelined_groups_store_what_one_append_at_a_time_stores(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "one.db", writer=True, merge_at=16) as store:
        expected = [counts(store.append(group)) for group in GROUPS]
        wanted = state(store)
    with LedgerStore(tmp_path / "piped.db", writer=True, merge_at=16,
                     commit_thread=True) as store:
        handles = [store.append_begin(group) for group in GROUPS]
        assert [counts(handle.result()) for handle in handles] == expected
        assert state(store) == wanted
    with LedgerStore(tmp_path / "piped.db") as reader:
        assert reader.find(rec(129).event_id) == reader.leaf(129)
        assert state(reader) == wanted


def test_a_failed_commit_in_flight_stores_nothing_and_stops_the_next_append(
        tmp_path: Path) -> None:
    recs = [rec(i) for i in range(40)]
    with LedgerStore(tmp_path / "ledger.db", writer=True, merge_at=7,
                     commit_thread=True) as store:
        store.append(recs[:10])
        poisoned(store)
        pending = store.append_begin([*recs[5:12], rec(99, "Poison")])
        with pytest.raises(Unavailable, match="ledger commit failed"):
            store.append_begin(recs[12:20])  # laid out on the failed group's tree: refused
        with pytest.raises(Unavailable, match="ledger commit failed"):
            pending.result()  # the same answer to the group's own handle
        assert store.tree_size() == 10
        assert store.find(recs[10].event_id) is None
        assert store.find(rec(99).event_id) is None
        assert store.compact_range().size == 10
        after = store.append_begin(recs[12:20]).result()
        assert counts(after) == (8, 0, 18)
        again = store.append(recs[:20])  # 10 and 11 were never stored; the rest were
        assert (again.appended, again.duplicates) == (2, 18)
        order = [*range(10), *range(12, 20), 10, 11]
        assert [leaf.event_id for leaf in store.iter_leaves()] == [recs[i].event_id
                                                                   for i in order]
        assert store.root_at(20) == ref.mth([recs[i].leaf for i in order])
        assert store.meta("indexed") == "20"


PIPELINED_APPENDER = """
import hashlib, sys
from pathlib import Path
from ledger.log.records import LeafRecord
from ledger.log.store import LedgerStore
recs = [LeafRecord(hashlib.sha256(b"id %d" % i).hexdigest(), "Test", b"leaf %d" % i)
        for i in range(int(sys.argv[2]))]
groups = [recs[i:i + 500] for i in range(0, len(recs), 500)]
with LedgerStore(Path(sys.argv[1]), writer=True, merge_at=700, commit_thread=True) as store:
    pending = store.append_begin(groups[0])
    for group in groups[1:]:
        following = store.append_begin(group)  # waits for the previous COMMIT
        print(pending.result().tree_size, flush=True)  # acknowledged: committed
        pending = following
    print(pending.result().tree_size, flush=True)
print("finished", flush=True)
"""


def test_sigkill_while_a_commit_is_in_flight_loses_nothing_acknowledged(
        tmp_path: Path) -> None:
    path, total = tmp_path / "ledger.db", 40_000
    proc = subprocess.Popen([sys.executable, "-c", PIPELINED_APPENDER, str(path), str(total)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acknowledged = 0
    for line in proc.stdout:  # kill once a few groups are acknowledged, mid-stream
        if line.strip() == "finished":
            break
        acknowledged = int(line)
        if acknowledged >= 3_000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert acknowledged >= 3_000  # the child got that far, and was killed, not crashed
    assert proc.returncode == -signal.SIGKILL
    recs = [rec(i) for i in range(total)]
    with LedgerStore(path, writer=True, merge_at=700) as store:
        size = store.tree_size()
        assert acknowledged <= size <= total and size % 500 == 0
        stored = [leaf.leaf for leaf in store.iter_leaves()]
        assert stored == [r.leaf for r in recs[:size]]
        assert store.root_at(size) == ref.mth(stored)
        assert store.meta("indexed") == str(size)
        again = store.append(recs)
        assert (again.appended, again.duplicates) == (total - size, size)
        assert store.find(recs[size - 1].event_id) == store.leaf(size - 1)
