"""Audit and start-up check: recompute the ledger from the stored leaf bytes and report the
first divergence (DESIGN.md section 7).

One streaming pass over ``leaves`` and ``hash_pages`` in index order, then one over the
lookup index (ledger.log.recompute.recompute, steps 2-6), shared by ``govledger ledger audit``
(:func:`audit_store`) and the sequencer's check before it appends or anything is served
(:func:`check_on_open`):

1. every checkpoint note must verify under the trusted vkey and name the ledger's origin (the
   audit; the start-up check verifies the latest note and compares the bodies of the others);
2. leaf indices must run 0, 1, 2, ... without a gap, and no event id may appear twice;
3. every leaf hash and every stored subtree hash must equal the one recomputed from the leaf
   bytes (RFC 9162 2.1.1), and no extra hash may be stored (proofs are served from them);
4. the stored event id, kind and parent reference (what lookups and lineage walks use) must
   be the ones the envelope bytes carry: the SHA-256 of the DSSE payload, the kind of its
   payloadType, the event's ``parent_ref()``; with a ``verify`` callable (the audit with a
   keyring, the start-up check for leaves after the last checkpoint) the envelope must also
   verify;
5. at each checkpoint's size the recomputed root must equal the signed root; a checkpoint
   beyond the last leaf means the tail was truncated; leaves after the last checkpoint are
   reported as not covered by a signature;
6. the lookup index (``keys``/``recent_keys``) must hold exactly one row per event id and one
   per decision subject, each naming its leaf: a missing row would hide an event (a proof
   "not found", a duplicate appended);
7. (audit only) consecutive checkpoints must be consistent (RFC 9162 2.1.4.2, proofs from
   stored nodes). Implied by 3 and 5 when those pass; kept as an independent check;
8. (audit only) causal order: no leaf precedes an event it answers or refers to
   (ledger/core/causes.py, ledger.log.causal.check_order); the first violation is reported.
   A cause absent from the log is not a violation (the sequencer appended the event after
   its hold-back bound, and logged why).

Memory: 18 bytes per leaf (the index keys step 6 compares). Time at 1M leaves:
docs/ledger.md.

``first_bad_index`` is the lowest leaf index found divergent. When only a checkpoint root
disagrees (say, a byte of a signature edited *and* the stored hashes recomputed) the exact
leaf cannot be named: it is the first leaf after the previous good checkpoint. A checkpoint
whose note itself is bad names no leaf: ``bad_checkpoint`` holds its size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.core import merkle
from ledger.core.checkpoint import (
    Checkpoint,
    NoteVerifier,
    parse_checkpoint,
    parse_vkey,
    verify_checkpoint,
)
from ledger.errors import ProofError
from ledger.log.causal import check_order
from ledger.log.recompute import Problem, recompute
from ledger.log.store import LedgerStore

if TYPE_CHECKING:
    from ledger.log.sequencer import Verify


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


# -- the two callers ---------------------------------------------------------------------------


def audit_store(store: LedgerStore, vkey: str, *, verify: Verify | None = None) -> AuditReport:
    """Audit one ledger database against the trusted ``vkey`` (module docstring).

    Raises ProofError only for an unusable vkey, Unavailable (SQLite); every finding goes
    into the report.
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
    found = recompute(store, roots, verify=verify)                              # 2-6
    problems += found.problems
    size, sizes = found.size, sorted(roots)
    last_signed = sizes[-1] if sizes else None
    if last_signed is None:
        problems.append(Problem(0, "no valid signed checkpoint"))
    elif last_signed < size:
        problems.append(Problem(last_signed, f"leaves [{last_signed}, {size}) are not under a "
                                             "signed checkpoint"))
    for old, new in pairwise(sizes):                                            # 7
        if new > size:
            break
        try:
            merkle.verify_consistency(old, new, roots[old], roots[new],
                                      store.consistency_proof(old, new))
        except ProofError as exc:
            problems.append(Problem(old, f"checkpoints {old} -> {new} inconsistent: {exc}", new,
                                    False))
    order = check_order(store, size)                                            # 8
    if order.first_violation is not None:
        problems.append(Problem(order.first_violation, f"causal order: {order.what}"))
    return _report(problems, size, len(notes), found.envelopes)


def check_on_open(store: LedgerStore, verifier: NoteVerifier, origin: str,
                  reverify: Verify) -> int:
    """The sequencer's start-up check: steps 2-6 against the latest signed checkpoint, whose
    note must verify under ``verifier``; every older checkpoint's body (size, root) must
    match the leaves too (their signatures are checked when a bundle serves them: one
    Ed25519 check each at start would cost more than the rest at one checkpoint per leaf).
    Leaves after the latest checkpoint (a crash before it was signed) must also verify with
    ``reverify``. Returns the latest signed size (0 if none).

    Raises ProofError naming the first divergent leaf index, Unavailable (SQLite).
    """
    notes, roots, signed = store.checkpoints(), {}, 0
    for size, note in notes:
        latest = size == notes[-1][0]
        checkpoint = (verify_checkpoint(note, verifier, origin) if latest
                      else _unsigned_body(note, origin))
        if checkpoint.size != size:
            raise ProofError(f"checkpoint row {size} holds a note of another size",
                             expected=str(size), calculated=str(checkpoint.size))
        roots[size], signed = checkpoint.root_hash, size
    if (size := store.tree_size()) < signed:
        raise ProofError(f"the ledger does not match its signed checkpoint of size {signed} "
                         f"at leaf {size}: the ledger has {size} leaves")
    found = recompute(store, roots, verify=reverify, verify_from=signed, first_only=True)
    if found.problems:
        report = _report(found.problems, found.size, len(notes), found.envelopes)
        where = "" if report.first_bad_index is None else f" at leaf {report.first_bad_index}"
        raise ProofError(f"the ledger does not match its signed checkpoint of size {signed}"
                         f"{where}: {report.what}")
    return signed


def _unsigned_body(note: str, origin: str) -> Checkpoint:
    """The checkpoint a note carries, its signature not checked. Raises ProofError."""
    body = parse_checkpoint(note[:note.rfind("\n\n") + 1])
    if body.origin != origin:
        raise ProofError("checkpoint is for another log", expected=origin,
                         calculated=body.origin)
    return body


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
    envelope signature under the keys in force when it was logged: the governance followed
    from the genesis (trust anchors DIR/keys/operator.pub and authority.pub), plus the keys
    of ``keyring_path`` if given (a ledger written before governance events). Without the
    anchors, only under ``keyring_path``, or no signature check when neither exists.
    Raises ConfigError or ProofError."""
    # Imported here: the sequencer imports this module for its start-up check.
    from ledger.keyfiles import load_keyring
    from ledger.log.governance import GovernanceFollower, anchors, governance_verifier
    from ledger.log.ledger_dir import DB_NAME, read_vkey
    from ledger.log.sequencer import keyring_verifier

    verify = None if keyring_path is None else keyring_verifier(load_keyring(keyring_path))
    if (data_dir / "keys" / "operator.pub").exists():
        follower = GovernanceFollower(*anchors(data_dir))
        if keyring_path is not None:
            for principal in load_keyring(keyring_path).principals():
                if principal.key_id not in follower.keyring:
                    follower.keyring.add(principal)
        verify = governance_verifier(follower)
    with LedgerStore(data_dir / DB_NAME) as store:
        return audit_store(store, read_vkey(data_dir), verify=verify)
