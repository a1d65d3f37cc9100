"""C2SP tlog-cosignature/v1 witness cosignatures (Ed25519) and the "k of these witness
keys" policy that clients apply. Pure: no I/O, time is an argument.

A cosignature (https://c2sp.org/tlog-cosignature, section "Format") is a C2SP signed-note
signature line over a checkpoint::

    — <witness name> base64(key ID (4 bytes) || timestamp (u64, big-endian) || Ed25519 sig)

* key ID = ``SHA-256(name || 0x0A || 0x04 || 32-byte public key)[:4]`` (signature type
  0x04, c2sp.org/signed-note "Signature types"), so a witness key never verifies as a log
  key (0x01) nor the other way round;
* the signed message ("Ed25519 signed message") is ``cosignature/v1\\n``, ``time <T>\\n``
  (decimal, no leading zeroes) and the whole checkpoint body, extension lines included;
* the timestamp is POSIX seconds, at most 2^63 - 1;
* a witness key is published as a vkey ``<name>+<key ID, 8 hex>+base64(0x04 || key)``; this
  module accepts only type 0x04 for witnesses (a 0x01 log vkey is refused, not converted).

Semantics: "as of the specified time, the consistent tree head with the largest size the
cosigner has observed for the log ... has the specified root hash". A client that requires
``quorum`` of ``keys`` (:class:`WitnessPolicy`) therefore knows that at least that many
independent witnesses saw no other history of this log; below the quorum it fails closed
(:func:`verify_witnessed` raises ProofError). As c2sp.org/signed-note says, signature lines
by unknown keys are ignored and a line that names a known key but does not verify rejects
the whole note.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ledger.core.checkpoint import (
    DASH,
    Checkpoint,
    NoteSignature,
    NoteSigner,
    parse_checkpoint,
    split_note,
)
from ledger.core.keys import check_public_key, verify_signature
from ledger.errors import ConfigError, ProofError, Rejected

ALG_COSIGNATURE_V1: Final = 0x04
MAX_TIMESTAMP: Final = 2**63 - 1
MAX_WITNESSES: Final = 64
_HEADER: Final = "cosignature/v1\n"
_HEX8_RE = re.compile(r"^[0-9a-f]{8}$")
_NAME_RE = re.compile(r"^[^\s+]+$")
_B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


@dataclass(frozen=True, slots=True)
class WitnessKey:
    """A witness's cosigning key: its name, 4-byte key ID and raw Ed25519 public key."""

    name: str
    key_hash: bytes
    public_key: bytes

    @property
    def vkey(self) -> str:
        return build_witness_vkey(self.name, self.public_key)


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A verified cosignature: which witness, and the time it states (POSIX seconds)."""

    witness: WitnessKey
    timestamp: int


def witness_key_hash(name: str, public_key: bytes) -> bytes:
    """Key ID of an Ed25519 cosignature/v1 key: SHA-256(name || 0x0A || 0x04 || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1])
                          + public_key).digest()[:4]


def _check_name(name: str) -> None:
    if not name or not _NAME_RE.match(name) or not name.isprintable():
        raise ProofError(f"bad witness name {name[:80]!r}: non-empty, no spaces, no '+'")


def build_witness_vkey(name: str, public_key: bytes) -> str:
    """The witness vkey ``name+hex8+base64(0x04 || key)``. Raises ProofError (bad name)."""
    _check_name(name)
    encoded = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + public_key).decode("ascii")
    return f"{name}+{witness_key_hash(name, public_key).hex()}+{encoded}"


def parse_witness_vkey(text: str) -> WitnessKey:
    """Parse a witness vkey: type 0x04, a strong 32-byte Ed25519 key, a matching key ID.

    Raises ProofError.
    """
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise ProofError("a witness vkey is name+keyid+key")
    name, hex8, encoded = parts
    _check_name(name)
    if not _HEX8_RE.match(hex8):
        raise ProofError("witness vkey key ID must be 8 lowercase hex digits")
    if not _B64_RE.match(encoded) or len(encoded) % 4:
        raise ProofError("witness vkey key is not standard padded base64")
    raw = base64.b64decode(encoded)
    if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
        raise ProofError("not a cosignature/v1 witness key (type 0x04, 32-byte Ed25519 key)")
    public_key = raw[1:]
    try:
        check_public_key(public_key)
    except Rejected as exc:
        raise ProofError(f"witness public key refused: {exc}") from exc
    want = witness_key_hash(name, public_key)
    if want.hex() != hex8:
        raise ProofError("witness vkey key ID does not match its key", expected=want.hex(),
                         calculated=hex8)
    return WitnessKey(name, want, public_key)


def cosigned_message(text: str, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosignature/v1 signs over the checkpoint body ``text``."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ProofError(f"cosignature timestamp {timestamp} is out of range")
    return f"{_HEADER}time {timestamp}\n{text}".encode()


def cosign(text: str, name: str, signer: NoteSigner, timestamp: int) -> str:
    """One cosignature line (ending in a newline) by ``signer`` under ``name`` over the
    checkpoint body ``text`` at ``timestamp``. Raises ProofError (not a checkpoint, a bad
    name or timestamp)."""
    parse_checkpoint(text)
    _check_name(name)
    sig = signer.sign(cosigned_message(text, timestamp))
    raw = witness_key_hash(name, signer.public_key) + timestamp.to_bytes(8, "big") + sig
    return f"{DASH} {name} {base64.b64encode(raw).decode('ascii')}\n"


def verify_cosignature(text: str, signature: NoteSignature, key: WitnessKey) -> Cosignature:
    """Verify one signature line of ``key`` over the checkpoint body ``text``.

    Raises ProofError if the line is not by ``key`` or does not verify.
    """
    if signature.name != key.name or signature.key_hash != key.key_hash:
        raise ProofError(f"signature is not by witness {key.name}+{key.key_hash.hex()}")
    if len(signature.raw) != 4 + 8 + 64:
        raise ProofError(f"cosignature by {key.name} is not 76 bytes")
    timestamp = int.from_bytes(signature.raw[4:12], "big")
    if timestamp > MAX_TIMESTAMP:
        raise ProofError(f"cosignature by {key.name} has a timestamp beyond 2^63 - 1")
    if not verify_signature(key.public_key, cosigned_message(text, timestamp),
                            signature.raw[12:]):
        raise ProofError(f"invalid cosignature by witness {key.name}+{key.key_hash.hex()}")
    return Cosignature(key, timestamp)


@dataclass(frozen=True, slots=True)
class WitnessPolicy:
    """"``quorum`` of these witness ``keys``": at least that many distinct keys must have
    cosigned a checkpoint. Built by :meth:`of`, which checks it."""

    keys: tuple[WitnessKey, ...]
    quorum: int

    @classmethod
    def of(cls, vkeys: Iterable[str], quorum: int) -> WitnessPolicy:
        """A policy from witness vkey texts. Requires 1 <= quorum <= number of keys, distinct
        names+key IDs and distinct public keys (cosignature/v1 does not commit to the name,
        so one key under two names would count twice). Raises ConfigError."""
        try:
            keys = tuple(parse_witness_vkey(v) for v in vkeys)
        except ProofError as exc:
            raise ConfigError(f"witness policy: {exc}") from exc
        if not 1 <= len(keys) <= MAX_WITNESSES:
            raise ConfigError(f"witness policy needs 1 to {MAX_WITNESSES} witness keys")
        if not 1 <= quorum <= len(keys):
            raise ConfigError(f"witness quorum {quorum} must be between 1 and {len(keys)}")
        if len({k.public_key for k in keys}) != len(keys) or \
                len({(k.name, k.key_hash) for k in keys}) != len(keys):
            raise ConfigError("witness policy lists the same witness key twice")
        return cls(keys, quorum)


def cosignatures_of(note: str, keys: Sequence[WitnessKey]) -> tuple[Checkpoint,
                                                                    tuple[Cosignature, ...]]:
    """The checkpoint of ``note`` and the cosignatures on it by any of ``keys`` (one per
    key). Lines by other keys are ignored; the log's own signature is not checked here
    (:func:`ledger.core.checkpoint.verify_checkpoint` does that).

    Raises ProofError if the note or checkpoint is malformed, or a line that names one of
    ``keys`` does not verify (c2sp.org/signed-note: reject the whole note).
    """
    text, signatures = split_note(note)
    checkpoint = parse_checkpoint(text)
    by_id: Mapping[tuple[str, bytes], WitnessKey] = {(k.name, k.key_hash): k for k in keys}
    found: dict[bytes, Cosignature] = {}
    for signature in signatures:
        key = by_id.get((signature.name, signature.key_hash))
        if key is not None:
            found.setdefault(key.public_key, verify_cosignature(text, signature, key))
    return checkpoint, tuple(found.values())


def verify_witnessed(note: str, policy: WitnessPolicy, *, now: int | None = None,
                     max_future_s: int = 300) -> tuple[Cosignature, ...]:
    """Require ``policy.quorum`` valid cosignatures by distinct policy keys on ``note``;
    with ``now`` (POSIX seconds) a cosignature dated more than ``max_future_s`` ahead of it
    does not count (tlog-cosignature: verifiers MAY reject future timestamps).

    Raises ProofError below the quorum, or as :func:`cosignatures_of` does.
    """
    _, found = cosignatures_of(note, policy.keys)
    counted = tuple(c for c in found if now is None or c.timestamp <= now + max_future_s)
    if len(counted) < policy.quorum:
        raise ProofError(f"checkpoint is cosigned by {len(counted)} of the required "
                         f"{policy.quorum} witnesses", expected=str(policy.quorum),
                         calculated=str(len(counted)))
    return counted


def add_cosignatures(note: str, lines: Iterable[str]) -> str:
    """``note`` with the signature ``lines`` appended (each ``— name base64\\n``), skipping
    lines it already has. Raises ProofError if the result is not a well-formed note."""
    text, _ = split_note(note)
    block = note[len(text) + 1:]
    have = set(block.splitlines())
    for line in lines:
        if line.rstrip("\n") not in have:
            block += line if line.endswith("\n") else line + "\n"
            have.add(line.rstrip("\n"))
    joined = f"{text}\n{block}"
    split_note(joined)
    return joined


def verify_bundle_witnessed(bundle: Mapping[str, object], policy: WitnessPolicy, *,
                            now: int | None = None) -> tuple[Cosignature, ...]:
    """Apply ``policy`` to the checkpoint a proof bundle ends at (inclusion and lineage:
    ``checkpoint``; consistency: ``new_checkpoint``, which the proof ties the old one to).
    Call after :func:`ledger.core.bundles.verify_bundle`, which checks the log's signature.

    Raises ProofError below the quorum or for a bundle without a checkpoint note.
    """
    key = "new_checkpoint" if "new_checkpoint" in bundle else "checkpoint"
    note = bundle.get(key)
    if not isinstance(note, str):
        raise ProofError(f"bundle has no {key} note to check witnesses on")
    return verify_witnessed(note, policy, now=now)
