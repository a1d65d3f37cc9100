"""The data directory: what lives where, and first-start creation (``govledger init``).

::

    DATA/
      keys/authority.key   authority signing key (decisions, artifacts), 0600; only the
                           processor loads it (elsewhere: Settings.authority_key_file)
      keys/ledger.key      ledger signing key (checkpoints), 0600; only the sequencer
                           loads it (elsewhere: Settings.ledger_key_file)
      keys/operator.key    the operator's admin key (signs the governance genesis), 0600;
                           keep it offline after the first start (admins use it to govern;
                           elsewhere: Settings.operator_key_file)
      keys/operator.pub, keys/authority.pub
                           the trust anchors every follower of the ledger's governance
                           starts from (ledger.log.governance.anchors); here too when the
                           key lives elsewhere
      keyring.json         trusted principals (ledger.core.keys documents the format)
      policies/            Cedar policies + schema (processors/policy.py)
      ledger.db            the Merkle ledger (the sequencer is its only writer)
      ledger.vkey          the log's C2SP verifier key
      processor.db         the processor journal (processors/journal.py)

:func:`init_data_dir` creates whatever is missing and never overwrites a usable file, so an
operator's own files always win. Every file is written under a temporary name, fsynced and
moved into place (ledger.keyfiles.write_atomic; policies/ as a whole directory, ledger.db
complete with its first checkpoint), in the order authority key, operator key, ledger key,
ledger.vkey, ledger.db, keyring.json, policies/. A kill leaves a prefix of that list plus temporary
files; the next ``init`` or ``up`` removes those, checks what exists, writes again what is
provably an interrupted write (of older versions, which wrote in place), a key only while
nothing signed with it can exist, and refuses anything else with a ConfigError naming the
file and what to do. docs/ledger.md "First start and crashes" has the table.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ledger.config import Settings
from ledger.core.checkpoint import build_vkey
from ledger.core.keys import Principal, Signer, principal_document
from ledger.errors import ConfigError, Unavailable
from ledger.init_keys import (
    InitReport,
    derived_file,
    keep_authority_key,
    keep_operator_key,
    new_key,
    public_key_file,
)
from ledger.keyfiles import (
    file_error,
    is_temp_name,
    load_keyring,
    place,
    read_key_file,
    remove_temp,
    temp_path,
    write_atomic,
)
from ledger.log.ledger_dir import DB_NAME, VKEY_NAME, create_ledger_db, ledger_info

log = logging.getLogger(__name__)
AUTHORITY_IDENTITY = "govledger:authority"
LOCK_WAIT_S = 60.0
"""How long a setup waits for another one on the same directory to finish."""
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
_LEDGER_TABLES = frozenset({"meta", "leaves", "hash_pages", "checkpoints", "offsets", "keys",
                            "recent_keys"})  # ledger.log.store's schema


@dataclass(frozen=True, slots=True)
class DataDir:
    """Where everything lives. The two signing keys may live outside ``root`` (a volume or
    secret mounted only into the role that signs with it); by default in ``root/keys``."""

    root: Path
    authority_key_file: Path | None = None
    ledger_key_file: Path | None = None
    operator_key_file: Path | None = None

    @classmethod
    def of(cls, settings: Settings) -> DataDir:
        """The data directory and key files ``settings`` name."""
        return cls(settings.data_dir, settings.authority_key_file, settings.ledger_key_file,
                   settings.operator_key_file)

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def authority_key(self) -> Path:
        return self.authority_key_file or self.keys / "authority.key"

    @property
    def ledger_key(self) -> Path:
        return self.ledger_key_file or self.keys / "ledger.key"

    @property
    def operator_key(self) -> Path:
        return self.operator_key_file or self.keys / "operator.key"

    @property
    def keyring(self) -> Path:
        return self.root / "keyring.json"

    @property
    def policies(self) -> Path:
        return self.root / "policies"

    @property
    def ledger_db(self) -> Path:
        return self.root / DB_NAME

    @property
    def vkey(self) -> Path:
        return self.root / VKEY_NAME

    @property
    def journal(self) -> Path:
        return self.root / "processor.db"


def example_policies() -> Path:
    """The example Cedar policy set shipped with the package."""
    return Path(str(resources.files("processors") / "examples" / "policies"))


def init_data_dir(root: Path, origin: str, *, authority_key: Path | None = None,
                  ledger_key: Path | None = None,
                  operator_key: Path | None = None) -> InitReport:
    """Create what is missing in ``root`` (and the key files, when given elsewhere) and
    finish a setup a crash interrupted (module docstring). Raises ConfigError (a file that
    does not check out, named with what to do), ProofError (ledger.db's checkpoint does not
    verify) or Unavailable (disk, another init)."""
    data = DataDir(root, authority_key, ledger_key, operator_key)
    report = InitReport()
    for directory in _key_dirs(data):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise file_error(directory, exc) from exc
    with _locked(root):
        _remove_temporaries(data, report)
        authority = keep_authority_key(data, report)
        keep_operator_key(data, report, genesis_signed=data.ledger_db.exists()
                          and _has_genesis(data.ledger_db))
        _ledger(data, origin, report)
        _keyring(data, authority, report)
        _policies(data, report)
    if report.repaired or report.removed:
        log.warning("finished a setup that was interrupted: wrote again %s; removed %s",
                    report.repaired or "nothing", report.removed or "nothing")
    return report


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the directory itself: one setup at a time (processes that
    start together, e.g. compose replicas, take turns), so removing temporary files never
    pulls one from under another setup. Raises Unavailable after LOCK_WAIT_S."""
    fd = os.open(root, os.O_RDONLY)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(f"another govledger init or up has been setting up "
                                      f"{root} for {LOCK_WAIT_S:.0f} s") from exc
                time.sleep(0.05)  # a lock retry, not a wait for a condition
        yield
    finally:
        os.close(fd)


def require_initialized(data: DataDir) -> None:
    """What one role of a split deployment (``govledger processor``, ``sequencer``, ``api``)
    needs before it starts: a directory ``govledger init`` finished. Such a role creates
    nothing and reads no key but its own (the processor's and sequencer's are checked when
    they load them). Raises ConfigError naming what is missing."""
    for path in (data.keyring, data.ledger_db, data.vkey):
        if not path.is_file():
            raise ConfigError(f"{path} is missing: run `govledger init` on {data.root} first "
                              "(one role of a split deployment creates nothing)")


def _key_dirs(data: DataDir) -> list[Path]:
    """DATA/keys and the directories of key files kept elsewhere, each once."""
    return list(dict.fromkeys((data.keys, data.authority_key.parent, data.ledger_key.parent,
                               data.operator_key.parent)))


def _remove_temporaries(data: DataDir, report: InitReport) -> None:
    for directory in dict.fromkeys((data.root, *_key_dirs(data))):
        for path in sorted(directory.iterdir()):
            if is_temp_name(path.name):
                try:
                    remove_temp(path)
                except OSError as exc:
                    raise file_error(path, exc) from exc
                report.removed.append(str(path))


def _has_genesis(path: Path) -> bool:
    try:
        with _connection(path) as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                            "'leaves'").fetchone() is None:
                return False  # not a ledger: the ledger step says so
            found = conn.execute("SELECT EXISTS (SELECT 1 FROM leaves WHERE kind = "
                                 "'PrincipalRegistered')").fetchone()
    except sqlite3.Error:
        return True  # unreadable: assume the worst, refuse to make a new key
    return bool(found[0])


def _ledger(data: DataDir, origin: str, report: InitReport) -> None:
    """Keep a ledger whose checkpoint verifies under ledger.vkey and ledger.key, or create
    the whole ledger (key if needed, vkey, database) when there is none."""
    state = _ledger_state(data.ledger_db)
    if state == "complete":
        _check_ledger(data, report)
        return
    signer = read_key_file(data.ledger_key)
    if signer is None and data.vkey.exists() and data.vkey.read_bytes().endswith(b"\n"):
        raise ConfigError(
            f"{data.ledger_key} is missing or only partly written and {data.vkey} names a "
            f"ledger key, though no checkpoint was ever signed ({data.ledger_db} has none): "
            f"remove {data.vkey} and run init again to make a new ledger key")
    # An empty ledger.db recorded nothing; with none, a stale -wal would be replayed into
    # the new file.
    _remove_database(data.ledger_db)
    (report.repaired if state == "empty" else report.created).append(str(data.ledger_db))
    if signer is None:
        signer = new_key(data.ledger_key, report)
    else:
        public_key_file(data.ledger_key, signer, report)
        report.kept.append(str(data.ledger_key))
    # No checkpoint exists yet, so a vkey of another key or origin has verified nothing.
    vkey = (build_vkey(origin, signer.public_key) + "\n").encode()
    existed = data.vkey.exists()
    if existed and data.vkey.read_bytes() == vkey:
        report.kept.append(str(data.vkey))
    else:
        write_atomic(data.vkey, vkey, replace=True)
        (report.repaired if existed else report.created).append(str(data.vkey))
    create_ledger_db(data.root, signer, origin)


def _ledger_state(path: Path) -> str:
    """"missing", "empty" (the ledger's tables or none, no leaf and no checkpoint: nothing
    was ever recorded or signed in it) or "complete" (has a checkpoint). Raises ConfigError
    for a file that is not an SQLite database, holds other tables, or holds leaves without
    a checkpoint (init never writes any of those)."""
    if not path.exists():
        return "missing"
    try:
        with _connection(path) as conn:
            tables = {name for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            counts = {table: conn.execute(
                f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0]  # noqa: S608
                for table in ("leaves", "checkpoints") if table in tables}
    except sqlite3.Error as exc:
        raise ConfigError(f"{path} is not a readable ledger database ({exc}); govledger init "
                          "never leaves one like that: restore it from a backup") from exc
    if not tables <= _LEDGER_TABLES:
        raise ConfigError(f"{path} is an SQLite database but not a ledger (tables "
                          f"{sorted(tables - _LEDGER_TABLES)}): move it away and run init again")
    if counts.get("checkpoints"):
        return "complete"
    if counts.get("leaves"):
        raise ConfigError(f"{path} holds leaves but no signed checkpoint; govledger never "
                          "writes that: restore it from a backup or run `govledger ledger "
                          "audit` on a copy")
    return "empty"


@contextmanager
def _connection(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection: checking a ledger never changes it."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def _remove_database(path: Path) -> None:
    """Delete an empty ledger.db and SQLite's files beside it, under the writer lock so no
    sequencer has it open. Raises Unavailable if one has."""
    lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise Unavailable(f"a ledger writer holds {path}.lock") from exc
        for suffix in ("", *_SQLITE_SIDE_FILES):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    except OSError as exc:
        raise file_error(path, exc) from exc
    finally:
        os.close(lock)


def _check_ledger(data: DataDir, report: InitReport) -> None:
    """A ledger that has checkpoints: its key must load and match the vkey it recorded;
    ledger.vkey is written from the database if missing or cut off; the latest checkpoint
    must verify (ledger_info). Raises ConfigError or ProofError."""
    signer = read_key_file(data.ledger_key)
    if signer is None:
        raise ConfigError(
            f"{data.ledger_key} is missing or only partly written, but {data.ledger_db} "
            f"holds checkpoints signed with it: restore {data.ledger_key} from a backup "
            f"(do not remove {data.ledger_db}: it is the record)")
    try:
        with _connection(data.ledger_db) as conn:
            rows = dict(conn.execute(
                "SELECT key, value FROM meta WHERE key IN ('origin', 'vkey')"))
    except sqlite3.Error as exc:
        raise ConfigError(f"{data.ledger_db} has no readable metadata: {exc}") from exc
    origin, vkey = rows.get("origin"), rows.get("vkey")
    if not origin or vkey != build_vkey(origin, signer.public_key):
        raise ConfigError(f"{data.ledger_key} is not the key {data.ledger_db} was created "
                          f"with: restore the ledger's own key from a backup")
    public_key_file(data.ledger_key, signer, report)
    if derived_file(data.vkey, (vkey + "\n").encode(), report,
                     f"it is not the verifier key of {data.ledger_db}: remove {data.vkey} "
                     "and run init again to have it written from the ledger"):
        report.kept.append(str(data.vkey))
    ledger_info(data.root)  # the latest checkpoint verifies under ledger.vkey
    report.kept += [str(data.ledger_key), str(data.ledger_db)]


def _keyring(data: DataDir, authority: Signer, report: InitReport) -> None:
    """Keep a keyring that loads; write one naming the authority when there is none or
    only a cut-off write of that very document."""
    principal = Principal(AUTHORITY_IDENTITY, "*", authority.public_key,
                          frozenset({"authority"}))
    doc = {"version": 1, "principals": [dict(principal_document(principal))]}
    content = (json.dumps(doc, indent=2) + "\n").encode()
    if data.keyring.exists():
        try:
            load_keyring(data.keyring)
        except ConfigError as exc:
            derived_file(data.keyring, content, report,
                          f"{exc}; fix it, or remove {data.keyring} and run init again to "
                          "have one written that names only the authority")
            return
        report.kept.append(str(data.keyring))
        return
    write_atomic(data.keyring, content)
    report.created.append(str(data.keyring))


def _policies(data: DataDir, report: InitReport) -> None:
    """Keep a policies/ that holds files; copy the examples when there is none or an empty
    one (an older init interrupted before its first file; an empty set does not load)."""
    target = data.policies
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is not a directory: move it away and run init again")
    if target.is_dir() and any(target.iterdir()):
        report.kept.append(str(target))
        return
    temp = temp_path(target)
    try:
        shutil.copytree(example_policies(), temp)
        if target.is_dir():
            target.rmdir()
            report.repaired.append(str(target))
        else:
            report.created.append(str(target))
        place(temp, target)
    except OSError as exc:
        raise file_error(target, exc) from exc
    finally:
        if temp.exists():  # failed before the move; the next init removes what stays
            shutil.rmtree(temp, ignore_errors=True)
