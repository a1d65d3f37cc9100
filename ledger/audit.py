"""Audit: recompute the whole ledger from the stored leaf bytes and report the first
divergence (DESIGN.md section 7).

One streaming pass over ``leaves`` and ``hash_pages`` in order, O(log n) memory:

1. every checkpoint note must verify under the trusted vkey and name the ledger's origin;
2. leaf indices must run 0, 1, 2, ... without a gap, and no event id may appear twice;
3. every leaf hash and every stored subtree hash must equal the one recomputed from the leaf
   bytes (RFC 9162 2.1.1), and no extra hash may be stored;
4. with a ``verify`` callable, every leaf's envelope must verify and carry the stored event
   id, kind and parent reference;
5. at each checkpoint's size the recomputed root must equal the signed root; a checkpoint
   beyond the last leaf means the tail was truncated; leaves after the last checkpoint are
   reported as not covered by a signature;
6. consecutive checkpoints must be consistent (RFC 9162 2.1.4.2, proofs from stored nodes).

``first_bad_index`` is the lowest leaf index found divergent. When only a checkpoint root
disagrees (say, a leaf was edited *and* its stored hashes recomputed, and no verifier was
given), the exact leaf cannot be named: it is the first leaf after the previous good
checkpoint. A checkpoint whose note itself is bad names no leaf: ``bad_checkpoint`` holds its
size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from ledger.core import merkle
from ledger.core.checkpoint import parse_vkey, verify_checkpoint
from ledger.core.merkle import CompactRange
from ledger.errors import ProofError, Rejected
from ledger.keyfiles import load_keyring
from ledger.sequencer import DB_NAME, Verify, keyring_verifier, read_vkey
from ledger.store import PAGE, LedgerStore

MAX_PROBLEMS = 1000  # stop checking envelopes one by one past this (a wrong keyring, say)


@dataclass(frozen=True, slots=True)
class Problem:
    """A finding. ``exact``: ``index`` is the divergent leaf itself, not the start of the
    range a checkpoint covers."""

    index: int | None
    what: str
    checkpoint: int | None = None
    exact: bool = True


@dataclass(frozen=True, slots=True)
class AuditReport:
    """``ok`` only if nothing diverged. ``problems`` lists every finding, first first."""

    ok: bool
    tree_size: int
    leaves_checked: int
    checkpoints_checked: int
    envelopes_checked: int
    first_bad_index: int | None
    what: str | None
    bad_checkpoint: int | None
    problems: tuple[Problem, ...] = field(default=())


def _stored_hashes(store: LedgerStore, problems: list[Problem]) -> Iterator[tuple[int, bytes]]:
    """Stored hashes as (hash number, hash); a gap or ragged page ends the stream."""
    expected_page = 0
    for page, blob in store.iter_hash_pages():
        if page != expected_page or len(blob) % merkle.HASH_SIZE or len(blob) > PAGE * 32:
            problems.append(Problem(None, f"hash page {expected_page} is missing or malformed"))
            return
        for k in range(0, len(blob), merkle.HASH_SIZE):
            yield page * PAGE + k // merkle.HASH_SIZE, blob[k:k + merkle.HASH_SIZE]
        if len(blob) < PAGE * merkle.HASH_SIZE:
            expected_page = -1  # a partial page must be the last one
        else:
            expected_page += 1


def audit_store(store: LedgerStore, vkey: str, *, verify: Verify | None = None) -> AuditReport:
    """Audit one ledger database against the trusted ``vkey`` (module docstring).

    Raises ProofError only for an unusable vkey; every finding goes into the report.
    """
    verifier = parse_vkey(vkey)
    problems: list[Problem] = []
    origin = store.meta("origin") or ""
    if store.meta("vkey") not in (None, vkey):
        problems.append(Problem(None, "the ledger names another checkpoint key"))
    roots: dict[int, bytes] = {}
    notes = store.checkpoints()
    for size, note in notes:                                                    # 1
        try:
            checkpoint = verify_checkpoint(note, verifier, origin)
            if checkpoint.size != size:
                raise ProofError(f"note says size {checkpoint.size}")
            roots[size] = checkpoint.root_hash
        except ProofError as exc:
            problems.append(Problem(None, f"checkpoint at size {size}: {exc}", size))
    sizes = sorted(roots)
    compact, hashes = CompactRange(), _stored_hashes(store, problems)
    next_cp, prev_good, checked, hashes_in_step = 0, 0, 0, True
    while next_cp < len(sizes) and sizes[next_cp] == 0:
        if roots[0] != merkle.EMPTY_ROOT:
            problems.append(Problem(0, "checkpoint 0 is not the empty root", 0))
        next_cp += 1
    seen_ids: set[str] = set()
    for leaf in store.iter_leaves():
        index = compact.size
        if leaf.index != index:                                                 # 2
            problems.append(Problem(index, f"leaf {index} is missing (next stored is "
                                           f"{leaf.index})"))
            break
        if leaf.event_id in seen_ids:  # one leaf per event id (the writer enforces it)
            problems.append(Problem(index, f"event {leaf.event_id[:16]} is stored twice"))
        seen_ids.add(leaf.event_id)
        for node, value in zip(merkle.appended_nodes(index),                    # 3
                               compact.append(merkle.leaf_hash(leaf.leaf)), strict=True):
            if not hashes_in_step:
                break
            if next(hashes, None) != (merkle.stored_hash_index(node), value):
                problems.append(Problem(index, f"stored hash of node ({node.level}, "
                                               f"{node.index}) differs from the leaf bytes"))
                hashes_in_step = False  # the stored stream is out of step from here on
        if verify is not None and len(problems) < MAX_PROBLEMS:                # 4
            checked += 1
            try:
                record = verify(leaf.leaf)
                if (record.event_id, record.kind, record.parent_ref) != (
                        leaf.event_id, leaf.kind, leaf.parent_ref):
                    problems.append(Problem(index, "stored event id, kind or parent differs "
                                                   "from the envelope"))
            except Rejected as exc:
                problems.append(Problem(index, f"envelope does not verify: {exc}"))
        if next_cp < len(sizes) and sizes[next_cp] == compact.size:              # 5
            if compact.root() != roots[compact.size]:
                problems.append(Problem(prev_good, f"root at checkpoint {compact.size} differs "
                                                   f"from the leaves in [{prev_good}, "
                                                   f"{compact.size})", compact.size, False))
            else:
                prev_good = compact.size
            next_cp += 1
    size = compact.size
    if hashes_in_step and next(hashes, None) is not None:
        problems.append(Problem(size, f"hashes stored beyond the {size} leaves"))
    for late in sizes[next_cp:]:
        problems.append(Problem(size, f"checkpoint at {late} but only {size} leaves: the tail "
                                      "is missing", late))
    last_signed = sizes[-1] if sizes else None
    if last_signed is None:
        problems.append(Problem(0, "no valid signed checkpoint"))
    elif last_signed < size:
        problems.append(Problem(last_signed, f"leaves [{last_signed}, {size}) are not under a "
                                             "signed checkpoint"))
    for old, new in pairwise(sizes):                                            # 6
        if new > size:
            break
        try:
            merkle.verify_consistency(old, new, roots[old], roots[new],
                                      store.consistency_proof(old, new))
        except ProofError as exc:
            problems.append(Problem(old, f"checkpoints {old} -> {new} inconsistent: {exc}", new,
                                    False))
    return _report(problems, size, len(notes), checked)


def _report(problems: list[Problem], size: int, checkpoints: int, checked: int) -> AuditReport:
    # An exact finding names the leaf; a checkpoint mismatch only the start of its range.
    indexed = ([p for p in problems if p.index is not None and p.exact]
               or [p for p in problems if p.index is not None])
    first = min(indexed, key=lambda p: p.index or 0) if indexed else None
    lead = first or (problems[0] if problems else None)
    bad_cp = min((p.checkpoint for p in problems if p.checkpoint is not None), default=None)
    return AuditReport(not problems, size, size, checkpoints, checked,
                       None if first is None else first.index,
                       None if lead is None else lead.what, bad_cp, tuple(problems))


def audit_ledger(data_dir: Path, keyring_path: Path | None = None) -> AuditReport:
    """``govledger ledger audit``: audit DIR/ledger.db against DIR/ledger.vkey, and every
    envelope signature too when a keyring is given. Raises ConfigError or ProofError."""
    verify = None if keyring_path is None else keyring_verifier(load_keyring(keyring_path))
    with LedgerStore(data_dir / DB_NAME) as store:
        return audit_store(store, read_vkey(data_dir), verify=verify)
