"""Proof bundles offline: their shapes, parsing, and verification with a vkey and signer keys.

Pure (no files, no clock): :mod:`ledger.log.proofs` exports bundles from a ledger and reads
bundle files; the SDK, the gate and the CLI verify them here.

Shapes (DESIGN.md section 7; hashes lowercase hex, leaves standard base64)::

    inclusion   {"origin","index","tree_size","leaf","leaf_hash","proof","root_hash",
                 "checkpoint"}
    consistency {"origin","old_size","new_size","old_root","new_root","proof",
                 "old_checkpoint","new_checkpoint"}
    lineage     {"format":"govledger.lineage.v1","origin","event_id","tree_size","root_hash",
                 "checkpoint","hops":[{"event_id","index","leaf","leaf_hash","proof"}, ...]}

A bundle is always against a *signed* checkpoint: inclusion and lineage bundles use the
latest one (an event sequenced after it cannot be proved yet), consistency bundles need a
checkpoint at both sizes. Offline verification (:func:`verify_bundle`) checks, in order: the
bundle's shape (exact keys, types); each checkpoint's signature under the vkey and its origin;
that the checkpoint's size and root are the bundle's; each leaf hash from the leaf bytes; the
RFC 9162 proof. For a lineage bundle also: each hop's event id is the SHA-256 of its
envelope's payload, and each hop's ``parent_ref`` (read from the payload) is the next hop's
event id, the last hop having none (the lineage root). A lineage whose grants waited for
human approval (docs/approvals.md) carries ``"approvals"``: one more hop (same shape) per id a
grant's artifact names in its ``approval.*`` metadata (the ApprovalRequired and each
ApprovalGiven); the verifier checks each is in the log, signed by a key given, about that
grant's request, that none is missing, and that the distinct approvers reach the ``k`` of
the ApprovalRequired and hold its role (in the keyring given).

Who signed each leaf (:class:`SignerKeys`): a Merkle proof only says that some bytes are in
the log, so a lineage bundle is verified only together with the keys its hops must be signed
with; without them it fails closed (ConfigError), whatever the log logged. Every hop must
verify under a key given: authority kinds (``AUTHORITY_KINDS``) under the authority key,
every other kind under a non-authority key of the keyring (``signers.check_signer_kind``);
a hop signed by anyone else is refused (ProofError). An inclusion bundle's leaf is checked the
same way when keys are given; without keys it still proves inclusion of those bytes, and
:attr:`VerifiedBundle.signers_checked` says that nobody vouched for their signer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ledger.core import merkle
from ledger.core.approval_events import ApprovalGiven, ApprovalRequired
from ledger.core.checkpoint import Checkpoint, NoteVerifier, parse_vkey, verify_checkpoint
from ledger.core.envelope import parse_envelope, parse_payload
from ledger.core.events import AuthorizationGranted, Event
from ledger.core.signers import SignerKeys
from ledger.errors import ConfigError, ProofError, Rejected

LINEAGE_FORMAT: Final = "govledger.lineage.v1"
MAX_HOPS: Final = 512
MAX_BUNDLE_BYTES: Final = 64 * 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

INCLUSION_KEYS = frozenset({"origin", "index", "tree_size", "leaf", "leaf_hash", "proof",
                            "root_hash", "checkpoint"})
CONSISTENCY_KEYS = frozenset({"origin", "old_size", "new_size", "old_root", "new_root",
                              "proof", "old_checkpoint", "new_checkpoint"})
LINEAGE_KEYS = frozenset({"format", "origin", "event_id", "tree_size", "root_hash",
                          "checkpoint", "hops"})
HOP_KEYS = frozenset({"event_id", "index", "leaf", "leaf_hash", "proof"})

Bundle = dict[str, object]


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """What a bundle proved: ``kind`` is inclusion, consistency or lineage."""

    kind: str
    origin: str
    tree_size: int
    root_hash: str
    event_ids: tuple[str, ...] = ()
    signers_checked: bool = False
    witnesses: tuple[str, ...] = ()   # witnesses whose cosignatures were checked (names)


def _int(bundle: Mapping[str, object], key: str) -> int:
    value = bundle.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProofError(f"bundle field {key!r} must be an integer >= 0")
    return value


def _str(bundle: Mapping[str, object], key: str) -> str:
    value = bundle.get(key)
    if not isinstance(value, str):
        raise ProofError(f"bundle field {key!r} must be a string")
    return value


def _list(bundle: Mapping[str, object], key: str) -> list[object]:
    value = bundle.get(key)
    if not isinstance(value, list):
        raise ProofError(f"bundle field {key!r} must be a list")
    return value


def _hash(bundle: Mapping[str, object], key: str) -> bytes:
    text = _str(bundle, key)
    if not _HEX64.match(text):
        raise ProofError(f"bundle field {key!r} must be 64 lowercase hex digits")
    return bytes.fromhex(text)


def _proof(bundle: Mapping[str, object]) -> list[bytes]:
    items = _list(bundle, "proof")
    if not all(isinstance(h, str) and _HEX64.match(h) for h in items):
        raise ProofError("bundle proof must be a list of 64-hex-digit hashes")
    return [bytes.fromhex(str(h)) for h in items]


def _leaf(bundle: Mapping[str, object]) -> bytes:
    text = _str(bundle, "leaf")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ProofError("bundle leaf is not base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise ProofError("bundle leaf is not canonical standard base64")
    return raw


def _keys(bundle: Mapping[str, object], want: frozenset[str], what: str) -> None:
    if set(bundle) != want:
        raise ProofError(f"{what} has keys {sorted(bundle)}, expected {sorted(want)}")


def _checkpoint(bundle: Mapping[str, object], key: str, verifier: NoteVerifier,
                size: int, root: bytes) -> Checkpoint:
    checkpoint = verify_checkpoint(_str(bundle, key), verifier, _str(bundle, "origin"))
    if checkpoint.size != size:
        raise ProofError(f"{key} is for another size", expected=str(size),
                         calculated=str(checkpoint.size))
    if checkpoint.root_hash != root:
        raise ProofError(f"{key} has another root", expected=root.hex(),
                         calculated=checkpoint.root_hash.hex())
    return checkpoint


def _verify_hop(hop: Mapping[str, object], size: int, root: bytes,
                signers: SignerKeys | None) -> bytes:
    leaf, leaf_hash = _leaf(hop), _hash(hop, "leaf_hash")
    if merkle.leaf_hash(leaf) != leaf_hash:
        raise ProofError("leaf hash is not the hash of the leaf",
                         expected=leaf_hash.hex(), calculated=merkle.leaf_hash(leaf).hex())
    merkle.verify_inclusion(_int(hop, "index"), size, leaf_hash, _proof(hop), root)
    if signers is not None:
        signers.check(leaf)
    return leaf


def verify_inclusion_bundle(bundle: Mapping[str, object], verifier: NoteVerifier,
                            signers: SignerKeys | None = None) -> VerifiedBundle:
    """Verify an inclusion bundle (module docstring); the leaf's signer too when ``signers``
    are given. Raises ProofError."""
    _keys(bundle, INCLUSION_KEYS, "inclusion bundle")
    size, root = _int(bundle, "tree_size"), _hash(bundle, "root_hash")
    _checkpoint(bundle, "checkpoint", verifier, size, root)
    _verify_hop(bundle, size, root, signers)
    return VerifiedBundle("inclusion", _str(bundle, "origin"), size, root.hex(),
                          signers_checked=signers is not None)


def verify_consistency_bundle(bundle: Mapping[str, object],
                              verifier: NoteVerifier) -> VerifiedBundle:
    """Verify a consistency bundle (module docstring). Raises ProofError."""
    _keys(bundle, CONSISTENCY_KEYS, "consistency bundle")
    old_size, new_size = _int(bundle, "old_size"), _int(bundle, "new_size")
    old_root, new_root = _hash(bundle, "old_root"), _hash(bundle, "new_root")
    _checkpoint(bundle, "old_checkpoint", verifier, old_size, old_root)
    _checkpoint(bundle, "new_checkpoint", verifier, new_size, new_root)
    merkle.verify_consistency(old_size, new_size, old_root, new_root, _proof(bundle))
    return VerifiedBundle("consistency", _str(bundle, "origin"), new_size, new_root.hex())


def _parent_of(leaf: bytes) -> tuple[str, str | None]:
    """(event id, parent_ref) read from an envelope's payload, signatures not checked."""
    try:
        parsed = parse_envelope(leaf)
        event = parse_payload(parsed.payload_type, parsed.payload)
    except Rejected as exc:
        raise ProofError(f"lineage hop is not a valid envelope: {exc}") from exc
    return hashlib.sha256(parsed.payload).hexdigest(), event.parent_ref()


def verify_lineage_bundle(bundle: Mapping[str, object], verifier: NoteVerifier,
                          signers: SignerKeys) -> VerifiedBundle:
    """Verify a lineage bundle and each hop's signer (module docstring). Raises ProofError."""
    _keys(bundle, LINEAGE_KEYS | ({"approvals"} if "approvals" in bundle else set()),
          "lineage bundle")
    if bundle.get("format") != LINEAGE_FORMAT:
        raise ProofError(f"lineage bundle format must be {LINEAGE_FORMAT}")
    size, root = _int(bundle, "tree_size"), _hash(bundle, "root_hash")
    _checkpoint(bundle, "checkpoint", verifier, size, root)
    hops = _list(bundle, "hops")
    if not hops or len(hops) > MAX_HOPS:
        raise ProofError(f"a lineage bundle has 1 to {MAX_HOPS} hops")
    expected: str | None = _str(bundle, "event_id")
    ids: list[str] = []
    leaves: list[bytes] = []
    for n, hop in enumerate(hops):
        if not isinstance(hop, dict):
            raise ProofError(f"hop {n} is not an object")
        _keys(hop, HOP_KEYS, f"hop {n}")
        try:
            leaves.append(_verify_hop(hop, size, root, signers))
            event_id, parent = _parent_of(leaves[-1])
        except ProofError as exc:
            raise ProofError(f"hop {n}: {exc}") from exc
        if event_id != _str(hop, "event_id") or event_id != expected:
            raise ProofError(f"hop {n} is not the expected event", expected=expected,
                             calculated=event_id)
        if event_id in ids:
            raise ProofError(f"hop {n} repeats an event: lineage cycle")
        ids.append(event_id)
        expected = parent
    if expected is not None:
        raise ProofError(f"lineage stops before its root: {expected} is missing")
    approvals = bundle.get("approvals", [])
    if not isinstance(approvals, list):
        raise ProofError("approvals is not a list")
    _verify_approvals(leaves, approvals, size, root, signers)
    return VerifiedBundle("lineage", _str(bundle, "origin"), size, root.hex(), tuple(ids),
                          signers_checked=True)


def approvals_named(leaf: bytes) -> dict[str, str]:
    """The approval ids a grant leaf names (``approval.*`` metadata) -> the request id they
    answer; empty for any other leaf. Raises ProofError for a leaf that does not parse."""
    event = _event(leaf)
    if not isinstance(event, AuthorizationGranted):
        return {}
    return {value: event.request_id for key, value in event.artifact.governance.items()
            if key.startswith("approval.") and isinstance(value, str)}


def _event(leaf: bytes) -> Event:
    try:
        parsed = parse_envelope(leaf)
        return parse_payload(parsed.payload_type, parsed.payload)
    except Rejected as exc:
        raise ProofError(f"not a valid envelope: {exc}") from exc


def _verify_approvals(leaves: list[bytes], hops: list[object], size: int, root: bytes,
                      signers: SignerKeys) -> None:
    """The approval hops of a lineage bundle (module docstring). Raises ProofError."""
    named: dict[str, str] = {}
    for leaf in leaves:
        named |= approvals_named(leaf)
    found: dict[str, Event] = {}
    for n, hop in enumerate(hops):
        if not isinstance(hop, dict):
            raise ProofError(f"approval {n} is not an object")
        _keys(hop, HOP_KEYS, f"approval {n}")
        leaf = _verify_hop(hop, size, root, signers)
        event_id, _ = _parent_of(leaf)
        event = _event(leaf)
        if event_id != _str(hop, "event_id") or event_id not in named or event_id in found:
            raise ProofError(f"approval {n} is not one a grant of the lineage names, once")
        if (not isinstance(event, ApprovalRequired | ApprovalGiven)
                or event.request_id != named[event_id]):
            raise ProofError(f"approval {n} is not an approval of its grant's request")
        found[event_id] = event
    if missing := sorted(set(named) - set(found)):
        raise ProofError(f"the lineage lacks the approvals its grants name: {missing}")
    for required in (e for e in found.values() if isinstance(e, ApprovalRequired)):
        people = {e.signer for e in found.values()
                  if isinstance(e, ApprovalGiven) and e.request_id == required.request_id
                  and _holds(signers, e.signer, e.tenant, required.role)}
        if len(people) < required.k:
            raise ProofError(f"{len(people)} approvers with role {required.role} for "
                             f"{required.request_id[:16]}, {required.k} required")
    if named and not any(isinstance(e, ApprovalRequired) for e in found.values()):
        raise ProofError("approvals without the ApprovalRequired they answer")


def _holds(signers: SignerKeys, identity: str, tenant: str, role: str) -> bool:
    """Whether the keyring given has ``identity`` of ``tenant`` with ``role``."""
    ring = signers.keyring
    return ring is not None and any(
        p.identity == identity and p.tenant in (tenant, "*") and role in p.roles
        for p in ring.principals())


def verify_bundle(bundle: bytes | Mapping[str, object], vkey: str,
                  signers: SignerKeys | None = None) -> VerifiedBundle:
    """Verify any bundle offline with the log's vkey text and the keys its leaves must be
    signed with (module docstring).

    Raises ProofError if the bundle does not verify, ConfigError for a lineage bundle given
    no signer keys (it would prove nothing about who decided).
    """
    if isinstance(bundle, bytes):
        if len(bundle) > MAX_BUNDLE_BYTES:
            raise ProofError("bundle is too large")
        try:
            bundle = json.loads(bundle)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProofError(f"bundle is not JSON: {exc}") from exc
    if not isinstance(bundle, Mapping):
        raise ProofError("bundle is not a JSON object")
    verifier = parse_vkey(vkey)
    if signers is not None and signers.empty:
        signers = None
    if "hops" in bundle:
        if signers is None:
            raise ConfigError("a lineage bundle needs the keys its hops must be signed with: "
                              "give the authority key or a keyring (--authority, --keyring "
                              "or --data)")
        return verify_lineage_bundle(bundle, verifier, signers)
    if "old_size" in bundle:
        return verify_consistency_bundle(bundle, verifier)
    return verify_inclusion_bundle(bundle, verifier, signers)
