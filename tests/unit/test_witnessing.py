"""The tlog-witness add-checkpoint request and the witness's decision, each refusal with the
spec's status (the HTTP round trip: tests/integration/test_witness_http.py)."""

from __future__ import annotations

import pytest

from ledger.core import merkle
from ledger.core.checkpoint import Checkpoint, build_vkey, parse_vkey, sign_checkpoint
from ledger.core.keys import Signer
from ledger.core.witnessing import (
    MAX_REQUEST_BYTES,
    Cosigned,
    WitnessRefused,
    build_add_checkpoint,
    check_add_checkpoint,
    parse_add_checkpoint,
)
from tests.reference_merkle import proof as consistency_proof

ORIGIN = "example.org/log"
LOG = Signer.generate()
LOGS = {ORIGIN: parse_vkey(build_vkey(ORIGIN, LOG.public_key))}


def leaves(n: int, tag: bytes = b"") -> list[bytes]:
    return [tag + i.to_bytes(4, "big") for i in range(n)]


def note_of(data: list[bytes], origin: str = ORIGIN, signer: Signer = LOG) -> str:
    return sign_checkpoint(Checkpoint(origin, len(data), merkle.root_of(data)),  # type: ignore[arg-type]
                           origin, signer)


def stored(data: list[bytes]) -> Cosigned:
    return Cosigned(len(data), merkle.root_of(data), "")


def decide(old: list[bytes] | None, new: list[bytes], *, old_size: int | None = None,
           proof: list[bytes] | None = None, note: str | None = None) -> Checkpoint:
    size = len(old) if old is not None else 0
    if proof is None:
        proof = consistency_proof(size, new) if 0 < size < len(new) else []
    body = build_add_checkpoint(size if old_size is None else old_size, proof,
                                note or note_of(new))
    return check_add_checkpoint(parse_add_checkpoint(body), LOGS,
                                stored(old) if old is not None else None)[0]


def refused(status: int, **kwargs: object) -> WitnessRefused:
    with pytest.raises(WitnessRefused) as info:
        decide(**kwargs)  # type: ignore[arg-type]
    assert info.value.status == status, info.value
    return info.value


def test_first_checkpoint_from_size_zero_is_accepted() -> None:
    assert decide(None, leaves(7)).size == 7


def test_consistent_growth_is_accepted() -> None:
    assert decide(leaves(5), leaves(13)).size == 13


def test_same_checkpoint_again_is_accepted() -> None:
    assert decide(leaves(5), leaves(5)).size == 5


def test_fork_at_a_larger_size_is_refused_422() -> None:
    fork = leaves(5, b"x") + leaves(8)[5:]
    refused(422, old=leaves(5), new=fork, proof=consistency_proof(5, fork))


def test_fork_at_the_same_size_is_refused_409() -> None:
    error = refused(409, old=leaves(5), new=leaves(5, b"x"))
    assert error.size == 5


def test_rollback_to_a_smaller_size_is_refused_409_with_the_stored_size() -> None:
    error = refused(409, old=leaves(9), new=leaves(5), old_size=5, proof=[])
    assert error.size == 9


def test_old_size_not_the_stored_one_is_refused_409() -> None:
    assert refused(409, old=leaves(5), new=leaves(9), old_size=0, proof=[]).size == 5


def test_old_size_beyond_the_checkpoint_is_refused_400() -> None:
    refused(400, old=leaves(9), new=leaves(5), old_size=9, proof=[])


def test_unknown_origin_is_refused_404() -> None:
    refused(404, old=None, new=leaves(3), note=note_of(leaves(3), origin="other.org/log"))


def test_checkpoint_not_signed_by_the_log_key_is_refused_403() -> None:
    refused(403, old=None, new=leaves(3), note=note_of(leaves(3), signer=Signer.generate()))


def test_bad_consistency_proof_is_refused_422() -> None:
    proof = consistency_proof(5, leaves(9))
    proof[0] = bytes(32)
    refused(422, old=leaves(5), new=leaves(9), proof=proof)


def test_proof_from_size_zero_must_be_empty() -> None:
    refused(422, old=None, new=leaves(3), proof=[bytes(32)])


@pytest.mark.parametrize("body", [
    b"", b"old 1", b"old 01\n\nx\n", b"old -1\n\nx\n", b"new 3\n\nx\n",
    b"old 3\nnot-base64!\n\nx\n", b"old 3\nAAAA\n\nx\n", b"\xff\xfe\n\n",
    ("old 3\n" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + "\n").encode(),
    b"old 0\n\n" + b"a" * MAX_REQUEST_BYTES,
], ids=["empty", "no-blank-line", "leading-zero", "negative", "not-old", "bad-base64",
        "short-hash", "not-utf8", "64-proof-lines", "oversized"])
def test_malformed_request_is_refused_400(body: bytes) -> None:
    with pytest.raises(WitnessRefused) as info:
        parse_add_checkpoint(body)
    assert info.value.status == 400


def test_malformed_checkpoint_is_refused_400() -> None:
    request = parse_add_checkpoint(b"old 0\n\nnot a note\n")
    with pytest.raises(WitnessRefused) as info:
        check_add_checkpoint(request, LOGS, None)
    assert info.value.status == 400
