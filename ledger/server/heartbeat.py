"""Liveness of the roles that serve no HTTP (processor, sequencer): a heartbeat file.

With ``GOVLEDGER_HEARTBEAT_FILE`` set, a running service rewrites that file every
:data:`HEARTBEAT_INTERVAL_S` while every component it runs is alive and it is not stopping,
and removes it when it stops. ``govledger health`` (the compose healthcheck, the Kubernetes
exec probe) passes only while the file is younger than ``--max-age``. A hung event loop, a
component that ended, or a service on its way out all stop the beat, so the probe fails and
the orchestrator restarts the container; the journal and the ledger make that lossless.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from ledger.errors import Unavailable

HEARTBEAT_INTERVAL_S = 5.0


def write_beat(path: Path, now: float) -> None:
    """Write ``now`` (seconds since the epoch) to ``path`` atomically. Raises Unavailable."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        temp.write_text(f"{now:.3f}\n")
        os.replace(temp, path)
    except OSError as exc:
        raise Unavailable(f"cannot write the heartbeat {path}: {exc.strerror}") from exc


async def beat(path: Path, alive: Callable[[], bool], stop: asyncio.Event,
               clock: Callable[[], float], interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
    """Beat while ``alive()`` until ``stop`` is set, then remove the file. Raises Unavailable
    if the file cannot be written (the service then stops: fail fast)."""
    try:
        while not stop.is_set():
            if alive():
                write_beat(path, clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        path.unlink(missing_ok=True)


def heartbeat_age(path: Path, now: float) -> float:
    """Seconds since the last beat in ``path``. Raises Unavailable if there is none (the
    service is not running, or stopped beating and removed it) or it does not parse."""
    try:
        written = float(path.read_text().strip())
    except FileNotFoundError as exc:
        raise Unavailable(f"no heartbeat at {path}: the service is not running") from exc
    except (OSError, ValueError) as exc:
        raise Unavailable(f"unreadable heartbeat {path}: {exc}") from exc
    return now - written
