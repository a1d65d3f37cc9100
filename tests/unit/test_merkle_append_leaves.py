"""CompactRange.append_leaves (the store's batch path) against append + the RFC reference."""

from __future__ import annotations

import hashlib

import pytest

from ledger.core import merkle
from ledger.core.merkle import CompactRange
from tests import reference_merkle as ref

LEAVES = [hashlib.sha256(b"%d" % i).digest()[: 1 + i % 33] for i in range(200)]


@pytest.mark.parametrize("start", [0, 1, 63, 64, 100])
@pytest.mark.parametrize("count", [0, 1, 2, 37, 100])
def test_append_leaves_equals_one_append_per_leaf(start: int, count: int) -> None:
    one, batch = CompactRange(), CompactRange()
    for leaf in LEAVES[:start]:
        one.append(merkle.leaf_hash(leaf))
    batch.append_leaves(LEAVES[:start])
    new = LEAVES[start:start + count]
    expected = [h for leaf in new for h in one.append(merkle.leaf_hash(leaf))]
    got = batch.append_leaves(new)
    assert got == expected
    assert len(got) == merkle.stored_hash_count(start + count) - merkle.stored_hash_count(start)
    assert (batch.size, batch.hashes) == (one.size, one.hashes)
    assert batch.root() == ref.mth(LEAVES[:start + count])


def test_append_leaves_stores_nodes_in_stored_hash_order() -> None:
    compact = CompactRange()
    hashes = compact.append_leaves(LEAVES[:8])
    order = [n for i in range(8) for n in merkle.appended_nodes(i)]
    assert [merkle.stored_hash_index(n) for n in order] == list(range(len(hashes)))
    assert hashes[order.index(merkle.NodeId(3, 0))] == ref.mth(LEAVES[:8])
    assert hashes[order.index(merkle.NodeId(0, 5))] == merkle.leaf_hash(LEAVES[5])
