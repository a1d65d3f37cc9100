"""API bearer tokens: the simple alternative to signed requests, each bound to one principal.

File ``DATA/api-tokens.json`` (read when the API starts; ``govledger tokens create`` adds to
it)::

    {"version": 1,
     "tokens": [{"key_id": "<hex key id of the principal>", "identity": "agent:alice",
                 "sha256": "<hex SHA-256 of the token>", "comment": "optional"}]}

Only the SHA-256 of a token is stored (a token is 32 random bytes, so a plain hash suffices:
there is nothing to guess). A presented token is hashed and compared with every stored hash
in constant time (``hmac.compare_digest``, no early exit). The token names a key id, and
the principal is looked up in the *current* keyring on every request: a revoked or expired
key ends its tokens too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ledger.core.keys import KeyId
from ledger.errors import ConfigError
from ledger.keyfiles import write_atomic

TOKENS_FILE: Final = "api-tokens.json"
TOKEN_PREFIX: Final = "glt_"  # noqa: S105 (a prefix that marks a token, not a secret)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TOKEN = re.compile(r"^glt_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class TokenEntry:
    key_id: KeyId
    identity: str
    digest: bytes
    comment: str = ""


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenTable:
    """The stored token hashes (module docstring)."""

    def __init__(self, entries: tuple[TokenEntry, ...] = ()) -> None:
        self.entries = entries

    def match(self, token: str) -> TokenEntry | None:
        """The entry of ``token``, or None. Every stored hash is compared, in constant time,
        whatever matched (no timing difference between a near miss and a far one)."""
        if not _TOKEN.match(token):
            return None
        digest, found = token_digest(token), None
        for entry in self.entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        return found

    def document(self) -> dict[str, object]:
        return {"version": 1, "tokens": [
            {"key_id": e.key_id, "identity": e.identity, "sha256": e.digest.hex(),
             **({"comment": e.comment} if e.comment else {})} for e in self.entries]}


def load_tokens(path: Path) -> TokenTable:
    """The table in ``path``; an empty table when the file does not exist.
    Raises ConfigError for a file that cannot be read or is not a valid document."""
    if not path.exists():
        return TokenTable()
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(
            doc.get("tokens"), list):
        raise ConfigError(f"{path}: expected {{\"version\": 1, \"tokens\": [...]}}")
    return TokenTable(tuple(_entry(item, f"{path}: tokens[{n}]")
                            for n, item in enumerate(doc["tokens"])))


def _entry(item: object, where: str) -> TokenEntry:
    if not isinstance(item, dict) or set(item) - {"key_id", "identity", "sha256", "comment"}:
        raise ConfigError(f"{where}: an object with key_id, identity, sha256 (and comment)")
    key, identity, digest = item.get("key_id"), item.get("identity"), item.get("sha256")
    comment = item.get("comment", "")
    if not (isinstance(key, str) and _HEX64.match(key) and isinstance(digest, str)
            and _HEX64.match(digest) and isinstance(identity, str) and identity
            and isinstance(comment, str)):
        raise ConfigError(f"{where}: key_id and sha256 are 64 lowercase hex digits, "
                          "identity a non-empty string")
    return TokenEntry(KeyId(key), identity, bytes.fromhex(digest), comment)


def create_token(path: Path, key_id: KeyId, identity: str, comment: str = "") -> str:
    """A new token for the principal ``key_id``; its hash is added to ``path`` (written
    atomically). Returns the token: it is shown once and stored nowhere in clear.
    Raises ConfigError (an unreadable file) or Unavailable (a full disk)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    table = load_tokens(path)
    entry = TokenEntry(key_id, identity, token_digest(token), comment)
    updated = TokenTable((*table.entries, entry))
    write_atomic(path, (json.dumps(updated.document(), indent=2) + "\n").encode(), mode=0o600,
                 replace=True)
    return token
