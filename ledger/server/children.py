"""Child processes of ``govledger up`` (processor, sequencer, monitor): how each is started,
told its settings, awaited and stopped; the service (ledger/server/service.py) watches them.

A child is ``python -m MODULE --ready-file FILE`` with the service's settings in its
environment (:func:`settings_env`, plus what only the parent can resolve: the broker it
started, the embedded-or-not defaults). It runs in a session of its own (a terminal's
Ctrl-C reaches only the service, which stops its children in order), dies with its parent
(PR_SET_PDEATHSIG) and writes FILE once it is ready. A child that exits first fails the
start as its exit status says (ledger.entrypoint.child_main sets it,
ledger.errors.error_for_exit reads it); one not ready in time is Unavailable. Stopping
sends SIGTERM and kills it after a grace.
:func:`check_decision_side` checks, for ``govledger init``, what the processor child will
load at its start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from ledger.config import Settings
from ledger.errors import ConfigError, Unavailable, error_for_exit
from ledger.kafka.broker import die_with_parent


def settings_env(settings: Settings) -> dict[str, str]:
    """``GOVLEDGER_*`` variables that reproduce ``settings`` in a child process."""
    env = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, tuple):  # a list setting (witnesses): JSON, as pydantic reads it
            value = json.dumps(list(value))
        env[f"GOVLEDGER_{name.upper()}"] = str(value)
    return env


def child_env(settings: Settings, bootstrap: str,
              extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: this one, the settings, and what the child cannot
    resolve itself (the broker this process started; "auto" settings that depend on
    whether the broker is embedded; the log level ``govledger --log-level`` applied here)."""
    return {**os.environ, **settings_env(settings),
            "GOVLEDGER_LOG_LEVEL": logging.getLevelName(
                logging.getLogger().getEffectiveLevel()).lower(),
            "GOVLEDGER_KAFKA_BOOTSTRAP": bootstrap,
            "GOVLEDGER_KAFKA_IDEMPOTENT": str(settings.idempotent_producer).lower(),
            "GOVLEDGER_KAFKA_FETCH_MAX_WAIT_MS": str(settings.fetch_max_wait_ms),
            **(extra or {})}


class Child:
    """One child process: ``python -m module --ready-file <data>/.<name>-ready-<our pid>``."""

    def __init__(self, name: str, module: str, data_dir: Path) -> None:
        self.name, self.module = name, module
        self.ready_file = data_dir / f".{name}-ready-{os.getpid()}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, env: Mapping[str, str], *, stdout: int | None = None) -> int:
        """Start it (``stdout=asyncio.subprocess.PIPE`` to read what it writes there, else
        it inherits ours); returns its pid."""
        self.ready_file.unlink(missing_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.module, "--ready-file", str(self.ready_file),
            env=dict(env), stdout=stdout, start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()))
        return self.proc.pid

    @property
    def stdout(self) -> asyncio.StreamReader:
        """What the child writes to stdout (started with ``stdout=PIPE``)."""
        stream = self._proc().stdout
        if stream is None:
            raise Unavailable(f"the {self.name} process's stdout is not piped")
        return stream

    async def wait_ready(self, timeout_s: float) -> None:
        """Until the child wrote its ready file. Raises Unavailable if it exits first or
        is not ready within ``timeout_s``."""
        proc = self._proc()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.ready_file.exists():
            if proc.returncode is not None:
                raise error_for_exit(proc.returncode, f"the {self.name} process exited with "
                                     f"status {proc.returncode} (its log says why)")
            if loop.time() > deadline:
                raise Unavailable(f"the {self.name} process did not become ready in "
                                  f"{timeout_s:.0f} s")
            await asyncio.sleep(0.05)
        self.ready_file.unlink(missing_ok=True)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after ``grace_s`` (or at once if this wait is cancelled)."""
        self.ready_file.unlink(missing_ok=True)
        proc = self._proc()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            except asyncio.CancelledError:  # the caller's own bound ran out: never leave it
                proc.kill()
                await proc.wait()  # at once after SIGKILL; the bound's wait_for awaits this
                raise

    async def exited(self) -> str:
        """Waits for the child to end; says how (the service's watch reports it)."""
        proc = self._proc()
        return f"the {self.name} process (pid {proc.pid}) exited with status {await proc.wait()}"

    def _proc(self) -> asyncio.subprocess.Process:
        if self.proc is None:
            raise Unavailable(f"the {self.name} process was never started")
        return self.proc


def check_decision_side(settings: Settings) -> None:
    """Load what the processor loads at start (its key, keyring, policies and limits), so
    that ``govledger init`` says now what ``govledger up`` would refuse later. Raises
    ConfigError naming the data directory."""
    from processors.app import check_files  # the decision side is optional per process
    try:
        check_files(settings)
    except ConfigError as exc:
        raise ConfigError(f"{settings.data_dir} is not ready for the processor: {exc}") from exc
