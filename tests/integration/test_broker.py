"""The embedded broker process: start, readiness, port races, clean stop, no orphans."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ledger.kafka.broker as broker_module
from ledger.errors import Unavailable
from ledger.kafka.broker import EmbeddedBroker, probe_metadata

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def process_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_until(condition: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return bool(callable(condition) and condition())


def test_broker_answers_metadata_as_itself_and_leaves_no_process() -> None:
    broker = EmbeddedBroker().start()
    try:
        host, port = broker.bootstrap.rsplit(":", 1)
        assert host == "127.0.0.1"
        assert [(h, p) for _, h, p in probe_metadata(host, int(port))] == [(host, int(port))]
        pid = broker.pid
        assert pid is not None
        assert broker.running
    finally:
        broker.stop()
    assert not broker.running
    with pytest.raises(ProcessLookupError):  # reaped: not even a zombie is left
        os.kill(pid, 0)
    with pytest.raises(Unavailable):
        _ = broker.bootstrap
    broker.stop()  # idempotent


def test_context_manager_stops_broker_when_the_body_raises() -> None:
    seen: list[int | None] = []

    def use_and_fail() -> None:
        with EmbeddedBroker() as broker:
            seen.append(broker.pid)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        use_and_fail()
    pid = seen[0]
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_async_context_manager_starts_and_stops() -> None:
    async def run() -> tuple[int | None, bool]:
        async with EmbeddedBroker() as broker:
            host, port = broker.bootstrap.rsplit(":", 1)
            _reader, writer = await asyncio.open_connection(host, int(port))
            writer.close()
            await writer.wait_closed()
            return broker.pid, broker.running

    pid, was_running = asyncio.run(run())
    assert was_running
    assert pid is not None
    assert process_gone(pid)


def test_pinned_busy_port_fails_with_the_broker_log(broker: EmbeddedBroker) -> None:
    busy = int(broker.bootstrap.rsplit(":", 1)[1])
    loser = EmbeddedBroker(port=busy, start_timeout_s=10)
    with pytest.raises(Unavailable, match="AddrInUse"):
        loser.start()
    assert not loser.running
    # the winner is untouched
    assert [p for _, _, p in probe_metadata("127.0.0.1", busy)] == [busy]


def test_lost_free_port_race_retries_on_another_port(
        broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    busy = int(broker.bootstrap.rsplit(":", 1)[1])
    real_free_port = broker_module.free_port
    offered: list[int] = []

    def racy_free_port(host: str = "127.0.0.1") -> int:
        # The first "free" port is taken by someone else by the time the broker binds.
        offered.append(busy if not offered else real_free_port(host))
        return offered[-1]

    monkeypatch.setattr(broker_module, "free_port", racy_free_port)
    with EmbeddedBroker() as second:
        port = int(second.bootstrap.rsplit(":", 1)[1])
        assert offered[0] == busy
        assert port == offered[-1] != busy
        assert [p for _, _, p in probe_metadata("127.0.0.1", port)] == [port]


def test_broken_binary_is_unavailable_with_exit_status(tmp_path: Path) -> None:
    fake = tmp_path / "fake-broker"
    fake.write_text("#!/bin/sh\necho 'cannot start: no storage' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(Unavailable, match=r"exited with 3.*no storage"):
        EmbeddedBroker(binary=str(fake), start_timeout_s=5).start()


def test_silent_binary_times_out_and_is_killed(tmp_path: Path) -> None:
    fake = tmp_path / "mute-broker"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    broker = EmbeddedBroker(binary=str(fake), start_timeout_s=0.5, port_attempts=1)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="not ready"):
        broker.start()
    assert time.monotonic() - started < 10
    assert not broker.running


def test_broker_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"  # the killed parent cannot delete a temp log
    script = ("import sys\nfrom pathlib import Path\n"
              "from ledger.kafka.broker import EmbeddedBroker\n"
              f"b = EmbeddedBroker(log_path=Path({str(log)!r})).start()\n"
              "print(b.pid, flush=True)\nsys.stdin.read()\n")
    broker_pid = None
    with subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            broker_pid = int(parent.stdout.readline())
            assert not process_gone(broker_pid)
            parent.send_signal(signal.SIGKILL)
            parent.wait(timeout=10)
            assert wait_until(lambda: process_gone(broker_pid), timeout_s=10)
        finally:
            if parent.poll() is None:
                parent.kill()
            if broker_pid is not None and not process_gone(broker_pid):
                os.kill(broker_pid, signal.SIGKILL)


def test_stop_with_a_connected_client_ends_the_broker_within_a_second() -> None:
    """On SIGTERM Tansu waits for open connections to close; a memory-only broker has
    nothing to flush, so the stop does not wait for them (it took 5 s with a client open)."""
    from aiokafka import AIOKafkaProducer

    async def run() -> float:
        broker = await EmbeddedBroker().astart()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("connected", b"x")
            started = time.monotonic()
            await broker.astop()
            return time.monotonic() - started
        finally:
            await producer.stop()

    assert asyncio.run(run()) < 1.5


def test_wait_exit_returns_the_status_of_a_killed_broker() -> None:
    async def run() -> tuple[int | None, str]:
        async with EmbeddedBroker() as broker:
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGKILL)
            code = await asyncio.wait_for(broker.wait_exit(), 10)
            return code, broker.log_tail()

    code, tail = asyncio.run(run())
    assert code == -signal.SIGKILL
    assert "ready in" in tail  # what the caller logs about the dead broker


def test_wait_exit_returns_none_after_a_requested_stop() -> None:
    async def run() -> int | None:
        broker = await EmbeddedBroker().astart()
        waiting = asyncio.ensure_future(broker.wait_exit())
        await broker.astop()
        return await asyncio.wait_for(waiting, 10)

    assert asyncio.run(run()) is None
