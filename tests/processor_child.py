"""The processor as the child process ``govledger up`` starts (``python -m processors``), for
crash tests on the real broker: optionally with a crash point in its journal and a record of
what it decided (tests/integration/test_governance_crash.py, test_governance_group_crash.py).

The crash point: SIGKILL (the process dies on the spot, from the journal's writer thread) at
CRASH_POINT of the batch whose outcome for CRASH_SUBJECT is being journaled:

* ``decided``: the engine decided the batch (and applied a governance event in it), nothing
  is journaled;
* ``in-transaction``: the journal transaction holds the batch's rows, not committed yet;
* ``journaled``: the journal committed the batch, nothing of it is published.

With CRASH_ONCE (a file path), only the first process to reach the point dies (it creates
the file); the others carry on. RECORD (a file path): every subject the worker decides is
appended to it, one a line, as soon as it is decided.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

from ledger.config import Settings
from ledger.server.children import settings_env
from tests.governance_support import wait_until

ROOT = Path(__file__).resolve().parents[1]

CRASHING_PROCESSOR = """
import os, signal
from processors.journal import Journal
from processors.worker import DecisionWorker
subject, point = os.environ.get("CRASH_SUBJECT", ""), os.environ.get("CRASH_POINT", "")
once, record = os.environ.get("CRASH_ONCE"), os.environ.get("RECORD")
append, decide = Journal.append, DecisionWorker._decide

def die():
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # another process crashed here already: carry on
    os.kill(os.getpid(), signal.SIGKILL)

class KillAtCommit:
    def __init__(self, conn):
        self.conn = conn
    def execute(self, sql, *args):
        if sql == "COMMIT":
            die()
        return self.conn.execute(sql, *args)
    def __getattr__(self, name):
        return getattr(self.conn, name)

def crashing_append(self, batch, *args, **kwargs):
    batch = list(batch)
    if not point or not any(outcome.subject == subject for *_, outcome in batch):
        return append(self, batch, *args, **kwargs)
    if point == "decided":
        die()
    writer = self._writer
    if point == "in-transaction":
        self._writer = KillAtCommit(writer)
    try:
        last = append(self, batch, *args, **kwargs)
    finally:
        self._writer = writer
    if point == "journaled":
        die()
    return last

async def recording_decide(self, records):
    handled = await decide(self, records)
    if record:
        with open(record, "a") as out:
            out.writelines(outcome.subject + "\\n" for *_, outcome in handled)
    return handled

Journal.append = crashing_append
DecisionWorker._decide = recording_decide
from processors.__main__ import main
main()
"""
_numbers = itertools.count()


class Processor:
    """``python -m processors`` (or the crashing, recording variant) as a child process,
    started and ready (restored and connected) when the constructor returns."""

    started: ClassVar[list[Processor]] = []

    def __init__(self, settings: Settings, bootstrap: str, log: Path,
                 crash: tuple[str, str] | None = None, *, once: Path | None = None,
                 record: Path | None = None) -> None:
        Processor.started.append(self)
        self.record = record
        self.ready = settings.data_dir / f".processor-ready-test-{os.getpid()}-{next(_numbers)}"
        self.ready.unlink(missing_ok=True)
        env = {**os.environ, **settings_env(settings), "GOVLEDGER_KAFKA_BOOTSTRAP": bootstrap}
        code = ["-m", "processors"]
        if crash is not None or record is not None:
            code = ["-c", CRASHING_PROCESSOR]
            env |= {"CRASH_SUBJECT": crash[0], "CRASH_POINT": crash[1]} if crash else {}
            env |= {"CRASH_ONCE": str(once)} if once else {}
            env |= {"RECORD": str(record)} if record else {}
        self.log_path = log
        self.log = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, *code, "--ready-file", str(self.ready)],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until("the processor ready", lambda: self.ready.exists() or
                   self.proc.poll() is not None, timeout_s=60)
        assert self.proc.poll() is None, log.read_text()
        self.ready.unlink()

    def decided(self) -> set[str]:
        """The subjects this process decided (RECORD), so far."""
        if self.record is None or not self.record.exists():
            return set()
        return set(self.record.read_text().split())

    def died(self, timeout_s: float = 30) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self.log.close()
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.died()

    def kill(self) -> None:
        """After a failed test: nothing left running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()

    @classmethod
    def kill_all(cls) -> None:
        for child in cls.started:
            child.kill()
        cls.started.clear()
