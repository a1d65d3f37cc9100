"""A C2SP tlog-witness: its directory, its durable state, and add-checkpoint.

A witness is run by a third party with its own key (``govledger witness init``). It keeps,
per configured log, the latest checkpoint it cosigned, and cosigns a new one only if it is
consistent with that one (the checks: :mod:`ledger.core.witnessing`). Its directory::

    DIR/witness.key     Ed25519 private key (PKCS#8 PEM, 0600); never leaves this directory
    DIR/witness.pub     its public key (base64)
    DIR/witness.json    {"version": 1, "name": <witness name>,
                         "logs": [{"origin": ..., "vkey": <the log's C2SP vkey>}, ...]}
    DIR/witness.vkey    the witness's cosignature vkey (type 0x04) for logs and clients
    DIR/witness.db      SQLite: the latest cosigned checkpoint per origin

The state never moves backwards: one ``BEGIN IMMEDIATE`` transaction reads the stored
checkpoint, decides, and writes the new one, with ``synchronous=FULL``, before the
cosignature is returned (tlog-witness: check and persist atomically, persist before
responding). A single process owns the database (``lock_writer``), so two witnesses cannot
race on one state either. A crash at any point leaves the last acknowledged checkpoint or a
later one that was committed but not yet answered (which the log's retry finds by a 409).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ledger.core.checkpoint import NoteVerifier, parse_vkey
from ledger.core.cosignature import build_witness_vkey, cosign
from ledger.core.keys import Signer
from ledger.core.witnessing import (
    AddCheckpoint,
    Cosigned,
    check_add_checkpoint,
    parse_add_checkpoint,
)
from ledger.errors import ConfigError, ProofError, Unavailable
from ledger.keyfiles import generate_keypair, load_signer, write_atomic
from ledger.log.sqlite import Transaction, lock_writer, open_sqlite

CONFIG_NAME: Final = "witness.json"
DB_NAME: Final = "witness.db"
KEY_STEM: Final = "witness"
VKEY_NAME: Final = "witness.vkey"
_SCHEMA: Final = ("CREATE TABLE IF NOT EXISTS cosigned (origin TEXT PRIMARY KEY, "
                  "size INTEGER NOT NULL, root BLOB NOT NULL, text TEXT NOT NULL, "
                  "timestamp INTEGER NOT NULL)")


@dataclass(frozen=True, slots=True)
class WitnessConfig:
    """The witness's name and its configured logs (origin -> the log's verifier key)."""

    name: str
    logs: dict[str, NoteVerifier]


def init_witness(directory: Path, name: str) -> str:
    """Create a witness directory: key pair, config with no logs, vkey. Returns the vkey.

    Raises ConfigError if a witness key is already there or ``name`` is unusable,
    Unavailable for a failing disk.
    """
    try:
        build_witness_vkey(name, bytes(32))
    except ProofError as exc:
        raise ConfigError(str(exc)) from exc
    if (directory / CONFIG_NAME).exists():
        raise ConfigError(f"{directory / CONFIG_NAME} exists; this is already a witness")
    signer, _, _ = generate_keypair(KEY_STEM, directory)
    vkey = build_witness_vkey(name, signer.public_key)
    write_atomic(directory / VKEY_NAME, (vkey + "\n").encode())
    _write_config(directory, {"version": 1, "name": name, "logs": []})
    return vkey


def add_log(directory: Path, origin: str, log_vkey: str) -> None:
    """Configure a log (its origin and C2SP vkey) on a stopped witness. Raises ConfigError
    (unusable vkey, origin configured already, no witness here)."""
    try:
        parse_vkey(log_vkey)
    except ProofError as exc:
        raise ConfigError(f"log vkey: {exc}") from exc
    if not origin or any(c.isspace() for c in origin):
        raise ConfigError("log origin must be one non-empty word")
    doc = _read_config(directory)
    logs = doc["logs"]
    assert isinstance(logs, list)
    if any(entry["origin"] == origin for entry in logs):
        raise ConfigError(f"log {origin} is configured already")
    logs.append({"origin": origin, "vkey": log_vkey.strip()})
    _write_config(directory, doc, replace=True)


def load_config(directory: Path) -> WitnessConfig:
    """The witness's name and logs. Raises ConfigError."""
    doc = _read_config(directory)
    name, logs = doc.get("name"), doc.get("logs")
    if not isinstance(name, str) or not isinstance(logs, list):
        raise ConfigError(f"{directory / CONFIG_NAME}: needs \"name\" and \"logs\"")
    verifiers: dict[str, NoteVerifier] = {}
    for n, entry in enumerate(logs):
        if not isinstance(entry, dict) or not isinstance(entry.get("origin"), str) \
                or not isinstance(entry.get("vkey"), str):
            raise ConfigError(f"{directory / CONFIG_NAME}: logs[{n}] needs origin and vkey")
        try:
            verifiers[entry["origin"]] = parse_vkey(entry["vkey"])
        except ProofError as exc:
            raise ConfigError(f"{directory / CONFIG_NAME}: logs[{n}]: {exc}") from exc
    return WitnessConfig(name, verifiers)


def _read_config(directory: Path) -> dict[str, object]:
    try:
        doc = json.loads((directory / CONFIG_NAME).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"no witness at {directory} (run `govledger witness init`)") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {directory / CONFIG_NAME}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise ConfigError(f"{directory / CONFIG_NAME} must be an object with \"version\": 1")
    return doc


def _write_config(directory: Path, doc: dict[str, object], *, replace: bool = False) -> None:
    write_atomic(directory / CONFIG_NAME,
                 (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), replace=replace)


class Witness:
    """The witness's one operation over its state. Not thread-safe: one caller at a time
    (the HTTP server runs it in one worker thread)."""

    def __init__(self, directory: Path) -> None:
        """Open the witness in ``directory``. Raises ConfigError or Unavailable (another
        process holds the state)."""
        self.config = load_config(directory)
        self.signer: Signer = load_signer(directory / f"{KEY_STEM}.key")
        self.vkey = build_witness_vkey(self.config.name, self.signer.public_key)
        self._lock = lock_writer(directory / DB_NAME)
        self.conn = open_sqlite(directory / DB_NAME, "witness state",
                                check_same_thread=False)
        try:
            self.conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise Unavailable(f"witness state: {exc}") from exc

    def close(self) -> None:
        self.conn.close()
        os.close(self._lock)

    def latest(self, origin: str) -> Cosigned | None:
        """The latest checkpoint cosigned for ``origin``. Raises Unavailable."""
        try:
            row = self.conn.execute("SELECT size, root, text FROM cosigned WHERE origin = ?",
                                    (origin,)).fetchone()
        except sqlite3.Error as exc:
            raise Unavailable(f"witness state read failed: {exc}") from exc
        return None if row is None else Cosigned(int(row[0]), bytes(row[1]), str(row[2]))

    def add_checkpoint(self, body: bytes, now: int) -> str:
        """Handle one add-checkpoint request at POSIX time ``now``: check it against the
        stored checkpoint, store the new one and return the cosignature line.

        Raises WitnessRefused (the protocol's refusals) or Unavailable (the state).
        """
        request: AddCheckpoint = parse_add_checkpoint(body)
        with Transaction(self.conn, "witness state"):
            origin = _origin_of(request.note)
            stored = self.latest(origin) if origin is not None else None
            checkpoint, text = check_add_checkpoint(request, self.config.logs, stored)
            self.conn.execute(
                "INSERT INTO cosigned VALUES (?, ?, ?, ?, ?) ON CONFLICT(origin) DO UPDATE "
                "SET size = excluded.size, root = excluded.root, text = excluded.text, "
                "timestamp = excluded.timestamp",
                (checkpoint.origin, checkpoint.size, checkpoint.root_hash, text, now))
        return cosign(text, self.config.name, self.signer, now)


def _origin_of(note: str) -> str | None:
    """The first line of a note (its origin, if it is a checkpoint), for the state lookup;
    the full checks are :func:`check_add_checkpoint`'s."""
    first, sep, _ = note.partition("\n")
    return first if sep else None
