"""Key and keyring files (the shell around ledger.core.keys).

Layout written by :func:`generate_keypair` for a key named NAME in DIR:

* ``DIR/NAME.key``: the Ed25519 private key, PKCS#8 PEM, unencrypted, file mode 0600,
  created exclusively (an existing file is never overwritten);
* ``DIR/NAME.pub``: the raw 32-byte public key in standard base64, one line.

Private keys are read only from files, never from environment values or defaults, and never
printed.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from ledger.core.keys import KeyRing, Signer, check_public_key, parse_keyring
from ledger.errors import ConfigError, Rejected

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def generate_keypair(name: str, directory: Path) -> tuple[Signer, Path, Path]:
    """Create ``NAME.key`` (0600) and ``NAME.pub`` in ``directory``.

    Raises ConfigError for a bad name or when either file already exists.
    """
    if not _NAME.match(name):
        raise ConfigError(f"key name {name!r}: use letters, digits, '.', '_' or '-'")
    directory.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (key_path, pub_path):
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a key")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"{key_path} exists; refusing to overwrite a key") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(key_path, 0o600)  # umask cannot widen it, but be explicit
    signer = Signer(private)
    pub_path.write_text(base64.b64encode(signer.public_key).decode("ascii") + "\n")
    return signer, key_path, pub_path


def load_signer(path: Path) -> Signer:
    """Load a private key file written by :func:`generate_keypair` (or any PKCS#8 Ed25519 PEM).

    Raises ConfigError if it is missing, readable by others, or not an Ed25519 key.
    """
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by group or others (mode {mode:o}); chmod 600 it")
    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PKCS#8 PEM private key") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key (Ed25519 only)")
    return Signer(private)


def load_public_key(path: Path) -> bytes:
    """Load a ``.pub`` file (base64 of 32 raw bytes). Raises ConfigError or Rejected(KEY_WEAK)."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ConfigError(f"{path} is not base64") from exc
    check_public_key(raw)
    return raw


def load_keyring(path: Path) -> KeyRing:
    """Load a keyring document (format: ledger.core.keys). Raises ConfigError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read keyring {path}: {exc.strerror}") from exc
    try:
        return parse_keyring(data)
    except Rejected as exc:
        raise ConfigError(f"keyring {path}: {exc}") from exc
