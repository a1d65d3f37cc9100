"""The C2SP tlog-witness ``add-checkpoint`` protocol: the request body and the witness's
decision. Pure: no I/O (the witness's state and HTTP server are ``ledger.log.witness`` and
``ledger.server.witness_api``).

Request body (https://c2sp.org/tlog-witness, "add-checkpoint")::

    old <size of the previous checkpoint, decimal, no leading zeroes>\\n
    <consistency proof hash, base64>\\n        (0 to 63 lines)
    \\n
    <signed checkpoint note>

The witness's checks, in the spec's order, each with its HTTP status
(:class:`WitnessRefused` carries it):

1. a malformed body or note: 400;
2. the checkpoint's origin is not a configured log: 404;
3. no signature by the log's key verifies: 403;
4. ``old`` greater than the checkpoint's size: 400;
5. ``old`` is not the size of the latest checkpoint the witness cosigned for that origin (0 if
   none): 409, the body that size in decimal and a newline, ``text/x.tlog.size``;
6. ``old`` equal to the checkpoint's size but another root hash (a fork): 409;
7. the RFC 6962 consistency proof from the stored root to the new one does not verify (a
   fork or a bad proof), or is not empty for ``old`` 0: 422.

Only then does the witness store the checkpoint (atomically with check 5) and cosign it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ledger.core.checkpoint import (
    Checkpoint,
    NoteVerifier,
    open_note,
    parse_checkpoint,
    split_note,
)
from ledger.core.merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from ledger.errors import ProofError

MAX_PROOF_LINES: Final = 63
MAX_REQUEST_BYTES: Final = 64 * 1024
SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"
_OLD_RE = re.compile(r"^old (0|[1-9][0-9]{0,19})$")


class WitnessRefused(ProofError):
    """The witness refuses a checkpoint; ``status`` is the tlog-witness HTTP status and
    ``size`` (409 only) the size of the latest checkpoint it cosigned for the log."""

    def __init__(self, status: int, message: str, *, size: int | None = None) -> None:
        self.status, self.size = status, size
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """A parsed add-checkpoint request."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str


@dataclass(frozen=True, slots=True)
class Cosigned:
    """What the witness last cosigned for one log: size, root hash and the note's body."""

    size: int
    root_hash: bytes
    text: str


def build_add_checkpoint(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The request body. Raises ProofError for a negative size or more than 63 hashes."""
    if old_size < 0 or len(proof) > MAX_PROOF_LINES:
        raise ProofError("add-checkpoint needs old size >= 0 and at most 63 proof hashes")
    lines = [f"old {old_size}", *(base64.b64encode(h).decode("ascii") for h in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse a request body strictly. Raises WitnessRefused(400) if it is oversized, not
    UTF-8, or malformed."""
    if len(body) > MAX_REQUEST_BYTES:
        raise WitnessRefused(400, f"request body over {MAX_REQUEST_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WitnessRefused(400, "request body is not UTF-8") from exc
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise WitnessRefused(400, "request has no empty line before the checkpoint")
    lines = head.split("\n")
    match = _OLD_RE.match(lines[0])
    if not match:
        raise WitnessRefused(400, "the first line must be 'old <size>' (decimal)")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessRefused(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for n, line in enumerate(lines[1:]):
        try:
            digest = base64.b64decode(line, validate=True)
        except binascii.Error as exc:
            raise WitnessRefused(400, f"proof line {n} is not base64") from exc
        if len(digest) != HASH_SIZE or base64.b64encode(digest).decode("ascii") != line:
            raise WitnessRefused(400, f"proof line {n} is not a canonical 32-byte hash")
        proof.append(digest)
    return AddCheckpoint(int(match.group(1)), tuple(proof), note)


def check_add_checkpoint(request: AddCheckpoint, logs: Mapping[str, NoteVerifier],
                         stored: Cosigned | None) -> tuple[Checkpoint, str]:
    """Decide a request against the configured ``logs`` (origin -> log key) and what the
    witness last cosigned for its origin (``stored``; None if nothing). Returns the new
    checkpoint and its body text, to be stored and cosigned.

    Raises WitnessRefused with the status of the module docstring's checks.
    """
    try:
        text, _ = split_note(request.note)
        checkpoint = parse_checkpoint(text)
    except ProofError as exc:
        raise WitnessRefused(400, f"malformed checkpoint: {exc}") from exc
    verifier = logs.get(checkpoint.origin)
    if verifier is None:
        raise WitnessRefused(404, f"unknown log {checkpoint.origin[:200]!r}")
    try:
        open_note(request.note, verifier)
    except ProofError as exc:
        raise WitnessRefused(403, f"no valid signature by the log's key: {exc}") from exc
    if request.old_size > checkpoint.size:
        raise WitnessRefused(400, f"old size {request.old_size} is beyond the checkpoint's "
                             f"size {checkpoint.size}")
    have = stored.size if stored is not None else 0
    if request.old_size != have:
        raise WitnessRefused(409, f"old size {request.old_size} is not the size {have} this "
                             "witness last cosigned", size=have)
    old_root = stored.root_hash if stored is not None else EMPTY_ROOT
    if request.old_size == checkpoint.size and checkpoint.root_hash != old_root:
        raise WitnessRefused(409, f"another root hash at size {checkpoint.size}: a fork",
                             size=have)
    try:
        verify_consistency(request.old_size, checkpoint.size, old_root,
                           checkpoint.root_hash, request.proof)
    except ProofError as exc:
        raise WitnessRefused(422, f"consistency proof from size {request.old_size} does not "
                             f"verify: {exc}") from exc
    return checkpoint, text
