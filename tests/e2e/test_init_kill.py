"""``govledger init`` killed with SIGKILL at varied points of the first-time setup, then run
again: the data directory must then work (keys load, the keyring names the authority, the
ledger verifies and opens for writing, the processor's engine builds), and in one trial
``govledger up`` starts on it.

Kill points are chosen by watching the directory (the first temporary file, each file of
the setup appearing) plus a delay that grows over the trials; whatever point the kill
lands on, the assertions are the same, so no timing can make them pass by luck.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.config import load_settings
from ledger.keyfiles import is_temp_name, load_keyring, load_signer
from ledger.log.ledger_dir import ledger_info, open_ledger
from ledger.log.sequencer import keyring_verifier
from processors.app import build_engine
from tests.service_support import ServiceProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
GOVLEDGER = str(Path(sys.executable).parent / "govledger")


def any_temporary(root: Path) -> bool:
    return any(is_temp_name(p.name) for d in (root, root / "keys") if d.is_dir()
               for p in d.iterdir())


def appears(name: str) -> Callable[[Path], bool]:
    return lambda root: (root / name).exists()


def temporary(name: str) -> Callable[[Path], bool]:
    return lambda root: root.is_dir() and any(
        p.name.startswith(f".{name}.tmp-") for p in root.iterdir())


# Kill points, in the order init reaches them.
WHEN: list[tuple[str, Callable[[Path], bool]]] = [
    ("keys/ appears", appears("keys")),
    ("first temporary file", any_temporary),
    ("authority.key appears", appears("keys/authority.key")),
    ("ledger.key appears", appears("keys/ledger.key")),
    ("ledger.vkey appears", appears("ledger.vkey")),
    ("temporary ledger.db appears", temporary("ledger.db")),
    ("ledger.db appears", appears("ledger.db")),
    ("keyring.json appears", appears("keyring.json")),
    ("temporary policies/ appears", temporary("policies")),
    ("policies/ appears", appears("policies")),
]


def kill_init(root: Path, trial: int) -> str:
    """Run ``govledger init`` and SIGKILL it once the trial's condition holds plus a delay
    of 0-4 ms that grows every round of conditions. Returns where it was killed."""
    label, condition = WHEN[trial % len(WHEN)]
    delay = (trial // len(WHEN)) % 5 / 1000
    proc = subprocess.Popen([GOVLEDGER, "init", "--data", str(root)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and not condition(root):
            time.sleep(0.0002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    return f"{label} + {delay * 1000:.0f} ms (exit {proc.returncode})"


def assert_init_finishes(root: Path, where: str) -> None:
    result = subprocess.run([GOVLEDGER, "init", "--data", str(root), "--json"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"killed at {where}: {result.stderr}"
    report = json.loads(result.stdout)
    authority = load_signer(root / "keys/authority.key")
    load_signer(root / "keys/ledger.key")
    ring = load_keyring(root / "keyring.json")
    assert authority.key_id in ring
    assert ledger_info(root).tree_size == 0
    open_ledger(root, keyring_verifier(ring)).close()
    build_engine(load_settings(data_dir=root))
    assert not any_temporary(root), f"killed at {where}: {sorted(os.listdir(root))}"
    assert len(report["kept"]) + len(report["created"]) + len(report["repaired"]) >= 6


def run_trials(tmp_path: Path, trials: int) -> None:
    for trial in range(trials):
        root = tmp_path / f"data-{trial}"
        where = kill_init(root, trial)
        assert_init_finishes(root, where)


def test_init_killed_anywhere_then_run_again_leaves_a_working_data_dir(tmp_path: Path) -> None:
    run_trials(tmp_path, len(WHEN))


def test_up_starts_on_a_data_dir_whose_init_was_killed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    kill_init(root, 6)  # at ledger.db: up must finish keyring.json and policies/ itself
    service = ServiceProcess(root)  # up runs the same setup before it starts
    try:
        assert service.api.startswith("http://")
    finally:
        assert service.terminate() == 0, service.output()


@pytest.mark.slow
def test_init_killed_at_many_points_always_finishes(tmp_path: Path) -> None:
    run_trials(tmp_path, 5 * len(WHEN))
