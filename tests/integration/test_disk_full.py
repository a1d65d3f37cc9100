"""A full disk ends every SQLite write in Unavailable (never a raw sqlite3 error), and the
decision worker process in exit status 3 (a supervisor restarts it once there is room).

Three ways to fill the disk: ``PRAGMA max_page_count`` (SQLITE_FULL as soon as the file
must grow: deterministic, everywhere), a file-size limit (``RLIMIT_FSIZE`` 0: every write
to a file fails, as on a full disk, but SQLite calls it an I/O error), and a real 1 MB tmpfs
(ENOSPC; needs permission to mount, skipped without it).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from ledger.core.streams import Stream
from ledger.errors import Unavailable
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.topics import Topics
from ledger.log.records import LeafRecord
from ledger.log.store import LedgerStore
from processors.core.outcomes import Outcome, Output
from processors.journal import Journal
from tests.disk_support import no_file_may_grow
from tests.factories import T0
from tests.ledger_support import make_ledger
from tests.service_support import make_data_dir, produce

pytestmark = pytest.mark.integration


def entry(n: int, size: int = 64 * 1024) -> tuple[Stream, datetime, bytes, Outcome]:
    raw = n.to_bytes(4, "big") * (size // 4)
    subject = hashlib.sha256(raw).hexdigest()
    return (Stream.REQUESTS, T0, raw,
            Outcome(subject, (Output(Stream.DEADLETTER, subject.encode(), raw),), False))


def leaf(n: int, size: int = 64 * 1024) -> LeafRecord:
    data = n.to_bytes(4, "big") * (size // 4)
    return LeafRecord(hashlib.sha256(data).hexdigest(), "AuthorizationRequested", data)


def journal_with_offsets(path: Path) -> Journal:
    journal = Journal(path)
    journal.append([entry(0)], offsets={("gov.requests", 0): 1})
    return journal


def test_a_full_journal_refuses_a_batch_with_unavailable(tmp_path: Path) -> None:
    journal = journal_with_offsets(tmp_path / "processor.db")
    pages = journal._writer.execute("PRAGMA page_count").fetchone()[0]
    journal._writer.execute(f"PRAGMA max_page_count = {pages + 4}")
    with pytest.raises(Unavailable, match="full"):
        journal.append([entry(n) for n in range(1, 4)],
                       offsets={("gov.requests", 0): 4})
    assert journal.count() == 1 and journal.offsets() == {("gov.requests", 0): 1}
    journal.append([entry(1, size=64)])  # room again: usable
    journal.close()


def test_a_full_ledger_refuses_an_append_with_unavailable(tmp_path: Path) -> None:
    store = LedgerStore(make_ledger(tmp_path) / "ledger.db", writer=True)
    store.append([leaf(0)])
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages + 4}")
    with pytest.raises(Unavailable, match="full"):
        store.append([leaf(n) for n in range(1, 4)])
    assert store.tree_size() == 1
    assert store.append([leaf(1, size=64)]).appended == 1  # the store is still usable
    store.close()


JOURNAL_WRITES: dict[str, Callable[[Journal], object]] = {
    "append": lambda j: j.append([entry(1)]),
    "reset_offsets": lambda j: j.reset_offsets(["gov.requests"]),
    "mark_published": lambda j: j.mark_published(1),
}


@pytest.mark.parametrize("write", JOURNAL_WRITES, ids=list(JOURNAL_WRITES))
def test_every_journal_write_on_a_disk_that_takes_nothing_is_unavailable(
        tmp_path: Path, write: str) -> None:
    journal = journal_with_offsets(tmp_path / "processor.db")
    with no_file_may_grow(), pytest.raises(Unavailable, match="journal write failed"):
        JOURNAL_WRITES[write](journal)
    JOURNAL_WRITES[write](journal)  # room again: the same write succeeds
    journal.close()


LEDGER_WRITES: dict[str, Callable[[LedgerStore], object]] = {
    "append": lambda s: s.append([leaf(1)]),
    "set_meta": lambda s: s.set_meta("witness", "x"),
    "sign_checkpoint": lambda s: s.sign_checkpoint(lambda size, root: f"{size} {root.hex()}"),
}


@pytest.mark.parametrize("write", LEDGER_WRITES, ids=list(LEDGER_WRITES))
def test_every_ledger_write_on_a_disk_that_takes_nothing_is_unavailable(
        tmp_path: Path, write: str) -> None:
    store = LedgerStore(make_ledger(tmp_path) / "ledger.db", writer=True)
    store.append([leaf(0)])
    with no_file_may_grow(), pytest.raises(Unavailable, match=r"ledger (write|commit) failed"):
        LEDGER_WRITES[write](store)
    LEDGER_WRITES[write](store)
    store.close()


def run_processor(data_dir: Path, log: Path, bootstrap: str, topics: Topics,
                  file_limit: int | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GOVLEDGER_DATA_DIR": str(data_dir),
           "GOVLEDGER_KAFKA_BOOTSTRAP": bootstrap, "GOVLEDGER_TOPIC_PREFIX": topics.prefix,
           "GOVLEDGER_PARTITIONS": "4", "GOVLEDGER_KAFKA_IDEMPOTENT": "false",
           "GOVLEDGER_PROCESSOR_GROUP": "false", "GOVLEDGER_KAFKA_FETCH_MAX_WAIT_MS": "10"}

    def limit() -> None:  # in the child only: its files may not grow past file_limit
        assert file_limit is not None
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, resource.RLIM_INFINITY))

    with log.open("wb") as stderr:
        return subprocess.Popen([sys.executable, "-m", "processors", "--ready-file",
                                 str(data_dir / "ready")], env=env, stderr=stderr,
                                preexec_fn=None if file_limit is None else limit)


def feed_until_exit(proc: subprocess.Popen[bytes], data_dir: Path, log: Path, bootstrap: str,
                    topics: Topics) -> tuple[int, str]:
    """Wait until the worker is ready, send it two 600 KB bad messages (their journal entry
    needs ~1.4 MB each), and return its exit status and log."""
    wait_ready(proc, data_dir / "ready", log)
    big = [(b"k", b"{" + bytes([65 + n]) * 600_000) for n in range(2)]
    asyncio.run(produce(bootstrap, topics.requests, big, max_request_size=4 * 1024 * 1024))
    try:
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, log.read_text()


def test_the_processor_exits_3_when_its_journal_cannot_grow(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    data = make_data_dir(tmp_path / "data")
    proc = run_processor(data.root, tmp_path / "log", broker.bootstrap, topics,
                         file_limit=256 * 1024)
    code, log = feed_until_exit(proc, data.root, tmp_path / "log", broker.bootstrap, topics)
    assert code == 3, log
    assert "unavailable: processor journal write failed" in log
    assert "Traceback" not in log


def wait_ready(proc: subprocess.Popen[bytes], ready: Path, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the processor did not become ready"
        time.sleep(0.05)


def test_the_processor_exits_3_when_it_cannot_reset_offsets_on_a_full_journal(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    """The start after a broker wipe forgets the journaled offsets (Journal.reset_offsets);
    on a full disk that write fails: exit 3 with Unavailable, not a raw sqlite3 error."""
    data = make_data_dir(tmp_path / "data")
    log = tmp_path / "log"
    first = run_processor(data.root, log, broker.bootstrap, topics, file_limit=None)
    wait_ready(first, data.root / "ready", log)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0, log.read_text()
    (data.root / "ready").unlink()
    db = data.root / "processor.db"
    reader = sqlite3.connect(db)  # keeps the WAL and its index open: their sizes stay
    try:
        reader.execute("SELECT count(*) FROM journal").fetchone()
        journal = Journal(db)
        journal.append([], offsets={(topics.requests, 0): 5})  # the broker has 0: "wiped"
        journal.close()
        # Any write past the WAL's end fails: the WAL only grows while a reader holds it
        # and nothing checkpointed it (the database and its index are not written to).
        wal = db.with_name("processor.db-wal").stat().st_size
        second = run_processor(data.root, tmp_path / "log2", broker.bootstrap, topics,
                               file_limit=wal)
        try:
            code = second.wait(timeout=60)
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
    finally:
        reader.close()
    text = (tmp_path / "log2").read_text()
    assert code == 3, text
    # The first file that must grow fails: the journal's WAL, or the shared-memory index of
    # ledger.db that the processor's read of the ledger creates (its writer removed it).
    assert ("unavailable: processor journal write failed" in text
            or "unavailable: cannot open ledger database" in text), text
    assert "Traceback" not in text


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs: a real full disk (ENOSPC). Skipped where mounting is not permitted."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> None:
    """Take every byte left on ``disk``."""
    with (disk / "filler").open("wb", buffering=0) as filler:
        try:
            while filler.write(b"\0" * 4096):
                pass
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def test_on_a_real_full_disk_the_journal_and_the_ledger_are_unavailable(
        tiny_disk: Path) -> None:
    """Each write either fits (SQLite may rewrite pages it already has) or is Unavailable;
    never a raw sqlite3 error, and a write that needs new room always fails."""
    journal = journal_with_offsets(tiny_disk / "processor.db")
    store = LedgerStore(make_ledger(tiny_disk) / "ledger.db", writer=True)
    with pytest.raises(Unavailable, match="database or disk is full"):  # noqa: PT012
        for n in range(1, 40):  # 64 KB each: the 1 MB disk fills up
            journal.append([entry(n)], offsets={("gov.requests", 0): n + 1})
    fill(tiny_disk)
    with pytest.raises(Unavailable, match="full"):
        journal.append([entry(100)])
    with pytest.raises(Unavailable, match="full"):
        store.append([leaf(100)])
    for journal_write in JOURNAL_WRITES.values():
        with contextlib.suppress(Unavailable):  # the one failure allowed: no raw sqlite3
            journal_write(journal)
    for ledger_write in LEDGER_WRITES.values():
        with contextlib.suppress(Unavailable):
            ledger_write(store)
    journal.close()
    store.close()


def test_on_a_real_full_disk_the_processor_exits_3(
        tiny_disk: Path, tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    data = make_data_dir(tiny_disk / "data")
    proc = run_processor(data.root, tmp_path / "log", broker.bootstrap, topics,
                         file_limit=None)
    code, log = feed_until_exit(proc, data.root, tmp_path / "log", broker.bootstrap, topics)
    assert code == 3, log
    assert "unavailable: processor journal write failed: database or disk is full" in log
