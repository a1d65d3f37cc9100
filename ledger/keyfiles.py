"""Key and keyring files (the shell around ledger.core.keys).

Layout written by :func:`generate_keypair` for a key named NAME in DIR:

* ``DIR/NAME.key``: the Ed25519 private key, PKCS#8 PEM, unencrypted, file mode 0600,
  created exclusively (an existing file is never overwritten);
* ``DIR/NAME.pub``: the raw 32-byte public key in standard base64, one line.

Every file is written by :func:`write_atomic`: to a temporary name in the same directory
(:func:`temp_path`, 0600 from its creation for keys), fsynced, moved into place, and the
directory fsynced. A kill leaves the old state or the new one, plus at worst a temporary
file that :func:`is_temp_name` recognises (``govledger init`` removes those).

Private keys are read only from files, never from environment values or defaults, and never
printed.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import re
import secrets
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from ledger.core.keys import KeyRing, Signer, check_public_key, parse_keyring
from ledger.core.signers import SignerKeys
from ledger.errors import ConfigError, Rejected, Unavailable

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TEMP = re.compile(r"^\..+\.tmp-[0-9a-f]{12}(-wal|-shm|-journal|\.lock)?$")
# The PEM generate_keypair writes: fixed header, the fixed PKCS#8 prefix of an Ed25519 key,
# 43 base64 characters of key, fixed footer ('?' = any base64 character).
_PEM_SHAPE = (b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI" + b"?" * 43
              + b"\n-----END PRIVATE KEY-----\n")
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_SYSTEM_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)
_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK)


def temp_path(path: Path) -> Path:
    """A fresh temporary name next to ``path`` (same directory, so moving it is atomic)."""
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` was made by :func:`temp_path` (or is SQLite's file beside one)."""
    return _TEMP.match(name) is not None


def file_error(path: Path, exc: OSError) -> ConfigError | Unavailable:
    """The typed error for a failed write: a full or failing disk is the system's fault."""
    text = f"cannot write {path}: {exc.strerror or exc}"
    return Unavailable(text) if exc.errno in _SYSTEM_FAULTS else ConfigError(text)


def fsync_path(path: Path) -> None:
    """fsync a file or directory by name (a directory: its entries). Raises OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def place(temp: Path, path: Path, *, replace: bool = False) -> None:
    """Move the complete ``temp`` (a file or a directory) to ``path`` in one step, after an
    fsync of its bytes, then fsync the directory so the new name survives a power loss.

    Without ``replace`` an existing ``path`` is never overwritten: a file is hard-linked
    (which fails if the name exists) and the temporary name removed. Raises ConfigError if
    ``path`` exists, Unavailable (disk full, I/O error) or ConfigError for other OS errors.
    """
    try:
        if temp.is_dir():
            for child in temp.iterdir():
                fsync_path(child)
        fsync_path(temp)
        if replace:
            os.replace(temp, path)
        elif temp.is_dir():
            if path.exists():
                raise ConfigError(f"{path} exists; refusing to overwrite it")
            os.rename(temp, path)
        else:
            _link(temp, path)
        fsync_path(path.parent)
    except OSError as exc:
        raise file_error(path, exc) from exc


def _link(temp: Path, path: Path) -> None:
    """Give ``temp`` the name ``path`` unless that exists. Raises ConfigError or OSError."""
    try:
        os.link(temp, path)
    except FileExistsError as exc:
        raise ConfigError(f"{path} exists; refusing to overwrite it") from exc
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # Some network and FUSE file systems have no hard links: check, then rename (the
        # data directory's setup holds a lock, so nothing of ours races the check).
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite it") from exc
        os.rename(temp, path)
        return
    os.unlink(temp)


def remove_temp(path: Path) -> None:
    """Remove a temporary file or directory if it is there. Raises OSError."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, replace: bool = False) -> None:
    """Write ``data`` to ``path`` all at once or not at all: a temporary file created with
    ``mode`` (so a key is 0600 from its first byte), written, fsynced and :func:`place`-d.

    Raises ConfigError (``path`` exists and not ``replace``, or an OS error) or Unavailable
    (disk full, I/O error); the temporary file is removed on any error.
    """
    temp = temp_path(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise file_error(path, exc) from exc
    try:
        place(temp, path, replace=replace)
    finally:
        temp.unlink(missing_ok=True)


def write_derived(path: Path, content: bytes, wrong: str) -> str:
    """Ensure ``path`` holds ``content``, a file derived from another (a ``.pub`` from its
    key, ``ledger.vkey`` from the ledger): written when missing or a cut-off prefix of it
    (a write older versions made in place and a kill interrupted). Returns "kept",
    "created" or "repaired". Raises ConfigError("{path}: {wrong}") if it holds anything
    else, or as :func:`write_atomic` does."""
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        current = None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if current == content:
        return "kept"
    if current is not None and not content.startswith(current):
        raise ConfigError(f"{path}: {wrong}")
    write_atomic(path, content, replace=True)
    return "created" if current is None else "repaired"


def is_partial_key(data: bytes) -> bool:
    """Whether ``data`` is empty or a strict prefix of a key file :func:`generate_keypair`
    writes: what an interrupted in-place write leaves, never a key anyone could have used."""
    if len(data) >= len(_PEM_SHAPE):
        return False
    return all(want == got or (want == ord("?") and got in _B64)
               for want, got in zip(_PEM_SHAPE, data, strict=False))


def public_key_text(signer: Signer) -> bytes:
    """The ``NAME.pub`` content for ``signer``."""
    return base64.b64encode(signer.public_key) + b"\n"


def generate_keypair(name: str, directory: Path) -> tuple[Signer, Path, Path]:
    """Create ``NAME.key`` (0600) and ``NAME.pub`` in ``directory``.

    Each file appears complete or not at all (:func:`write_atomic`). Raises ConfigError for
    a bad name or when either file already exists, Unavailable for a full or failing disk.
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
    # The key first: the .pub is derived from it, so a kill in between loses nothing.
    write_atomic(key_path, pem, mode=0o600)
    signer = Signer(private)
    write_atomic(pub_path, public_key_text(signer))
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


def read_key_file(path: Path) -> Signer | None:
    """The key in ``path``, or None if there is no file or only a partly written one
    (:func:`is_partial_key`). Raises ConfigError if it exists but is unusable otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from exc
    return None if is_partial_key(data) else load_signer(path)


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


def load_signer_keys(authority: str | None = None,
                     keyring: Path | None = None) -> SignerKeys:
    """Signer keys from ``authority`` (a ``.pub`` file or its base64 text) and a keyring
    file. Raises ConfigError (unreadable, not a key) or Rejected (KEY_WEAK)."""
    keys: frozenset[bytes] = frozenset()
    if authority is not None:
        if Path(authority).is_file():
            keys = frozenset({load_public_key(Path(authority))})
        else:
            try:
                raw = base64.b64decode(authority.strip(), validate=True)
            except binascii.Error as exc:
                raise ConfigError("--authority is neither a file nor a base64 public key"
                                  ) from exc
            try:
                check_public_key(raw)
            except Rejected as exc:
                raise ConfigError(f"--authority is not a usable public key: {exc}") from exc
            keys = frozenset({raw})
    return SignerKeys(keys, None if keyring is None else load_keyring(keyring))
