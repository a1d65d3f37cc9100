"""C2SP tlog-cosignature/v1: the format against the spec's example and published keys, a
cross-check with an implementation we did not write (tlog-scales, by a witness operator),
and the k-of-n witness policy failing closed."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from ledger.core.checkpoint import (
    Checkpoint,
    build_checkpoint,
    build_vkey,
    sign_checkpoint,
    split_note,
)
from ledger.core.cosignature import (
    WitnessPolicy,
    add_cosignatures,
    build_witness_vkey,
    cosign,
    cosignatures_of,
    cosigned_message,
    parse_witness_vkey,
    verify_witnessed,
)
from ledger.core.keys import Signer
from ledger.errors import ConfigError, ProofError

# c2sp.org/tlog-cosignature, "Ed25519 signed message" and its example checkpoint.
SPEC_BODY = ("example.com/behind-the-sofa\n20852163\n"
             "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
SPEC_MESSAGE = "cosignature/v1\ntime 1679315147\n" + SPEC_BODY
SPEC_LINE = ("jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5n"
             "No0xUe+mbIUBkBIfZ+qnA==")
# A published cosignature/v1 witness vkey (transparency-dev/formats note tests).
REMORA = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
ORIGIN = "example.org/log"


def _note(log: Signer, size: int = 5, root: bytes = b"\x11" * 32) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, size, root), ORIGIN, log)  # type: ignore[arg-type]


def test_signed_message_is_the_spec_example_byte_for_byte() -> None:
    assert cosigned_message(SPEC_BODY, 1679315147) == SPEC_MESSAGE.encode()


def test_spec_example_line_carries_the_spec_example_timestamp() -> None:
    raw = base64.b64decode(SPEC_LINE)
    assert len(raw) == 4 + 8 + 64
    assert int.from_bytes(raw[4:12], "big") == 1679315147


def test_published_witness_vkey_parses_with_type_04_key_id() -> None:
    key = parse_witness_vkey(REMORA)
    assert key.name == "remora.n621.de" and key.key_hash.hex() == "da77ade7"
    assert key.vkey == REMORA


def test_log_vkey_of_type_01_is_not_a_witness_key() -> None:
    log_vkey = build_vkey("w.example", Signer.generate().public_key)
    with pytest.raises(ProofError, match="type 0x04"):
        parse_witness_vkey(log_vkey)


def test_witness_vkey_with_wrong_key_id_is_refused() -> None:
    name, _, key = REMORA.split("+")
    with pytest.raises(ProofError, match="key ID does not match"):
        parse_witness_vkey(f"{name}+00000000+{key}")


def test_cosignature_verifies_with_tlog_scales() -> None:
    signing = pytest.importorskip("tlog_scales.signing",
                                  reason="tlog-scales (the independent implementation) "
                                         "is not installed: pip install -e '.[test]'")
    tlog = pytest.importorskip("tlog_scales.tlog")
    witness = Signer.generate()
    vkey = build_witness_vkey("witness.example/w1", witness.public_key)
    note = _note(Signer.generate())
    text, _ = split_note(note)
    line = cosign(text, "witness.example/w1", witness, 1_700_000_000)
    theirs = signing.Vkey.from_string(vkey)
    assert theirs.sig_type == 4
    assert theirs.serialize() == vkey  # same key ID derivation
    checkpoint = tlog.Checkpoint.from_text(add_cosignatures(note, [line]))
    sig = next(s for s in checkpoint.signatures if theirs.match(s))
    theirs.get_verifier().verify_note(sig, checkpoint)  # raises on a bad signature
    assert signing.Ed25519CosignatureVerifier.get_timestamp(sig.payload) == 1_700_000_000
    forged = dataclasses.replace(sig, payload=(1_700_000_001).to_bytes(8, "big")
                                 + sig.payload[8:])
    from cryptography.exceptions import InvalidSignature
    with pytest.raises(InvalidSignature):
        theirs.get_verifier().verify_note(forged, checkpoint)


def _witnesses(n: int) -> list[tuple[str, Signer, str]]:
    out = []
    for i in range(n):
        signer = Signer.generate()
        name = f"w{i}.example"
        out.append((name, signer, build_witness_vkey(name, signer.public_key)))
    return out


def _cosigned(note: str, witnesses: list[tuple[str, Signer, str]], at: int = 1000) -> str:
    text, _ = split_note(note)
    return add_cosignatures(note, [cosign(text, name, s, at) for name, s, _ in witnesses])


def test_policy_met_by_quorum_of_distinct_witnesses() -> None:
    ws = _witnesses(3)
    policy = WitnessPolicy.of([v for _, _, v in ws], 2)
    found = verify_witnessed(_cosigned(_note(Signer.generate()), ws[:2]), policy)
    assert {c.witness.name for c in found} == {"w0.example", "w1.example"}


def test_policy_below_quorum_fails_closed() -> None:
    ws = _witnesses(3)
    policy = WitnessPolicy.of([v for _, _, v in ws], 2)
    with pytest.raises(ProofError, match="cosigned by 1 of the required 2"):
        verify_witnessed(_cosigned(_note(Signer.generate()), ws[:1]), policy)


def test_same_witness_twice_counts_once() -> None:
    ws = _witnesses(2)
    policy = WitnessPolicy.of([v for _, _, v in ws], 2)
    note = _cosigned(_note(Signer.generate()), ws[:1], at=1000)
    note = _cosigned(note, ws[:1], at=2000)
    with pytest.raises(ProofError, match="cosigned by 1 of"):
        verify_witnessed(note, policy)


def test_cosignature_by_unknown_key_is_ignored() -> None:
    ws, strangers = _witnesses(1), _witnesses(1)
    policy = WitnessPolicy.of([ws[0][2]], 1)
    with pytest.raises(ProofError, match="cosigned by 0 of"):
        verify_witnessed(_cosigned(_note(Signer.generate()), strangers), policy)


def test_cosignature_over_another_checkpoint_rejects_the_note() -> None:
    ws = _witnesses(1)
    policy = WitnessPolicy.of([ws[0][2]], 1)
    log = Signer.generate()
    other = _cosigned(_note(log, size=6), ws)
    stolen = other.splitlines()[-1] + "\n"
    with pytest.raises(ProofError, match=r"invalid cosignature by witness w0\.example"):
        verify_witnessed(add_cosignatures(_note(log, size=5), [stolen]), policy)


def test_log_signature_does_not_count_as_a_cosignature() -> None:
    log = Signer.generate()
    policy = WitnessPolicy.of([build_witness_vkey(ORIGIN, log.public_key)], 1)
    with pytest.raises(ProofError, match="cosigned by 0 of"):
        verify_witnessed(_note(log), policy)


def test_future_cosignature_does_not_count() -> None:
    ws = _witnesses(1)
    policy = WitnessPolicy.of([ws[0][2]], 1)
    note = _cosigned(_note(Signer.generate()), ws, at=10_000)
    assert verify_witnessed(note, policy, now=10_000)
    with pytest.raises(ProofError):
        verify_witnessed(note, policy, now=10_000 - 301)


def test_cosignature_covers_extension_lines() -> None:
    ws = _witnesses(1)
    log = Signer.generate()
    body = build_checkpoint(Checkpoint(ORIGIN, 5, b"\x11" * 32, ("ext one",)))  # type: ignore[arg-type]
    line = cosign(body, ws[0][0], ws[0][1], 1000)
    other = sign_checkpoint(Checkpoint(ORIGIN, 5, b"\x11" * 32, ("ext two",)), ORIGIN, log)  # type: ignore[arg-type]
    with pytest.raises(ProofError, match="invalid cosignature"):
        cosignatures_of(add_cosignatures(other, [line]), [parse_witness_vkey(ws[0][2])])


@pytest.mark.parametrize("quorum", [0, 3])
def test_policy_quorum_out_of_range_is_a_config_error(quorum: int) -> None:
    with pytest.raises(ConfigError, match="quorum"):
        WitnessPolicy.of([v for _, _, v in _witnesses(2)], quorum)


def test_policy_refuses_one_key_under_two_names() -> None:
    signer = Signer.generate()
    vkeys = [build_witness_vkey(n, signer.public_key) for n in ("a.example", "b.example")]
    with pytest.raises(ConfigError, match="twice"):
        WitnessPolicy.of(vkeys, 2)
