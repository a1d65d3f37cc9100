"""C2SP checkpoints in C2SP signed notes, Ed25519 only. Pure: no I/O.

Checkpoint body (C2SP tlog-checkpoint, https://c2sp.org/tlog-checkpoint)::

    <origin>\\n
    <tree size, decimal, no leading zeros>\\n
    <root hash, standard base64>\\n
    [<extension line>\\n ...]

Signed note (C2SP signed-note, https://c2sp.org/signed-note): the body, a blank line, then
signature lines ``— <name> <base64(key hash (4 bytes) || Ed25519 signature)>\\n`` (U+2014).
The Ed25519 key hash is the first 4 bytes of ``SHA-256(name || 0x0A || 0x01 || public key)``;
the signature covers the body bytes. Verifier keys are published as
``<name>+<key hash, 8 hex>+<base64(0x01 || public key)>`` (the vkey form).

Opening a note (:func:`open_note`) is strict: malformed text, a signature line by the
expected key that fails, or no valid signature by the expected key raises ProofError;
signatures by other keys are ignored (a witness may cosign).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Final, Protocol

from ledger.core.keys import check_public_key, verify_signature
from ledger.core.merkle import HASH_SIZE, TreeSize
from ledger.errors import ProofError, Rejected

ALG_ED25519: Final = 0x01
DASH: Final = "\u2014"
MAX_NOTE_BYTES: Final = 1 << 20
MAX_SIGNATURES: Final = 100
_NAME_RE = re.compile(r"^[^\s+]+$")
_SIZE_RE = re.compile(r"^(0|[1-9][0-9]{0,19})$")
_B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_HEX8_RE = re.compile(r"^[0-9a-f]{8}$")


class NoteSigner(Protocol):
    """What signs a note: ledger.core.keys.Signer fits."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A parsed checkpoint body. ``extensions`` are the optional lines after the root."""

    origin: str
    size: TreeSize
    root_hash: bytes
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A parsed vkey: the key's name, its 4-byte key hash and the raw Ed25519 public key."""

    name: str
    key_hash: bytes
    public_key: bytes


def _b64decode(text: str, what: str) -> bytes:
    if not _B64_RE.match(text) or len(text) % 4:
        raise ProofError(f"{what} is not standard padded base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ProofError(f"{what} is not base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise ProofError(f"{what} is not canonical base64")
    return raw


def _check_name(name: str) -> None:
    if not name or not _NAME_RE.match(name) or not name.isprintable():
        raise ProofError(f"bad key name {name[:80]!r}: non-empty, no spaces, no '+'")


def key_hash(name: str, public_key: bytes) -> bytes:
    """C2SP signed-note Ed25519 key hash: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def build_vkey(name: str, public_key: bytes) -> str:
    """The vkey text ``name+hex8+base64(0x01 || key)``. Raises ProofError for a bad name."""
    _check_name(name)
    encoded = base64.b64encode(bytes([ALG_ED25519]) + public_key).decode("ascii")
    return f"{name}+{key_hash(name, public_key).hex()}+{encoded}"


def parse_vkey(text: str) -> NoteVerifier:
    """Parse a vkey; require Ed25519, a 32-byte strong key and a matching key hash.

    Raises ProofError.
    """
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise ProofError("a vkey is name+keyhash+key")
    name, hex8, encoded = parts
    _check_name(name)
    if not _HEX8_RE.match(hex8):
        raise ProofError("vkey key hash must be 8 lowercase hex digits")
    raw = _b64decode(encoded, "vkey key")
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise ProofError("vkey is not an Ed25519 key (algorithm 0x01, 32 bytes)")
    public_key = raw[1:]
    try:
        check_public_key(public_key)
    except Rejected as exc:
        raise ProofError(f"vkey public key refused: {exc}") from exc
    want = key_hash(name, public_key)
    if want.hex() != hex8:
        raise ProofError("vkey key hash does not match its key", expected=want.hex(),
                         calculated=hex8)
    return NoteVerifier(name, want, public_key)


def _check_text(text: str) -> None:
    """C2SP signed-note text rules: UTF-8, no control characters but newline, ends in \\n."""
    if not text.endswith("\n"):
        raise ProofError("malformed note: text must end with a newline")
    if any((ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F for c in text):
        raise ProofError("malformed note: control character in text")


def sign_note(text: str, name: str, signer: NoteSigner) -> str:
    """A signed note over ``text`` with one signature. Raises ProofError for bad text/name."""
    _check_text(text)
    _check_name(name)
    sig = signer.sign(text.encode())
    line = base64.b64encode(key_hash(name, signer.public_key) + sig).decode("ascii")
    return f"{text}\n{DASH} {name} {line}\n"


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line of a note: the key name and the decoded ``key hash || signature``."""

    name: str
    raw: bytes

    @property
    def key_hash(self) -> bytes:
        return self.raw[:4]


def split_note(note: str) -> tuple[str, tuple[NoteSignature, ...]]:
    """Split a signed note into its text and its signature lines, checking the C2SP
    signed-note format (size cap, text rules, line syntax, base64) but no signature.

    Raises ProofError if the note is malformed.
    """
    if len(note.encode()) > MAX_NOTE_BYTES:
        raise ProofError("malformed note: too large")
    split = note.rfind("\n\n")
    if split < 0:
        raise ProofError("malformed note: no signature block")
    text, block = note[: split + 1], note[split + 2 :]
    _check_text(text)
    if not block.endswith("\n"):
        raise ProofError("malformed note: signature block must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise ProofError("malformed note: too many signatures")
    signatures = []
    for line in lines:
        prefix, _, rest = line.partition(" ")
        name, _, encoded = rest.partition(" ")
        if prefix != DASH or " " in encoded:
            raise ProofError("malformed note: bad signature line")
        _check_name(name)
        raw = _b64decode(encoded, "note signature")
        if len(raw) < 5:
            raise ProofError("malformed note: signature too short")
        signatures.append(NoteSignature(name, raw))
    return text, tuple(signatures)


def open_note(note: str, verifier: NoteVerifier) -> str:
    """Verify a signed note against one key and return its text (C2SP signed-note).

    Raises ProofError if the note is malformed, a signature by ``verifier`` fails, or no
    signature by ``verifier`` is present. Signatures by other keys are ignored.
    """
    text, signatures = split_note(note)
    verified = 0
    for signature in signatures:
        if signature.name != verifier.name or signature.key_hash != verifier.key_hash:
            continue  # another key (a witness, say): not ours to judge
        if not verify_signature(verifier.public_key, text.encode(), signature.raw[4:]):
            raise ProofError(f"invalid signature for key {signature.name}+"
                             f"{verifier.key_hash.hex()}")
        verified += 1
    if not verified:
        raise ProofError(f"note has no signature by {verifier.name}+{verifier.key_hash.hex()}")
    return text


def build_checkpoint(checkpoint: Checkpoint) -> str:
    """The checkpoint body text. Raises ProofError for an unusable origin or extension."""
    if not checkpoint.origin or "\n" in checkpoint.origin:
        raise ProofError("checkpoint origin must be one non-empty line")
    if len(checkpoint.root_hash) != HASH_SIZE or checkpoint.size < 0:
        raise ProofError("checkpoint needs a 32-byte root and a size >= 0")
    if any(not ext or "\n" in ext for ext in checkpoint.extensions):
        raise ProofError("checkpoint extension lines must be non-empty single lines")
    root = base64.b64encode(checkpoint.root_hash).decode("ascii")
    return "".join(f"{line}\n" for line in (checkpoint.origin, str(checkpoint.size), root,
                                            *checkpoint.extensions))


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body strictly (C2SP tlog-checkpoint). Raises ProofError."""
    if not text.endswith("\n"):
        raise ProofError("malformed checkpoint: must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise ProofError("malformed checkpoint: needs origin, size and root lines")
    origin, size, root, *extensions = lines
    if not origin:
        raise ProofError("malformed checkpoint: empty origin")
    if not _SIZE_RE.match(size):
        raise ProofError("malformed checkpoint: size is not a canonical decimal")
    root_hash = _b64decode(root, "checkpoint root")
    if len(root_hash) != HASH_SIZE:
        raise ProofError("malformed checkpoint: root is not 32 bytes")
    if any(not ext for ext in extensions):
        raise ProofError("malformed checkpoint: empty extension line")
    return Checkpoint(origin, TreeSize(int(size)), root_hash, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, name: str, signer: NoteSigner) -> str:
    """The signed note of a checkpoint. Raises ProofError for an unusable checkpoint."""
    return sign_note(build_checkpoint(checkpoint), name, signer)


def verify_checkpoint(note: str, verifier: NoteVerifier, origin: str | None = None) -> Checkpoint:
    """Open a signed checkpoint with ``verifier`` and parse it; if ``origin`` is given the
    checkpoint must name it. Raises ProofError."""
    checkpoint = parse_checkpoint(open_note(note, verifier))
    if origin is not None and checkpoint.origin != origin:
        raise ProofError("checkpoint is for another log", expected=origin,
                         calculated=checkpoint.origin)
    return checkpoint
