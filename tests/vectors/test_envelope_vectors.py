"""The committed envelope vectors: regenerated identically, and checked by two verifiers."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.core.envelope import verify_envelope
from ledger.core.keys import KeyRing, Principal
from ledger.errors import Rejected
from tests.vectors.make_envelope_vectors import OUT, render

VECTORS = json.loads(Path(OUT).read_text(encoding="utf-8"))
CASES = VECTORS["cases"]
KEY = VECTORS["key"]
AT = datetime.fromisoformat(VECTORS["verify_at"])


def ring() -> KeyRing:
    return KeyRing([Principal(KEY["identity"], KEY["tenant"],
                              base64.b64decode(KEY["public_key_b64"]))])


def test_committed_vectors_match_a_fresh_generation() -> None:
    assert Path(OUT).read_text(encoding="utf-8") == render(), (
        "vectors drifted: run python -m tests.vectors.make_envelope_vectors and review")


def test_vectors_include_positive_and_named_negative_cases() -> None:
    assert sum(c["want_error"] is None for c in CASES) >= 3
    assert len({c["want_error"] for c in CASES if c["want_error"]}) >= 6


@pytest.mark.parametrize("case", CASES, ids=[c["desc"] for c in CASES])
def test_vector_verifies_as_expected(case: dict[str, str]) -> None:
    data = case["envelope"].encode()
    if case["want_error"] is None:
        verified = verify_envelope(data, ring(), AT)
        assert verified.event_id == case["event_id"]
        assert verified.kind == case["kind"]
    else:
        with pytest.raises(Rejected) as info:
            verify_envelope(data, ring(), AT)
        assert info.value.reason.value == case["want_error"]


@pytest.mark.parametrize("case", [c for c in CASES if c["want_error"] is None],
                         ids=lambda c: c["desc"])
def test_positive_vector_with_independent_tools(case: dict[str, str]) -> None:
    """OpenSSL signs, hashlib hashes, the rfc8785 package canonicalizes: the same bytes."""
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(KEY["seed_hex"]))
    payload = base64.b64decode(case["payload_b64"])
    assert payload.decode() == case["payload_utf8"]
    assert rfc8785.dumps(json.loads(payload)) == payload
    ptype = case["payloadType"].encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)
    assert pae.hex() == case["pae_hex"]
    assert base64.b64encode(private.sign(pae)).decode() == case["sig_b64"]
    assert hashlib.sha256(payload).hexdigest() == case["event_id"]
    envelope = {"payload": case["payload_b64"], "payloadType": case["payloadType"],
                "signatures": [{"keyid": KEY["keyid"], "sig": case["sig_b64"]}]}
    assert rfc8785.dumps(envelope).decode() == case["envelope"]
    raw_public = private.public_key().public_bytes_raw()
    assert hashlib.sha256(raw_public).hexdigest() == KEY["keyid"]
