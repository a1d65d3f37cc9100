"""``govledger up`` on a ledger tampered at rest: it stops with exit 1 (ProofError) naming
the divergent leaf, before its HTTP API listens (nothing is served)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.keyfiles import load_keyring
from ledger.log.ledger_dir import DB_NAME, open_ledger
from ledger.log.sequencer import keyring_verifier
from tests.ledger_support import envelopes
from tests.service_support import make_data_dir

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
GOVLEDGER = str(Path(sys.executable).parent / "govledger")


def test_up_refuses_a_ledger_whose_event_id_column_was_edited(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data", genesis=False)  # `up` writes it after the check
    seq = open_ledger(data.root, keyring_verifier(load_keyring(data.keyring)))
    assert seq.submit(envelopes(5)).tree_size == 5
    seq.close()
    conn = sqlite3.connect(data.root / DB_NAME)
    conn.execute("DROP TRIGGER leaves_append_only_update")
    conn.execute("UPDATE leaves SET event_id = zeroblob(32) WHERE idx = 3")
    conn.commit()
    conn.close()
    done = subprocess.run([GOVLEDGER, "up", "--data", str(data.root), "--api-port", "0"],
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "at leaf 3:" in done.stderr
    assert "govledger: api " not in done.stdout + done.stderr  # the API never listened
