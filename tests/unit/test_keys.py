"""Keys: weak-key refusal, libsodium/OpenSSL agreement, key files and keyrings."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.core.keys import (
    KeyRing,
    Principal,
    Signer,
    check_public_key,
    key_id,
    parse_keyring,
    verify_signature,
)
from ledger.errors import BadSignature, ConfigError, Reason
from ledger.keyfiles import generate_keypair, load_keyring, load_public_key, load_signer
from tests.factories import ALICE

P = 2**255 - 19
IDENTITY = (1).to_bytes(32, "little")
# Small-order points (order 1, 2, 4, 8) in canonical encoding; the order-8 y coordinates are
# the ones listed by libsodium and by "Taming the many EdDSAs" (Chalkias et al.), table 6.
SMALL_ORDER = [
    IDENTITY,
    (P - 1).to_bytes(32, "little"),                                  # order 2
    bytes(32),                                                       # order 4, x > 0
    bytes(31) + b"\x80",                                             # order 4, x < 0
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
]
NON_CANONICAL = [
    P.to_bytes(32, "little"),                                        # y = p
    (P + 1).to_bytes(32, "little"),                                  # y = 1 + p (identity)
    (2**255 - 1).to_bytes(32, "little"),
]


def test_openssl_accepts_universal_forgery_under_identity_point() -> None:
    """Why we refuse weak keys: with A = identity, (R=identity, S=0) verifies any message."""
    forged = IDENTITY + bytes(32)
    public = Ed25519PublicKey.from_public_bytes(IDENTITY)
    try:
        public.verify(forged, b"transfer all the money")
        openssl_accepts = True
    except InvalidSignature:
        openssl_accepts = False
    # Whatever this OpenSSL build does, our verifier and our keyring refuse.
    assert not verify_signature(IDENTITY, b"transfer all the money", forged)
    with pytest.raises(BadSignature) as info:
        KeyRing([Principal("agent:evil", "acme", IDENTITY)])
    assert info.value.reason is Reason.KEY_WEAK
    print("OpenSSL accepts the identity-point forgery:", openssl_accepts)


@pytest.mark.parametrize("point", SMALL_ORDER + NON_CANONICAL)
def test_weak_keys_are_refused(point: bytes) -> None:
    with pytest.raises(BadSignature) as info:
        check_public_key(point)
    assert info.value.reason is Reason.KEY_WEAK


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_length_keys_are_weak(length: int) -> None:
    with pytest.raises(BadSignature):
        check_public_key(b"\x01" * length)


def test_generated_keys_pass_the_check() -> None:
    for _ in range(50):
        check_public_key(Signer.generate().public_key)


def test_libsodium_and_openssl_agree_on_signatures() -> None:
    message = b"the same bytes"
    for n in range(20):
        signer = Signer.from_private_bytes(bytes([n]) * 32)
        sig = signer.sign(message + bytes([n]))
        public = Ed25519PublicKey.from_public_bytes(signer.public_key)
        public.verify(sig, message + bytes([n]))  # raises if OpenSSL disagrees
        assert verify_signature(signer.public_key, message + bytes([n]), sig)
        bad = bytearray(sig)
        bad[n] ^= 1
        assert not verify_signature(signer.public_key, message + bytes([n]), bytes(bad))
        with pytest.raises(InvalidSignature):
            public.verify(bytes(bad), message + bytes([n]))


def test_non_canonical_s_is_refused() -> None:
    order = 2**252 + 27742317777372353535851937790883648493
    sig = ALICE.sign(b"m")
    s = int.from_bytes(sig[32:], "little") + order
    malleated = sig[:32] + s.to_bytes(32, "little")
    assert not verify_signature(ALICE.public_key, b"m", malleated)


def test_key_id_is_sha256_of_raw_key() -> None:
    import hashlib
    assert key_id(ALICE.public_key) == hashlib.sha256(ALICE.public_key).hexdigest()
    assert ALICE.key_id == key_id(ALICE.public_key)


def test_private_key_never_in_repr() -> None:
    assert "PRIVATE" not in repr(ALICE)
    assert ALICE.key_id[:16] in repr(ALICE)


def test_generate_writes_0600_and_refuses_overwrite(tmp_path: Path) -> None:
    signer, key_path, pub_path = generate_keypair("alice", tmp_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert load_signer(key_path).public_key == signer.public_key
    assert load_public_key(pub_path) == signer.public_key
    with pytest.raises(ConfigError):
        generate_keypair("alice", tmp_path)


def test_load_refuses_group_readable_key(tmp_path: Path) -> None:
    _, key_path, _ = generate_keypair("k", tmp_path)
    os.chmod(key_path, 0o640)
    with pytest.raises(ConfigError, match="readable"):
        load_signer(key_path)


@pytest.mark.parametrize("name", ["../evil", "", "a b", "-x"])
def test_bad_key_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        generate_keypair(name, tmp_path)


def keyring_doc(**overrides: object) -> bytes:
    entry = {"identity": "agent:alice", "tenant": "acme",
             "public_key": base64.b64encode(ALICE.public_key).decode(), "roles": ["requester"]}
    entry.update(overrides)
    return json.dumps({"version": 1, "principals": [entry]}).encode()


def test_keyring_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ring.json"
    path.write_bytes(keyring_doc(not_before="2026-01-01T00:00:00Z"))
    ring = load_keyring(path)
    principal = ring.get(ALICE.key_id)
    assert (principal.identity, principal.tenant, principal.roles) == (
        "agent:alice", "acme", frozenset({"requester"}))


@pytest.mark.parametrize("doc", [
    b"not json", b"[]", b'{"version": 2, "principals": []}', b'{"version": 1}',
    keyring_doc(roles=["God Mode"]), keyring_doc(public_key="!!"), keyring_doc(extra=1),
    keyring_doc(not_before="2026-01-01T00:00:00"),
])
def test_bad_keyrings_are_config_errors(doc: bytes) -> None:
    with pytest.raises(ConfigError):
        parse_keyring(doc)


def test_weak_key_in_keyring_is_refused() -> None:
    with pytest.raises(BadSignature):
        parse_keyring(keyring_doc(public_key=base64.b64encode(IDENTITY).decode()))
