"""SIGKILL a process appending batches: the ledger holds a prefix, passes audit, and
re-sending everything stores nothing twice."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.log.audit import audit_ledger
from ledger.log.ledger_dir import append_jsonl, ledger_info
from ledger.log.store import LedgerStore
from tests.ledger_support import envelopes, make_ledger, write_keyring

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

APPENDER = """
import sys
from pathlib import Path
from ledger.log.ledger_dir import append_jsonl
def progress(done):
    print(done, flush=True)
append_jsonl(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), batch_size=50,
             progress=progress)
print("finished", flush=True)
"""


def test_sigkill_mid_append_leaves_an_auditable_prefix(tmp_path: Path) -> None:
    data_dir = make_ledger(tmp_path)
    keyring = write_keyring(tmp_path / "keyring.json")
    lines = envelopes(1500)
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b"\n".join(lines) + b"\n")
    proc = subprocess.Popen([sys.executable, "-c", APPENDER, str(data_dir), str(jsonl),
                             str(keyring)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until some batches are committed, then kill
        if line.strip() == "finished" or int(line) >= 200:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()

    report = audit_ledger(data_dir, keyring)
    assert report.ok, report.problems
    with LedgerStore(data_dir / "ledger.db") as store:
        stored = [leaf.leaf for leaf in store.iter_leaves()]
    assert 200 <= len(stored) <= len(lines)
    assert stored == lines[: len(stored)]

    again = append_jsonl(data_dir, jsonl, keyring, batch_size=200)
    assert (again.appended, again.duplicates) == (len(lines) - len(stored), len(stored))
    assert ledger_info(data_dir).tree_size == len(lines)
    assert audit_ledger(data_dir, keyring).ok
