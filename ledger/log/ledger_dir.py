"""The ledger's data directory: one library call per CLI command (create, open with the
start-up check, append a JSONL file, read the vkey, the info and the latest checkpoint),
around the sequencer (:mod:`ledger.log.sequencer`).

Data directory layout (docs/ledger.md)::

    DIR/ledger.db          the SQLite log (+ ledger.db-wal, ledger.db-shm, ledger.db.lock)
    DIR/keys/ledger.key    the checkpoint signing key (PKCS#8 PEM, 0600)
    DIR/keys/ledger.pub    its public key (base64)
    DIR/ledger.vkey        the C2SP vkey verifiers need (name = origin)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ledger.core.checkpoint import build_vkey, parse_vkey, verify_checkpoint
from ledger.core.keys import Signer
from ledger.errors import ConfigError, ProofError, Reason, Rejected, Unavailable
from ledger.keyfiles import (
    generate_keypair,
    load_keyring,
    load_signer,
    place,
    temp_path,
    write_atomic,
)
from ledger.log.records import LeafRecord
from ledger.log.sequencer import Sequencer, Verify, keyring_verifier
from ledger.log.store import LedgerStore

DB_NAME, KEY_DIR, KEY_NAME, VKEY_NAME = "ledger.db", "keys", "ledger", "ledger.vkey"


@dataclass(frozen=True, slots=True)
class LedgerInfo:
    origin: str
    tree_size: int
    root_hash: str
    vkey: str
    checkpoint: str


@dataclass(slots=True)
class AppendCounts:
    appended: int = 0
    duplicates: int = 0
    refused: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def init_ledger(data_dir: Path, origin: str) -> LedgerInfo:
    """Create the signing key DIR/keys/ledger.key, DIR/ledger.vkey and DIR/ledger.db with the
    empty checkpoint, each complete or not at all. Raises ConfigError if a ledger or key
    already exists, Unavailable (SQLite, disk full)."""
    if (data_dir / DB_NAME).exists():
        raise ConfigError(f"{data_dir / DB_NAME} exists")
    signer, _, _ = generate_keypair(KEY_NAME, data_dir / KEY_DIR)
    write_atomic(data_dir / VKEY_NAME, (build_vkey(origin, signer.public_key) + "\n").encode(),
                 replace=True)
    create_ledger_db(data_dir, signer, origin)
    return ledger_info(data_dir)


def create_ledger_db(data_dir: Path, signer: Signer, origin: str) -> None:
    """Create DIR/ledger.db complete or not at all: schema, origin, vkey and the first signed
    checkpoint are written under a temporary name, folded into one file (no ``-wal`` beside
    it), fsynced and linked into place. A kill leaves no ledger.db, never one without its
    checkpoint. Raises ConfigError if ledger.db exists, Unavailable (SQLite, disk full)."""
    temp = temp_path(data_dir / DB_NAME)
    try:
        store = LedgerStore(temp, writer=True)
        try:
            Sequencer(store, signer, origin, _refuse_all)  # schema, meta, first checkpoint
            store.fold_wal()
        finally:
            store.close()
        if Path(f"{temp}-wal").exists():
            raise Unavailable(f"the new ledger {temp} still has a write-ahead log")
        place(temp, data_dir / DB_NAME)
    finally:
        for leftover in ("", "-wal", "-shm", "-journal", ".lock"):
            Path(f"{temp}{leftover}").unlink(missing_ok=True)


def _refuse_all(data: bytes) -> LeafRecord:
    raise Rejected(Reason.KEY_UNKNOWN, "no keyring given")


def open_ledger(data_dir: Path, verify: Verify, *, reverify: Verify | None = None,
                checkpoint_interval: float = 0.0, key_file: Path | None = None) -> Sequencer:
    """Open DIR for writing (takes the writer lock, verifies against the last checkpoint),
    signing with ``key_file`` (default DIR/keys/ledger.key).

    Raises ConfigError (no ledger, bad key), Unavailable (locked) or ProofError (mismatch).
    """
    store_path = data_dir / DB_NAME
    if not store_path.exists():
        raise ConfigError(f"no ledger at {data_dir}; run init first")
    signer = load_signer(key_file or data_dir / KEY_DIR / f"{KEY_NAME}.key")
    store = LedgerStore(store_path, writer=True)
    try:
        origin = store.meta("origin")
        if origin is None:
            raise ConfigError(f"{store_path} has no origin: an unfinished ledger (`govledger "
                              "init` finishes it)")
        return Sequencer(store, signer, origin, verify, reverify=reverify,
                         checkpoint_interval=checkpoint_interval)
    except BaseException:
        store.close()
        raise


def append_jsonl(data_dir: Path, jsonl: Path, keyring_path: Path, *, batch_size: int = 1000,
                 progress: Callable[[int], None] | None = None) -> AppendCounts:
    """Append a file of envelopes, one per line, verified against the keyring
    (:func:`keyring_verifier`). ``progress`` gets the number of lines done after each batch.

    Raises ConfigError, Unavailable or ProofError; refused lines are only counted.
    """
    keyring = load_keyring(keyring_path)
    sequencer = open_ledger(data_dir, keyring_verifier(keyring))
    counts, done = AppendCounts(), 0
    try:
        with jsonl.open("rb") as handle:
            for batch in _batches((line.rstrip(b"\r\n") for line in handle
                                   if line.strip()), batch_size):
                result = sequencer.submit(batch)
                counts.appended += result.appended
                counts.duplicates += result.duplicates
                counts.refused += len(result.refused)
                for reason, count in result.refused_by_reason().items():
                    counts.reasons[reason] = counts.reasons.get(reason, 0) + count
                done += len(batch)
                if progress is not None:
                    progress(done)
    except OSError as exc:
        raise ConfigError(f"cannot read {jsonl}: {exc.strerror}") from exc
    finally:
        sequencer.close()
    return counts


def _batches(lines: Iterable[bytes], size: int) -> Iterable[list[bytes]]:
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_vkey(data_dir: Path) -> str:
    try:
        return (data_dir / VKEY_NAME).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {data_dir / VKEY_NAME}: {exc.strerror}") from exc


def ledger_info(data_dir: Path) -> LedgerInfo:
    """Origin, sizes, root and vkey of the latest signed checkpoint (verified).

    Raises ConfigError or ProofError.
    """
    vkey = read_vkey(data_dir)
    with LedgerStore(data_dir / DB_NAME) as store:
        latest = store.latest_checkpoint()
        origin = store.meta("origin")
        if latest is None or origin is None:
            raise ProofError("ledger has no signed checkpoint")
        checkpoint = verify_checkpoint(latest[1], parse_vkey(vkey), origin)
        return LedgerInfo(origin, checkpoint.size, checkpoint.root_hash.hex(), vkey, latest[1])


def latest_checkpoint(data_dir: Path) -> str:
    """The latest signed checkpoint note text (verified). Raises ConfigError/ProofError."""
    return ledger_info(data_dir).checkpoint
