"""Proof bundles exported from a ledger, and bundle files verified (:mod:`ledger.core.bundles`).

A bundle is always against a *signed* checkpoint: inclusion and lineage bundles use the
latest one (an event sequenced after it cannot be proved yet), consistency bundles need a
checkpoint at both sizes; the bundle shapes and their offline verification are in
:mod:`ledger.core.bundles`. Export refuses while the sequencer's start-up check of the
ledger has not passed (:meth:`ledger.log.store.LedgerStore.verified`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from pathlib import Path

from ledger.core import merkle
from ledger.core.bundles import (
    LINEAGE_FORMAT,
    MAX_HOPS,
    Bundle,
    VerifiedBundle,
    approvals_named,
    verify_bundle,
)
from ledger.core.checkpoint import Checkpoint, NoteVerifier, parse_vkey, verify_checkpoint
from ledger.core.cosignature import WitnessPolicy, verify_bundle_witnessed
from ledger.core.signers import SignerKeys
from ledger.errors import ConfigError, InvalidRange, NotFound, NotPublished, ProofError, Unavailable
from ledger.log.ledger_dir import DB_NAME, read_vkey
from ledger.log.records import StoredLeaf
from ledger.log.store import LedgerStore

# -- export -----------------------------------------------------------------------------------


def _published(store: LedgerStore, vkey: str | None = None,
               size: int | None = None) -> tuple[Checkpoint, str, NoteVerifier]:
    """The latest checkpoint (or the one at ``size``), verified under ``vkey`` (default: the
    one the ledger recorded). Raises ProofError (NotFound: no checkpoint at ``size``), or
    Unavailable while the sequencer's start-up check of the ledger has not passed
    (LedgerStore.verified)."""
    if store.verified() is None:
        raise Unavailable("the ledger is not verified against its signed checkpoint yet (the "
                          "sequencer checks it when it starts; `ledger audit` checks it now)")
    vkey = vkey if vkey is not None else store.meta("vkey")
    origin, latest = store.meta("origin"), store.latest_checkpoint()
    if vkey is None or origin is None or latest is None:
        raise ProofError("ledger has no signed checkpoint")
    if size is not None:
        note = store.checkpoint_at(size)
        if note is None:
            raise NotFound(f"no signed checkpoint at size {size}")
        latest = (size, note)
    verifier = parse_vkey(vkey)
    return verify_checkpoint(latest[1], verifier, origin), latest[1], verifier


def published_note(store: LedgerStore, vkey: str | None = None,
                   size: int | None = None) -> str:
    """The latest signed checkpoint's note text (or the one at ``size``), verified under
    ``vkey`` (default: the one the ledger recorded). Raises ProofError or Unavailable."""
    return _published(store, vkey, size)[1]


def not_found(index: int | None, event_id: str | None) -> NotFound:
    """The answer for a leaf that is not there (the API gives the same one for a leaf the
    caller may not see: another tenant's ids look unknown)."""
    if event_id is not None:
        return NotFound(f"event {event_id} is not in the ledger")
    return NotFound(f"no leaf at index {index}")


def _locate(store: LedgerStore, index: int | None, event_id: str | None) -> StoredLeaf:
    if (index is None) == (event_id is None):
        raise ConfigError("give exactly one of index or event id")
    if event_id is not None:
        leaf = store.find(event_id)
        if leaf is None:
            raise not_found(None, event_id)
        return leaf
    if index is None or index >= store.tree_size():
        raise not_found(index, None)
    return store.leaf(index)


def _under(checkpoint: Checkpoint, leaf: StoredLeaf) -> StoredLeaf:
    """``leaf``, if the signed ``checkpoint`` covers it. Raises NotPublished."""
    if leaf.index >= checkpoint.size:
        raise NotPublished(f"leaf {leaf.index} is sequenced but not yet under a signed "
                           f"checkpoint (size {checkpoint.size}); retry shortly")
    return leaf


def _entry(leaf: StoredLeaf) -> Bundle:
    return {"event_id": leaf.event_id, "index": leaf.index,
            "leaf": base64.b64encode(leaf.leaf).decode("ascii"),
            "leaf_hash": merkle.leaf_hash(leaf.leaf).hex()}


def _hop(store: LedgerStore, leaf: StoredLeaf, size: int) -> Bundle:
    return {**_entry(leaf), "proof": [h.hex() for h in store.inclusion_proof(leaf.index, size)]}


def entry(store: LedgerStore, *, index: int | None = None,
          event_id: str | None = None) -> Bundle:
    """One sequenced leaf (by index or event id), published or not: ``{"event_id", "index",
    "leaf", "leaf_hash"}``. Raises NotFound or ConfigError (not exactly one of the two)."""
    return _entry(_locate(store, index, event_id))


def inclusion_bundle(store: LedgerStore, *, index: int | None = None,
                     event_id: str | None = None, vkey: str | None = None,
                     size: int | None = None) -> Bundle:
    """Inclusion bundle of one leaf (by index or event id) against the latest checkpoint (or
    the signed one at ``size``: a witnessed one), verified under ``vkey`` (default: the one
    the ledger recorded).

    Raises NotFound, NotPublished, ProofError (the checkpoint does not verify), Unavailable
    or ConfigError (not exactly one of index and event id).
    """
    checkpoint, note, _ = _published(store, vkey, size)
    leaf = _under(checkpoint, _locate(store, index, event_id))
    hop = _hop(store, leaf, checkpoint.size)
    return {"origin": checkpoint.origin, "index": leaf.index, "tree_size": checkpoint.size,
            "leaf": hop["leaf"], "leaf_hash": hop["leaf_hash"], "proof": hop["proof"],
            "root_hash": checkpoint.root_hash.hex(), "checkpoint": note}


def consistency_bundle(store: LedgerStore, old_size: int, new_size: int | None = None, *,
                       vkey: str | None = None) -> Bundle:
    """Consistency bundle between two signed checkpoints (``new_size`` default: latest),
    verified under ``vkey`` (default: the one the ledger recorded).

    Raises InvalidRange (old_size > new_size), NotFound (a size has no signed checkpoint),
    ProofError or Unavailable.
    """
    latest, latest_note, verifier = _published(store, vkey)
    new_size = latest.size if new_size is None else new_size
    if old_size > new_size:
        raise InvalidRange("old_size must be <= new_size")
    notes = {}
    for size in (old_size, new_size):
        note = latest_note if size == latest.size else store.checkpoint_at(size)
        if note is None:
            raise NotFound(f"no signed checkpoint at size {size}")
        notes[size] = (verify_checkpoint(note, verifier, latest.origin), note)
    proof = store.consistency_proof(old_size, new_size)
    return {"origin": latest.origin, "old_size": old_size, "new_size": new_size,
            "old_root": notes[old_size][0].root_hash.hex(),
            "new_root": notes[new_size][0].root_hash.hex(),
            "proof": [h.hex() for h in proof],
            "old_checkpoint": notes[old_size][1], "new_checkpoint": notes[new_size][1]}


def lineage_bundle(store: LedgerStore, event_id: str, *, vkey: str | None = None,
                   size: int | None = None) -> Bundle:
    """The chain from ``event_id`` back to its lineage root, each hop proved against the
    latest checkpoint (or the signed one at ``size``), verified under ``vkey`` (default: the
    one the ledger recorded).

    Raises NotFound or NotPublished (``event_id`` itself), NotFound (a hop missing or
    unpublished, or a cycle: the lineage cannot be proved), ProofError or Unavailable.
    """
    checkpoint, note, _ = _published(store, vkey, size)
    head = _under(checkpoint, _locate(store, None, event_id))
    hops: list[Bundle] = [_hop(store, head, checkpoint.size)]
    seen = {event_id}
    current = head.parent_ref
    while current is not None:
        if current in seen or len(hops) >= MAX_HOPS:
            raise NotFound(f"lineage cannot be proved: lineage of {event_id} cycles or "
                           f"exceeds {MAX_HOPS} hops")
        seen.add(current)
        leaf = store.find(current)
        if leaf is None:
            raise NotFound(f"lineage cannot be proved: lineage hop {current} is not in the "
                           "ledger")
        if leaf.index >= checkpoint.size:
            raise NotFound(f"lineage cannot be proved: lineage hop {current} is not yet "
                           "under a signed checkpoint")
        hops.append(_hop(store, leaf, checkpoint.size))
        current = leaf.parent_ref
    bundle: Bundle = {"format": LINEAGE_FORMAT, "origin": checkpoint.origin,
                      "event_id": event_id, "tree_size": checkpoint.size,
                      "root_hash": checkpoint.root_hash.hex(), "checkpoint": note, "hops": hops}
    if approvals := _approval_hops(store, hops, checkpoint.size):
        bundle["approvals"] = approvals
    return bundle


def _approval_hops(store: LedgerStore, hops: list[Bundle], size: int) -> list[Bundle]:
    """The approvals the grants of a lineage name (docs/approvals.md), each proved. Raises
    NotFound for one missing or not yet under the checkpoint."""
    named: dict[str, str] = {}
    for hop in hops:
        named |= approvals_named(base64.b64decode(str(hop["leaf"])))
    found: list[Bundle] = []
    for approval_id in named:
        leaf = store.find(approval_id)
        if leaf is None or leaf.index >= size:
            raise NotFound(f"lineage cannot be proved: approval {approval_id} is not in the "
                           "ledger under a signed checkpoint yet")
        found.append(_hop(store, leaf, size))
    return found


# -- the data directory: one call per CLI command -------------------------------------------


def _store(data_dir: Path) -> LedgerStore:
    return LedgerStore(data_dir / DB_NAME)


def prove_inclusion(data_dir: Path, *, index: int | None = None,
                    event_id: str | None = None) -> Bundle:
    """``govledger ledger prove inclusion``. Raises ProofError or ConfigError."""
    with _store(data_dir) as store:
        return inclusion_bundle(store, index=index, event_id=event_id)


def prove_consistency(data_dir: Path, old_size: int, new_size: int | None = None) -> Bundle:
    """``govledger ledger prove consistency``. Raises ProofError or ConfigError."""
    with _store(data_dir) as store:
        return consistency_bundle(store, old_size, new_size)


def prove_lineage(data_dir: Path, event_id: str) -> Bundle:
    """``govledger ledger prove lineage``. Raises ProofError or ConfigError."""
    with _store(data_dir) as store:
        return lineage_bundle(store, event_id)


def verify_bundle_file(path: Path, vkey: str | Path, signers: SignerKeys | None = None, *,
                       witnesses: WitnessPolicy | None = None) -> VerifiedBundle:
    """``govledger ledger verify``: a bundle file, the vkey (text, a vkey file, or a ledger
    data directory), the signer keys (:func:`ledger.core.signers.load_signer_keys`) and,
    if given, the witness policy its checkpoint must meet.

    Raises ProofError (also below the witness quorum) or ConfigError (also for a lineage
    bundle without signer keys)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return verify_bundle_bytes(data, vkey, signers, witnesses=witnesses)


def verify_bundle_bytes(data: bytes, vkey: str | Path, signers: SignerKeys | None = None, *,
                        witnesses: WitnessPolicy | None = None) -> VerifiedBundle:
    """:func:`verify_bundle_file` of bundle bytes already read (a bundle fetched over HTTP).
    Raises ProofError or ConfigError."""
    if isinstance(vkey, Path):
        vkey = read_vkey(vkey) if vkey.is_dir() else _read_text(vkey)
    result = verify_bundle(data, vkey.strip(), signers)
    if witnesses is None:
        return result
    bundle = json.loads(data)  # verify_bundle parsed it strictly already
    found = verify_bundle_witnessed(bundle, witnesses, now=int(time.time()))
    return dataclasses.replace(result, witnesses=tuple(c.witness.name for c in found))


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def bundle_json(bundle: Bundle) -> str:
    """Serialize a bundle (stable key order, one trailing newline)."""
    return json.dumps(bundle, sort_keys=True, indent=2) + "\n"

