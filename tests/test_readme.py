"""Every code block in README.md runs here. A README that lies is worse than none."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)
BASH = [body for lang, body in BLOCKS if lang == "bash"]
INSTALL_RUN = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/"
TEST_COMMAND = BASH[1].strip()


def test_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    assert BASH[0].startswith(INSTALL_RUN)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in ci.splitlines(), ".ci/run must run exactly the README test command"


def test_quick_start_run_command_works(tmp_path: Path) -> None:
    # The install step is what CI just did; run what follows it with this interpreter's venv.
    command = BASH[0].strip()[len(INSTALL_RUN):]
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(f"{bin_dir}/{command}", shell=True, cwd=tmp_path, text=True,
                            capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tour_blocks_run_in_order(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for n, body in enumerate(BASH[2:], start=3):
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path,
                                env=env, text=True, capture_output=True, timeout=300,
                                check=False)
        assert result.returncode == 0, f"README bash block {n} failed:\n{body}\n" + (
            result.stdout + result.stderr)


def test_every_code_block_is_covered() -> None:
    langs = {lang for lang, _ in BLOCKS}
    assert langs <= {"bash", ""}, f"add a runner for {langs - {'bash', ''}} blocks"
    assert len(BASH) >= 3
