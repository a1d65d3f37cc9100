"""First-time setup that a kill interrupted: every partial state of every file ``init``
writes is either finished into a working data directory or refused with an error naming the
file, and nothing unusable is ever reported as kept.

Two kinds of writer leave partial states: an in-place writer (older versions, and any
writer killed mid-write) leaves the files before the one it was writing complete, that one
missing, empty or cut off, and nothing after it; the atomic writer leaves a temporary file
beside the complete ones.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.config import load_settings
from ledger.datadir import DataDir, init_data_dir
from ledger.errors import ConfigError, Unavailable
from ledger.init_keys import InitReport
from ledger.keyfiles import generate_keypair, is_temp_name, load_keyring, load_signer
from ledger.log.ledger_dir import ledger_info, open_ledger
from ledger.log.sequencer import keyring_verifier
from ledger.log.store import LedgerStore
from processors.app import build_engine

pytestmark = pytest.mark.integration
ORIGIN = "govledger.test/log"
GOVLEDGER = str(Path(sys.executable).parent / "govledger")
# What init writes, in its order (policies/ last; ledger.db after its key and vkey).
ORDER = ["keys/authority.key", "keys/authority.pub", "keys/operator.key", "keys/operator.pub",
         "keys/ledger.key", "keys/ledger.pub",
         "ledger.vkey", "ledger.db", "keyring.json", "policies"]
TEMP = ".tmp-0123456789ab"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One complete data directory to copy finished files from."""
    root = tmp_path_factory.mktemp("reference") / "data"
    init_data_dir(root, ORIGIN)
    return root


def copy_entry(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def cut_off(src: Path, dst: Path, mode: str) -> None:
    """Write what an in-place writer killed while writing ``src`` leaves at ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "missing":
        return
    if src.name == "policies":
        dst.mkdir()  # copytree makes the directory before its first file
    elif src.name == "ledger.db":
        if mode == "empty":
            dst.touch()
        else:  # SQLite commits whole transactions: schema and origin, no checkpoint yet
            with LedgerStore(dst, writer=True) as store:
                store.set_meta("origin", ORIGIN)
    else:
        data = src.read_bytes()
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, src.stat().st_mode & 0o777)
        os.write(fd, data[:0] if mode == "empty" else data[:len(data) // 2])
        os.close(fd)


def interrupted(reference: Path, root: Path, k: int, mode: str) -> Path:
    """The files before ORDER[k] complete, ORDER[k] in state ``mode``, nothing after."""
    root.mkdir()
    for name in ORDER[:k]:
        copy_entry(reference / name, root / name)
    cut_off(reference / ORDER[k], root / ORDER[k], mode)
    return root


def with_temporary(reference: Path, root: Path, k: int) -> Path:
    """The files before ORDER[k] complete and a half-written temporary file of ORDER[k]."""
    root.mkdir()
    for name in ORDER[:k]:
        copy_entry(reference / name, root / name)
    src = reference / ORDER[k]
    temp = root / Path(ORDER[k]).parent / f".{src.name}{TEMP}"
    temp.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        temp.mkdir()
        first = sorted(src.iterdir())[0]
        (temp / first.name).write_bytes(first.read_bytes()[:10])
    elif src.name == "ledger.db":
        shutil.copy2(src, temp)
        Path(f"{temp}-wal").write_bytes(b"\0" * 100)
        Path(f"{temp}.lock").touch()
    else:
        temp.write_bytes(src.read_bytes()[:10])
    return root


def assert_works(root: Path, report: InitReport) -> None:
    """What ``up`` needs: both keys load, the keyring names the authority, the ledger's
    checkpoint verifies and it opens for writing, the processor's engine builds; no
    temporary file is left and every kept file is one of these working files."""
    data = DataDir(root)
    authority = load_signer(data.authority_key)
    load_signer(data.keys / "ledger.key")
    ring = load_keyring(data.keyring)
    assert authority.key_id in ring
    assert ledger_info(root).tree_size == 0
    open_ledger(root, keyring_verifier(ring)).close()
    build_engine(load_settings(data_dir=root))
    leftovers = [p for d in (root, data.keys) for p in d.iterdir() if is_temp_name(p.name)]
    assert leftovers == []
    reported = [p for p in report.created + report.kept + report.repaired
                if not p.endswith(".pub")]
    assert sorted(reported) == sorted(str(root / n) for n in ORDER if not n.endswith(".pub"))


@pytest.mark.parametrize("mode", ["missing", "empty", "half"])
@pytest.mark.parametrize("k", range(len(ORDER)))
def test_init_finishes_a_setup_killed_while_writing_in_place(
        reference: Path, tmp_path: Path, k: int, mode: str) -> None:
    root = interrupted(reference, tmp_path / "data", k, mode)
    report = init_data_dir(root, ORIGIN)
    assert_works(root, report)
    assert str(root / ORDER[k]) not in report.kept


@pytest.mark.parametrize("k", range(len(ORDER)))
def test_init_removes_the_temporary_file_a_kill_left_and_finishes(
        reference: Path, tmp_path: Path, k: int) -> None:
    root = with_temporary(reference, tmp_path / "data", k)
    report = init_data_dir(root, ORIGIN)
    assert_works(root, report)
    assert report.removed and all(TEMP in Path(p).name for p in report.removed)


@pytest.mark.parametrize(("name", "mode"), [
    ("keys/ledger.key", "half"), ("ledger.db", "empty"), ("policies", "empty"),
    ("keys/authority.key", "empty"), ("keyring.json", "empty")])
def test_init_command_finishes_the_states_seen_in_the_field(
        reference: Path, tmp_path: Path, name: str, mode: str) -> None:
    root = interrupted(reference, tmp_path / "data", ORDER.index(name), mode)
    result = subprocess.run([GOVLEDGER, "init", "--data", str(root)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert f"kept    {root / name}" not in result.stdout
    assert f"redone  {root / name}" in result.stdout


def test_a_cut_off_ledger_key_under_a_signed_ledger_is_refused_by_name(
        reference: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(reference, root)
    key = root / "keys/ledger.key"
    key.write_bytes(key.read_bytes()[:50])
    with pytest.raises(ConfigError, match=f"{key} .*restore .*do not remove"):
        init_data_dir(root, ORIGIN)
    assert key.read_bytes() == (reference / "keys/ledger.key").read_bytes()[:50]


def test_another_ledger_key_is_refused_by_name(reference: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(reference, root)
    (root / "keys/ledger.key").unlink()
    (root / "keys/ledger.pub").unlink()
    generate_keypair("ledger", root / "keys")
    with pytest.raises(ConfigError, match=f"{root / 'keys/ledger.key'} is not the key"):
        init_data_dir(root, ORIGIN)


def test_a_cut_off_ledger_key_with_a_published_vkey_is_refused(
        reference: Path, tmp_path: Path) -> None:
    root = interrupted(reference, tmp_path / "data", ORDER.index("ledger.db"), "missing")
    key = root / "keys/ledger.key"
    key.write_bytes(key.read_bytes()[:40])
    with pytest.raises(ConfigError, match=f"{key} .*remove {root / 'ledger.vkey'}"):
        init_data_dir(root, ORIGIN)


def test_a_cut_off_authority_key_named_in_the_keyring_is_refused(
        reference: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(reference, root)
    key = root / "keys/authority.key"
    key.write_bytes(b"")
    with pytest.raises(ConfigError, match=f"{key} is only partly written.*restore"):
        init_data_dir(root, ORIGIN)


def test_a_keyring_that_is_not_an_interrupted_write_is_refused_by_name(
        reference: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(reference, root)
    (root / "keyring.json").write_text('{"version": 1, "principals": [')
    with pytest.raises(ConfigError, match=f"{root / 'keyring.json'}.*remove"):
        init_data_dir(root, ORIGIN)


def test_a_ledger_db_that_is_not_sqlite_is_refused_by_name(
        reference: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(reference, root)
    (root / "ledger.db").write_bytes(b"not a database, but something someone put here" * 100)
    with pytest.raises(ConfigError, match=f"{root / 'ledger.db'} is not a readable ledger"):
        init_data_dir(root, ORIGIN)


def test_a_ledger_with_checkpoints_is_never_recreated(reference: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(reference, root)
    before = (root / "ledger.db").read_bytes()
    (root / "ledger.vkey").unlink()  # a vkey is derived: written again from the ledger
    report = init_data_dir(root, ORIGIN)
    assert (root / "ledger.db").read_bytes() == before
    assert str(root / "ledger.vkey") in report.created
    assert (root / "ledger.vkey").read_text() == (reference / "ledger.vkey").read_text()


def test_a_key_write_that_fails_leaves_no_key_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("ledger.keyfiles.os.fsync", disk_full)
    with pytest.raises(Unavailable, match="No space left"):
        generate_keypair("alice", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_keyring_update_that_fails_leaves_the_keyring_as_it_was(
        reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ledger.cli import add_to_keyring
    from ledger.core.keys import Principal
    from tests.factories import ALICE
    path = tmp_path / "keyring.json"
    shutil.copy2(reference / "keyring.json", path)
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("ledger.keyfiles.os.fsync", disk_full)
    with pytest.raises(Unavailable):
        add_to_keyring(path, Principal("agent:alice", "acme", ALICE.public_key,
                                       frozenset({"requester"})))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]
    assert json.loads(before)  # still the complete document


def test_the_new_ledger_db_is_one_complete_file(tmp_path: Path) -> None:
    report = init_data_dir(tmp_path / "data", ORIGIN)
    assert str(tmp_path / "data/ledger.db") in report.created
    assert not (tmp_path / "data/ledger.db-wal").exists()
    with sqlite3.connect(tmp_path / "data/ledger.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone() == (1,)


def test_a_foreign_sqlite_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    with sqlite3.connect(root / "ledger.db") as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    before = (root / "ledger.db").read_bytes()
    with pytest.raises(ConfigError, match=f"{root / 'ledger.db'} is an SQLite database but "
                                          "not a ledger"):
        init_data_dir(root, ORIGIN)
    assert (root / "ledger.db").read_bytes() == before


def test_keys_are_written_without_overwriting_where_there_are_no_hard_links(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr("ledger.keyfiles.os.link", no_links)
    signer, key_path, _ = generate_keypair("alice", tmp_path)
    assert load_signer(key_path).key_id == signer.key_id
    assert key_path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="exists"):
        generate_keypair("alice", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.key", "alice.pub"]


def test_setups_started_together_take_turns(reference: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl
    import threading
    root = tmp_path / "data"
    shutil.copytree(reference, root)
    results: list[object] = []
    fd = os.open(root, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another setup is running
    try:
        worker = threading.Thread(target=lambda: results.append(init_data_dir(root, ORIGIN)))
        worker.start()
        worker.join(timeout=0.5)
        assert worker.is_alive() and results == []  # waiting, neither done nor failed
    finally:
        os.close(fd)
    worker.join(timeout=60)
    assert len(results) == 1 and isinstance(results[0], InitReport)
    fd = os.open(root, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    monkeypatch.setattr("ledger.datadir.LOCK_WAIT_S", 0.0)
    try:
        with pytest.raises(Unavailable, match="another govledger init or up"):
            init_data_dir(root, ORIGIN)
    finally:
        os.close(fd)


def test_a_keyring_update_keeps_the_file_mode(reference: Path, tmp_path: Path) -> None:
    from ledger.cli import add_to_keyring
    from ledger.core.keys import Principal
    from tests.factories import ALICE
    path = tmp_path / "keyring.json"
    shutil.copy2(reference / "keyring.json", path)
    path.chmod(0o600)
    add_to_keyring(path, Principal("agent:alice", "acme", ALICE.public_key,
                                   frozenset({"requester"})))
    assert path.stat().st_mode & 0o777 == 0o600
    assert ALICE.key_id in load_keyring(path)
