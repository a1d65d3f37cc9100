"""Hypothesis: every proof verifies; any single flipped bit makes it fail (RFC 9162)."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core import merkle
from ledger.core.merkle import CompactRange, NodeId
from ledger.errors import ProofError

N = 3000
LEAVES = [hashlib.sha256(b"p%d" % i).digest() * (1 + i % 3) for i in range(N)]
NODES: dict[NodeId, bytes] = {}
_compact = CompactRange()
for _i, _leaf in enumerate(LEAVES):
    NODES.update(zip(merkle.appended_nodes(_i), _compact.append(merkle.leaf_hash(_leaf)),
                     strict=True))


def root(size: int) -> bytes:
    return merkle.fold([NODES[n] for n in merkle.root_plan(size)])


def flip(value: bytes, bit: int) -> bytes:
    raw = bytearray(value)
    raw[bit // 8 % len(raw)] ^= 1 << (bit % 8)
    return bytes(raw)


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, N))
    return draw(st.integers(0, size - 1)), size


@settings(max_examples=300, deadline=None)
@given(index_and_size(), st.integers(0, 255), st.data())
def test_every_inclusion_proof_verifies_and_one_bit_breaks_it(
        point: tuple[int, int], bit: int, data: st.DataObject) -> None:
    index, size = point
    plan = merkle.inclusion_plan(index, size)
    proof = plan.combine(NODES)
    leaf_hash, tree_root = merkle.leaf_hash(LEAVES[index]), root(size)
    merkle.verify_inclusion(index, size, leaf_hash, proof, tree_root)
    target = data.draw(st.integers(-2, len(proof) - 1))
    if target == -2:
        leaf_hash = flip(leaf_hash, bit)
    elif target == -1:
        tree_root = flip(tree_root, bit)
    else:
        proof[target] = flip(proof[target], bit)
    try:
        merkle.verify_inclusion(index, size, leaf_hash, proof, tree_root)
    except ProofError:
        return
    raise AssertionError("a flipped bit verified")


@st.composite
def old_and_new(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(0, N))
    return draw(st.integers(0, new)), new


@settings(max_examples=300, deadline=None)
@given(old_and_new(), st.integers(0, 255), st.data())
def test_every_consistency_proof_verifies_and_one_bit_breaks_it(
        sizes: tuple[int, int], bit: int, data: st.DataObject) -> None:
    old, new = sizes
    proof = merkle.consistency_plan(old, new).combine(NODES)
    old_root, new_root = root(old), root(new)
    merkle.verify_consistency(old, new, old_root, new_root, proof)
    # From the empty tree every tree is consistent: the new root is not under proof then.
    lowest = -1 if old == 0 < new else -2
    target = data.draw(st.integers(lowest, len(proof) - 1))
    if target == -2:
        new_root = flip(new_root, bit)
    elif target == -1:
        old_root = flip(old_root, bit)
    else:
        proof[target] = flip(proof[target], bit)
    try:
        merkle.verify_consistency(old, new, old_root, new_root, proof)
    except ProofError:
        return
    raise AssertionError("a flipped bit verified")


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 300))
def test_stored_subtrees_fold_to_the_streamed_root(size: int) -> None:
    assert root(size) == merkle.root_of(LEAVES[:size])
