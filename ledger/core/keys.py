"""Ed25519 keys, key ids and the KeyRing of principals.

* Ed25519 only (RFC 8032); an ``alg`` field is never read from input.
* Key id (the DSSE ``keyid``) = lowercase hex SHA-256 of the 32 raw public-key bytes.
* Public keys are refused with KEY_WEAK when they are not canonical encodings, not on the
  curve, of small order, or outside the prime-order subgroup. OpenSSL (``cryptography``)
  accepts the identity point, under which one signature verifies for every message.
* Signing and verification run on libsodium (PyNaCl): measured here about 2.5x faster than
  OpenSSL for verification, and libsodium itself refuses small-order keys and non-canonical
  signatures. Ed25519 is deterministic, so both libraries produce byte-identical signatures;
  ``tests/unit/test_keys.py`` checks that both agree on every vector.
* Key validity uses the processor's arrival time (``now``), never a client's claimed time.

Keyring document (JSON, ``version`` 1)::

    {"version": 1,
     "principals": [{"identity": "agent:billing", "tenant": "acme",
                     "public_key": "<standard base64 of 32 raw bytes>",
                     "roles": ["requester"],
                     "not_before": "2026-01-01T00:00:00Z",   # optional
                     "not_after": null,                      # optional
                     "revoked_at": null}]}                   # optional

System roles: ``requester`` (may ask), ``executor`` (may run under an artifact of its
tenant), ``revoker`` (may revoke any artifact of its tenant), ``authority`` (signs decisions),
``ledger`` (signs checkpoints). Any other role name (``[a-z][a-z0-9_.-]{0,63}``, e.g.
``reader``) is free for Cedar policies, which see every role as ``principal.roles``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NewType

import nacl.bindings
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import BadSignature, ConfigError, Reason

KeyId = NewType("KeyId", str)

SYSTEM_ROLES = frozenset({"requester", "executor", "revoker", "authority", "ledger"})
_ROLE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_P = 2**255 - 19


def key_id(public_key: bytes) -> KeyId:
    """Key id of a raw 32-byte Ed25519 public key: hex SHA-256 of the key bytes."""
    return KeyId(hashlib.sha256(public_key).hexdigest())


def check_public_key(public_key: bytes) -> None:
    """Refuse keys no honest signer produces.

    Raises BadSignature(KEY_WEAK) for a wrong length, a non-canonical encoding
    (y >= p, RFC 8032 section 5.1.3), a point not on the curve, of small order, or with a
    torsion component (libsodium ``crypto_core_ed25519_is_valid_point``).
    """
    if len(public_key) != 32:
        raise BadSignature(Reason.KEY_WEAK, "an Ed25519 public key is 32 bytes")
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    if y >= _P:
        raise BadSignature(Reason.KEY_WEAK, "non-canonical point encoding")
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(public_key):
        raise BadSignature(Reason.KEY_WEAK, "small-order or invalid point")


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 verification (RFC 8032 section 5.1.7) with libsodium's strict rules."""
    if len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        return False
    return True


class Signer:
    """An Ed25519 private key that signs. The private bytes are never printed."""

    __slots__ = ("_nacl", "key_id", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        seed = private_key.private_bytes_raw()
        self._nacl = nacl.signing.SigningKey(seed)
        self.public_key: bytes = private_key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw)
        self.key_id: KeyId = key_id(self.public_key)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> Signer:
        """Requires a 32-byte RFC 8032 seed."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        return bytes(self._nacl.sign(message).signature)

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id[:16]}...)"


@dataclass(frozen=True, slots=True)
class Principal:
    """An identity, its tenant, one public key and when that key is in force."""

    identity: str
    tenant: str
    public_key: bytes
    roles: frozenset[str] = field(default_factory=frozenset)
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def key_id(self) -> KeyId:
        return key_id(self.public_key)

    def check_in_force(self, now: datetime) -> None:
        """Raise BadSignature(KEY_REVOKED) unless the key is in force at ``now``.

        The window is inclusive of ``not_before`` and exclusive of ``not_after`` and
        ``revoked_at``.
        """
        if self.revoked_at is not None and now >= self.revoked_at:
            raise BadSignature(Reason.KEY_REVOKED, f"key of {self.identity} revoked")
        if self.not_before is not None and now < self.not_before:
            raise BadSignature(Reason.KEY_REVOKED, f"key of {self.identity} not yet valid")
        if self.not_after is not None and now >= self.not_after:
            raise BadSignature(Reason.KEY_REVOKED, f"key of {self.identity} expired")


class KeyRing:
    """Principals by key id. Every key is checked with :func:`check_public_key` on entry."""

    def __init__(self, principals: Iterable[Principal] = ()) -> None:
        self._by_id: dict[KeyId, Principal] = {}
        for principal in principals:
            self.add(principal)

    def add(self, principal: Principal) -> None:
        """Register a principal. Raises BadSignature(KEY_WEAK) for a weak key."""
        check_public_key(principal.public_key)
        bad = [r for r in principal.roles if not _ROLE.match(r)]
        if bad:
            raise ConfigError(f"invalid role names {sorted(bad)} for {principal.identity}")
        self._by_id[principal.key_id] = principal

    def revoke(self, kid: KeyId, at: datetime) -> None:
        """Mark a key revoked from ``at`` on. Raises BadSignature(KEY_UNKNOWN)."""
        old = self.get(kid)
        if old.revoked_at is None or old.revoked_at > at:
            self._by_id[kid] = Principal(old.identity, old.tenant, old.public_key, old.roles,
                                         old.not_before, old.not_after, at)

    def get(self, kid: str) -> Principal:
        """The principal of ``kid`` whatever its state. Raises BadSignature(KEY_UNKNOWN)."""
        principal = self._by_id.get(KeyId(kid))
        if principal is None:
            raise BadSignature(Reason.KEY_UNKNOWN, f"no key {kid[:16]}")
        return principal

    def with_role(self, role: str) -> list[Principal]:
        return [p for p in self._by_id.values() if role in p.roles]

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def principals(self) -> list[Principal]:
        return list(self._by_id.values())


def _time(value: object, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from exc
    if parsed.utcoffset() is None:
        raise ConfigError(f"{what} needs an explicit UTC offset")
    return parsed


def parse_keyring(data: bytes) -> KeyRing:
    """Parse a keyring document (format in the module docstring).

    Raises ConfigError for a bad document and BadSignature(KEY_WEAK) for a weak key.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"keyring is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise ConfigError("keyring must be an object with \"version\": 1")
    entries = doc.get("principals")
    if not isinstance(entries, list):
        raise ConfigError("keyring needs a \"principals\" array")
    ring = KeyRing()
    for n, entry in enumerate(entries):
        ring.add(_principal(entry, f"principals[{n}]"))
    return ring


def _principal(entry: object, where: str) -> Principal:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} is not an object")
    allowed = {"identity", "tenant", "public_key", "roles", "not_before", "not_after",
               "revoked_at", "comment"}
    if extra := set(entry) - allowed:
        raise ConfigError(f"{where}: unknown fields {sorted(extra)}")
    identity, tenant, encoded = entry.get("identity"), entry.get("tenant"), entry.get("public_key")
    if not (isinstance(identity, str) and isinstance(tenant, str) and isinstance(encoded, str)):
        raise ConfigError(f"{where}: identity, tenant and public_key are required strings")
    try:
        public_key = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ConfigError(f"{where}: public_key is not base64") from exc
    roles = entry.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise ConfigError(f"{where}: roles must be a list of strings")
    return Principal(identity, tenant, public_key, frozenset(roles),
                     _time(entry.get("not_before"), f"{where}.not_before"),
                     _time(entry.get("not_after"), f"{where}.not_after"),
                     _time(entry.get("revoked_at"), f"{where}.revoked_at"))


def principal_document(principal: Principal) -> Mapping[str, object]:
    """The keyring-document form of one principal."""
    def stamp(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat().replace("+00:00", "Z")

    return {"identity": principal.identity, "tenant": principal.tenant,
            "public_key": base64.b64encode(principal.public_key).decode(),
            "roles": sorted(principal.roles), "not_before": stamp(principal.not_before),
            "not_after": stamp(principal.not_after), "revoked_at": stamp(principal.revoked_at)}
