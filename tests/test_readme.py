"""Every code block in README.md runs here. A README that lies is worse than none.

The tour's blocks run in order in ONE bash session (as a reader pasting them into a shell
would), in a fresh directory, with the venv's ``bin`` first on PATH.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)
BASH = [body for lang, body in BLOCKS if lang == "bash"]
INSTALL_RUN = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/"
TEST_COMMAND = BASH[1].strip()
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e


def test_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    assert BASH[0].startswith(INSTALL_RUN)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in ci.splitlines(), ".ci/run must run exactly the README test command"


def test_quick_start_run_command_works(tmp_path: Path) -> None:
    # The install step is what CI just did; run what follows it with this interpreter's venv.
    command = BASH[0].strip()[len(INSTALL_RUN):]
    result = subprocess.run(f"{BIN}/{command}", shell=True, cwd=tmp_path, text=True,
                            capture_output=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tour_runs_in_order_in_one_shell(tmp_path: Path) -> None:
    script = ["set -euo pipefail"]
    for n, body in enumerate(BASH[2:], start=3):
        script += [f"echo '### README bash block {n}' >&2", body]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if not k.startswith("GOVLEDGER_")}
    try:
        result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env,
                                text=True, capture_output=True, timeout=300, check=False)
    finally:
        pid_file = tmp_path / "up.pid"
        if pid_file.exists():  # never leave the tour's service running
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    blocks = re.findall(r"### README bash block (\d+)", result.stderr)
    assert result.returncode == 0, (
        f"README bash block {blocks[-1] if blocks else '?'} failed:\n{result.stdout}\n"
        f"{result.stderr[-4000:]}\n--- up.log ---\n"
        + ((tmp_path / "up.log").read_text()[-3000:] if (tmp_path / "up.log").exists() else ""))


def test_every_code_block_is_covered() -> None:
    langs = {lang for lang, _ in BLOCKS}
    assert langs <= {"bash", ""}, f"add a runner for {langs - {'bash', ''}} blocks"
    assert len(BASH) >= 10
