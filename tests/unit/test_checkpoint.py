"""C2SP signed notes and checkpoints, against the golang.org/x/mod/sumdb/note vectors.

Source of the PeterNeumann / EnochRoot keys, text and signatures: golang/mod
``sumdb/note/note_test.go`` (TestSign, TestOpen, TestNewVerifier), an independent
implementation of the same C2SP signed-note format.
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from ledger.core import checkpoint as cp
from ledger.core.keys import Signer
from ledger.core.merkle import TreeSize
from ledger.errors import ProofError

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = ("If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n")
PETER_SIG = ("— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKv"
             "qfqdngotpRZb6KE6RyyBwJnAM=\n")
ENOCH_SIG = ("— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOT"
             "GwnWLox33WWd1RvMc+QQ=\n")


def peter_signer() -> Signer:
    raw = base64.b64decode(PETER_SKEY.split("+", 4)[-1])
    assert raw[0] == cp.ALG_ED25519
    return Signer.from_private_bytes(raw[1:])


def test_vkey_of_the_published_private_key_matches_the_published_vkey() -> None:
    assert cp.build_vkey("PeterNeumann", peter_signer().public_key) == PETER_VKEY
    verifier = cp.parse_vkey(PETER_VKEY)
    assert verifier.key_hash.hex() == "c74f20a3"


def test_sign_note_reproduces_the_published_signature() -> None:
    assert cp.sign_note(TEXT, "PeterNeumann", peter_signer()) == TEXT + "\n" + PETER_SIG


def test_open_note_with_two_signatures_verifies_each_key() -> None:
    note = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert cp.open_note(note, cp.parse_vkey(PETER_VKEY)) == TEXT
    assert cp.open_note(note, cp.parse_vkey(ENOCH_VKEY)) == TEXT


def test_open_note_rejects_a_failing_signature_by_the_expected_key() -> None:
    bad = TEXT + "\n" + PETER_SIG[:58] + "ABCD" + PETER_SIG[58:]
    with pytest.raises(ProofError, match="invalid signature"):
        cp.open_note(bad, cp.parse_vkey(PETER_VKEY))


def test_open_note_ignores_a_bad_signature_by_another_key() -> None:
    note = TEXT + "\n" + PETER_SIG + ENOCH_SIG[:58] + "ABCD" + ENOCH_SIG[58:]
    assert cp.open_note(note, cp.parse_vkey(PETER_VKEY)) == TEXT


def test_open_note_requires_a_signature_by_the_expected_key() -> None:
    with pytest.raises(ProofError, match="no signature"):
        cp.open_note(TEXT + "\n" + ENOCH_SIG, cp.parse_vkey(PETER_VKEY))


@pytest.mark.parametrize("note", [
    TEXT,
    TEXT + "\n",
    TEXT + "\n" + PETER_SIG[:-1],
    "\x01" + TEXT + "\n" + PETER_SIG,
    TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKv"
    "qfqdngotpRZb6KE6RyyBwJnAM=\n",
    TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    TEXT + "\n" + PETER_SIG * 101,
    TEXT + "\n" + PETER_SIG.replace("—", "-"),
], ids=["no-sigs", "blank-only", "no-final-newline", "control-char", "bad-name",
        "unexpected-line", "too-many-sigs", "ascii-dash"])
def test_open_note_rejects_malformed_notes(note: str) -> None:
    with pytest.raises(ProofError):
        cp.open_note(note, cp.parse_vkey(PETER_VKEY))


def test_parse_vkey_rejects_every_single_character_change() -> None:
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1:]
        with pytest.raises(ProofError):
            cp.parse_vkey(mangled)
    for cut in (1, 10, len(PETER_VKEY) - 1):
        with pytest.raises(ProofError):
            cp.parse_vkey(PETER_VKEY[:cut])


def test_parse_vkey_rejects_an_identity_point_key() -> None:
    weak = bytes([1]) + bytes(31)  # the identity point: every signature verifies
    encoded = base64.b64encode(b"\x01" + weak).decode()
    vkey = f"weak+{cp.key_hash('weak', weak).hex()}+{encoded}"
    with pytest.raises(ProofError, match="refused"):
        cp.parse_vkey(vkey)


ROOT = hashlib.sha256(b"root").digest()


def test_checkpoint_round_trips_and_verifies() -> None:
    signer = Signer.from_private_bytes(bytes(range(32)))
    check = cp.Checkpoint("govledger.local/log", TreeSize(12), ROOT)
    note = cp.sign_checkpoint(check, "govledger.local/log", signer)
    lines = note.split("\n")
    assert lines[:4] == ["govledger.local/log", "12", base64.b64encode(ROOT).decode(), ""]
    assert lines[4].startswith("— govledger.local/log ")
    verifier = cp.parse_vkey(cp.build_vkey("govledger.local/log", signer.public_key))
    assert cp.verify_checkpoint(note, verifier, "govledger.local/log") == check
    with pytest.raises(ProofError, match="another log"):
        cp.verify_checkpoint(note, verifier, "other/log")
    edited = note.replace("\n12\n", "\n13\n")
    with pytest.raises(ProofError, match="invalid signature"):
        cp.verify_checkpoint(edited, verifier)


@pytest.mark.parametrize("body", [
    "o\n012\n" + base64.b64encode(ROOT).decode() + "\n",
    "o\n-1\n" + base64.b64encode(ROOT).decode() + "\n",
    "o\n1\n" + base64.b64encode(ROOT[:31]).decode() + "\n",
    "o\n1\n" + base64.b64encode(ROOT).decode(),
    "\n1\n" + base64.b64encode(ROOT).decode() + "\n",
    "o\n1\n",
    "o\n1\n" + base64.b64encode(ROOT).decode() + "\n\n",
    "o\n1\n" + base64.urlsafe_b64encode(b"\xfb" * 32).decode() + "\n",
], ids=["leading-zero", "negative", "short-root", "no-newline", "empty-origin", "no-root",
        "empty-extension", "urlsafe-base64"])
def test_parse_checkpoint_rejects_malformed_bodies(body: str) -> None:
    with pytest.raises(ProofError):
        cp.parse_checkpoint(body)


def test_checkpoint_extensions_are_kept() -> None:
    body = "o\n1\n" + base64.b64encode(ROOT).decode() + "\nextra line\n"
    parsed = cp.parse_checkpoint(body)
    assert parsed.extensions == ("extra line",)
    assert cp.build_checkpoint(parsed) == body
