"""RFC 9162 Merkle tree: hashing, proof node ids, proof verification. Pure: no I/O.

* Leaf hash ``SHA-256(0x00 || leaf)``, node hash ``SHA-256(0x01 || left || right)``, the
  root of the empty tree ``SHA-256("")`` (RFC 9162 section 2.1.1).
* A :class:`NodeId` ``(level, index)`` names the complete subtree over the leaves
  ``[index * 2**level, (index + 1) * 2**level)``. Only complete subtrees are stored.
* Proofs are built in three steps (model: transparency-dev/merkle ``proof/proof.go``):
  the core says *which* subtree hashes a proof needs (:func:`inclusion_plan`,
  :func:`consistency_plan`), the store fetches those node ids in one query, and
  :meth:`ProofPlan.combine` folds them into the RFC 9162 proof.
* Every element of an RFC 9162 proof is the hash of a leaf range ``[lo, hi)`` whose ``lo`` is
  aligned to a power of two at least ``hi - lo``; such a range is the left-to-right
  decomposition :func:`range_nodes` of complete subtrees, folded from the right.
* Verification follows RFC 9162 sections 2.1.3.2 (inclusion) and 2.1.4.2 (consistency)
  step by step. Every failure, out-of-range arguments included, raises ProofError.
* Stored-hash order (:func:`stored_hash_index`, from Go's ``golang.org/x/mod/sumdb/tlog``):
  appending leaf ``i`` writes its leaf hash, then every subtree it completes, bottom up.
  Numbering hashes in that order makes the store append-only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NewType

from ledger.errors import ProofError

LeafIndex = NewType("LeafIndex", int)
TreeSize = NewType("TreeSize", int)

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


@dataclass(frozen=True, slots=True)
class NodeId:
    """The complete subtree at ``level`` (0 = a leaf) with position ``index`` in that level."""

    level: int
    index: int


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 2.1.1: SHA-256(0x00 || leaf)."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 2.1.1: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def _split(width: int) -> int:
    """The largest power of two strictly less than ``width`` (requires width >= 2)."""
    return 1 << ((width - 1).bit_length() - 1)


def range_nodes(begin: int, end: int) -> list[NodeId]:
    """Complete subtrees covering leaves ``[begin, end)``, left to right, greedily maximal.

    Requires 0 <= begin <= end.
    """
    nodes: list[NodeId] = []
    while begin < end:
        # Largest aligned block at begin that fits before end.
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        nodes.append(NodeId(level, begin >> level))
        begin += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """Hash of a range from its :func:`range_nodes` hashes: fold from the right."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for left in reversed(hashes[:-1]):
        acc = _sha256(b"\x01" + left + acc).digest()
    return acc


@dataclass(frozen=True, slots=True)
class ProofPlan:
    """A proof as leaf ranges, one per RFC 9162 proof element, in proof order."""

    ranges: tuple[tuple[int, int], ...]

    def node_ids(self) -> list[NodeId]:
        """Every stored node the proof needs (no duplicates), for one store query."""
        seen: dict[NodeId, None] = {}
        for lo, hi in self.ranges:
            for node in range_nodes(lo, hi):
                seen[node] = None
        return list(seen)

    def combine(self, hashes: Mapping[NodeId, bytes]) -> list[bytes]:
        """The proof hashes. Raises ProofError if ``hashes`` lacks a node the plan needs."""
        try:
            return [fold([hashes[n] for n in range_nodes(lo, hi)]) for lo, hi in self.ranges]
        except KeyError as exc:
            raise ProofError(f"node {exc.args[0]} is not stored") from exc


def inclusion_plan(index: int, size: int) -> ProofPlan:
    """Ranges of PATH(index, D[0:size]) (RFC 9162 2.1.3.1). Requires 0 <= index < size.

    Raises ProofError otherwise.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()  # the recursion emits the sibling nearest the leaf first
    return ProofPlan(tuple(ranges))


def consistency_plan(old_size: int, new_size: int) -> ProofPlan:
    """Ranges of PROOF(old_size, D[0:new_size]) (RFC 9162 2.1.4.1).

    Requires 0 <= old_size <= new_size; the proof is empty when old_size is 0 or equal to
    new_size. Raises ProofError otherwise.
    """
    if not 0 <= old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return ProofPlan(())
    ranges: list[tuple[int, int]] = []
    lo, hi, whole = 0, new_size, True  # ``whole``: the SUBPROOF flag b
    while old_size != hi:
        k = _split(hi - lo)
        if old_size <= lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo, whole = lo + k, False
    if not whole:
        ranges.append((lo, hi))
    ranges.reverse()
    return ProofPlan(tuple(ranges))


def root_plan(size: int) -> list[NodeId]:
    """Stored nodes whose fold is the root of the tree of ``size`` leaves."""
    return range_nodes(0, size)


def stored_hash_index(node: NodeId) -> int:
    """Position of ``node`` in append order (tlog ``StoredHashIndex``)."""
    n = node.index
    for _ in range(node.level):
        n = 2 * n + 1
    return 2 * n - n.bit_count() + node.level


def appended_nodes(index: int) -> list[NodeId]:
    """Node ids stored when leaf ``index`` is appended, in the order of
    :meth:`CompactRange.append` (the leaf, then each subtree it completes)."""
    nodes = [NodeId(0, index)]
    level, n = 0, index
    while n & 1:
        level, n = level + 1, n >> 1
        nodes.append(NodeId(level, n))
    return nodes


def stored_hash_count(size: int) -> int:
    """How many hashes a tree of ``size`` leaves stores (leaves plus complete subtrees)."""
    return 2 * size - size.bit_count()


class CompactRange:
    """The right border of a growing tree: enough to append leaves and compute the root.

    ``hashes`` are the roots of :func:`range_nodes` ``(0, size)``, left to right.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ProofError(f"a compact range of size {size} has {size.bit_count()} hashes")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf_hash_: bytes) -> list[bytes]:
        """Append a leaf hash; return it and every subtree hash it completes, bottom up
        (that is, in stored-hash order)."""
        out = [leaf_hash_]
        acc, n, stack = leaf_hash_, self.size, self.hashes
        while n & 1:
            acc = _sha256(b"\x01" + stack.pop() + acc).digest()
            out.append(acc)
            n >>= 1
        stack.append(acc)
        self.size += 1
        return out

    def append_leaves(self, leaves: Iterable[bytes]) -> list[bytes]:
        """Hash each raw leaf (RFC 9162 2.1.1) and append it; return every new stored hash
        in stored-hash order. Same result as :meth:`append` of each :func:`leaf_hash`, in one
        loop with no per-leaf call or list (the sequencer's hot path)."""
        out: list[bytes] = []
        push, stack, sha = out.append, self.hashes, _sha256
        for leaf in leaves:
            acc = sha(b"\x00" + leaf).digest()
            push(acc)
            n = self.size
            while n & 1:
                acc = sha(b"\x01" + stack.pop() + acc).digest()
                push(acc)
                n >>= 1
            stack.append(acc)
            self.size += 1
        return out

    def root(self) -> bytes:
        return fold(self.hashes)


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def _lsb(x: int) -> int:
    return x & 1


def _shift_to_set_bit(fn: int, sn: int) -> tuple[int, int]:
    """RFC 9162 2.1.3.2 step 4b and 2.1.4.2 step 6b: "if LSB(fn) is not set, then
    right-shift both fn and sn equally until either LSB(fn) is set or fn is 0"."""
    while not _lsb(fn) and fn != 0:
        fn >>= 1
        sn >>= 1
    return fn, sn


def root_from_inclusion(index: int, size: int, leaf_hash_: bytes,
                        proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof implies (RFC 9162 2.1.3.2 steps 1-4).

    Raises ProofError for an out-of-range index, a wrong proof length or a bad hash size.
    """
    if not 0 <= index < size:                                           # step 1
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash(leaf_hash_, "leaf hash")
    fn, sn, r = index, size - 1, leaf_hash_                             # steps 2-3
    for n, p in enumerate(proof):                                       # step 4
        _check_hash(p, f"proof[{n}]")
        if sn == 0:                                                     # 4a
            raise ProofError("inclusion proof is too long")
        if _lsb(fn) or fn == sn:                                        # 4b
            r = node_hash(p, r)
            fn, sn = _shift_to_set_bit(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1                                                        # 4c
        sn >>= 1
    if sn != 0:                                                         # step 5 (size part)
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(index: int, size: int, leaf_hash_: bytes, proof: Sequence[bytes],
                     root: bytes) -> None:
    """RFC 9162 2.1.3.2. Returns None or raises ProofError."""
    _check_hash(root, "root hash")
    calculated = root_from_inclusion(index, size, leaf_hash_, proof)
    if calculated != root:                                              # step 5
        raise ProofError("inclusion proof does not lead to the root",
                         expected=root.hex(), calculated=calculated.hex())


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """RFC 9162 2.1.4.2, plus the edge cases the RFC leaves out.

    * ``old_size > new_size`` or a negative size: ProofError.
    * ``old_size == new_size``: the proof must be empty and the roots equal.
    * ``old_size == 0``: the proof must be empty and ``old_root`` the empty-tree hash
      (stricter than transparency-dev, which ignores the old root here).
    Returns None or raises ProofError.
    """
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    for n, p in enumerate(proof):
        _check_hash(p, f"proof[{n}]")
    if not 0 <= old_size <= new_size:
        raise ProofError(f"no consistency from size {old_size} to size {new_size}")
    if old_size == new_size or old_size == 0:
        if proof:
            raise ProofError("consistency proof must be empty for these sizes")
        want = new_root if old_size == new_size else EMPTY_ROOT
        if old_root != want:
            raise ProofError("old root does not match", expected=want.hex(),
                             calculated=old_root.hex())
        return
    if not proof:                                                       # step 1
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:                                  # step 2
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1                                 # step 3
    while _lsb(fn):                                                     # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]                                                   # step 5
    for c in path[1:]:                                                  # step 6
        if sn == 0:                                                     # 6a
            raise ProofError("consistency proof is too long")
        if _lsb(fn) or fn == sn:                                        # 6b
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            fn, sn = _shift_to_set_bit(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1                                                        # 6c
        sn >>= 1
    if sn != 0:                                                         # step 7
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root",
                         expected=old_root.hex(), calculated=fr.hex())
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root",
                         expected=new_root.hex(), calculated=sr.hex())


def root_of(leaves: Iterable[bytes]) -> bytes:
    """Root of a tree over raw leaves (streaming, O(log n) memory)."""
    compact = CompactRange()
    for leaf in leaves:
        compact.append(leaf_hash(leaf))
    return compact.root()
