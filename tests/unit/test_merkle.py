"""ledger.core.merkle against the recursive RFC 9162 reference (tests/reference_merkle.py)."""

from __future__ import annotations

import hashlib
import random

import pytest

from ledger.core import merkle
from ledger.core.merkle import CompactRange, NodeId
from ledger.errors import ProofError
from tests import reference_merkle as ref


def make_leaves(n: int, seed: int = 0) -> list[bytes]:
    return [hashlib.sha256(b"%d/%d" % (seed, i)).digest()[: 1 + i % 40] for i in range(n)]


def node_store(leaves: list[bytes]) -> dict[NodeId, bytes]:
    """Every complete subtree hash, built the way the store builds it."""
    compact, nodes = CompactRange(), {}
    for i, leaf in enumerate(leaves):
        for node, value in zip(merkle.appended_nodes(i), compact.append(merkle.leaf_hash(leaf)),
                               strict=True):
            nodes[node] = value
    return nodes


def prove_inclusion(nodes: dict[NodeId, bytes], index: int, size: int) -> list[bytes]:
    plan = merkle.inclusion_plan(index, size)
    return plan.combine({n: nodes[n] for n in plan.node_ids()})


def prove_consistency(nodes: dict[NodeId, bytes], old: int, new: int) -> list[bytes]:
    plan = merkle.consistency_plan(old, new)
    return plan.combine({n: nodes[n] for n in plan.node_ids()})


LEAVES = make_leaves(300)
NODES = node_store(LEAVES)
ROOTS = [merkle.fold([NODES[n] for n in merkle.root_plan(s)]) for s in range(301)]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert merkle.EMPTY_ROOT.hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert CompactRange().root() == merkle.EMPTY_ROOT == ROOTS[0]


def test_roots_match_reference_for_every_size_to_300() -> None:
    for size in range(301):
        assert ROOTS[size] == ref.mth(LEAVES[:size]), size
        assert merkle.root_of(LEAVES[:size]) == ROOTS[size]


def indices(size: int) -> list[int]:
    if size <= 40:
        return list(range(size))
    rng = random.Random(size)
    picks = {0, 1, size // 2, size - 2, size - 1, *(rng.randrange(size) for _ in range(4))}
    picks |= {(1 << b) - 1 for b in range(size.bit_length()) if (1 << b) - 1 < size}
    return sorted(picks)


def test_inclusion_proofs_match_reference_and_verify_for_every_size_to_300() -> None:
    for size in range(1, 301):
        for index in indices(size):
            proof = prove_inclusion(NODES, index, size)
            assert proof == ref.path(index, LEAVES[:size]), (index, size)
            merkle.verify_inclusion(index, size, merkle.leaf_hash(LEAVES[index]), proof,
                                    ROOTS[size])


def test_consistency_proofs_match_reference_and_verify_for_every_size_to_300() -> None:
    for new in range(1, 301):
        for old in [*indices(new), new]:
            proof = prove_consistency(NODES, old, new)
            if 0 < old < new:
                assert proof == ref.proof(old, LEAVES[:new]), (old, new)
            else:
                assert proof == []
            merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def test_random_large_trees_match_reference() -> None:
    rng = random.Random(7)
    for _ in range(3):
        size = rng.randrange(1000, 5000)
        leaves = make_leaves(size, seed=size)
        nodes = node_store(leaves)
        root = ref.mth(leaves)
        assert merkle.fold([nodes[n] for n in merkle.root_plan(size)]) == root
        for _ in range(5):
            index, old = rng.randrange(size), rng.randrange(1, size)
            proof = prove_inclusion(nodes, index, size)
            assert proof == ref.path(index, leaves)
            merkle.verify_inclusion(index, size, merkle.leaf_hash(leaves[index]), proof, root)
            cproof = prove_consistency(nodes, old, size)
            assert cproof == ref.proof(old, leaves)
            merkle.verify_consistency(old, size, ref.mth(leaves[:old]), root, cproof)


def test_stored_hash_index_is_append_order() -> None:
    order = [node for i in range(300) for node in merkle.appended_nodes(i)]
    assert [merkle.stored_hash_index(n) for n in order] == list(range(len(order)))
    assert merkle.stored_hash_count(300) == len(order)


def test_range_nodes_cover_the_range_exactly() -> None:
    for begin in range(0, 70):
        for end in range(begin, 140):
            covered = [leaf for n in merkle.range_nodes(begin, end)
                       for leaf in range(n.index << n.level, (n.index + 1) << n.level)]
            assert covered == list(range(begin, end))


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (5, 3), (-1, 4)])
def test_inclusion_plan_rejects_out_of_range(index: int, size: int) -> None:
    with pytest.raises(ProofError):
        merkle.inclusion_plan(index, size)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, ROOTS[1], [], ROOTS[1])


@pytest.mark.parametrize(("old", "new"), [(2, 1), (-1, 3), (5, 0)])
def test_consistency_rejects_time_travel(old: int, new: int) -> None:
    with pytest.raises(ProofError):
        merkle.consistency_plan(old, new)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, ROOTS[1], ROOTS[2], [ROOTS[3]])


def test_consistency_edge_cases() -> None:
    merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, ROOTS[5], [])
    merkle.verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(5, 5, ROOTS[5], ROOTS[6], [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(5, 5, ROOTS[5], ROOTS[5], [ROOTS[1]])
    with pytest.raises(ProofError):
        merkle.verify_consistency(0, 5, ROOTS[1], ROOTS[5], [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(4, 5, ROOTS[4], ROOTS[5], [])


def test_wrong_hash_sizes_are_rejected() -> None:
    proof = prove_inclusion(NODES, 3, 10)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(3, 10, merkle.leaf_hash(LEAVES[3])[:31], proof, ROOTS[10])
    with pytest.raises(ProofError):
        merkle.verify_inclusion(3, 10, merkle.leaf_hash(LEAVES[3]), [*proof[:-1], b""],
                                ROOTS[10])


def test_combine_reports_a_missing_node() -> None:
    plan = merkle.inclusion_plan(3, 10)
    with pytest.raises(ProofError, match="not stored"):
        plan.combine({})


def test_compact_range_rejects_wrong_hash_count() -> None:
    with pytest.raises(ProofError):
        CompactRange(3, [ROOTS[1]])
