"""Liveness and metrics of the roles that serve no HTTP API (processor, sequencer): the
heartbeat file `govledger health` checks, and /metrics on GOVLEDGER_METRICS_PORT. On the
real embedded broker; `govledger health` run as the probe runs it (a subprocess)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ledger.config import Settings
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.topics import Topics
from ledger.server.heartbeat import write_beat
from ledger.server.service import Service
from tests.service_support import make_data_dir

pytestmark = pytest.mark.integration

GOVLEDGER = str(Path(sys.executable).parent / "govledger")


def health(heartbeat: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVLEDGER_")}
    return subprocess.run([GOVLEDGER, "health", *args], capture_output=True, text=True,
                          timeout=60, check=False,
                          env={**env, "GOVLEDGER_HEARTBEAT_FILE": str(heartbeat)})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sequencer_role_beats_and_serves_metrics_while_running(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    data = make_data_dir(tmp_path / "data").root
    heartbeat, port = tmp_path / "run" / "heartbeat", free_port()
    heartbeat.parent.mkdir()
    settings = Settings(data_dir=data, kafka_bootstrap=broker.bootstrap,
                        topic_prefix=topics.prefix, partitions=4, kafka_idempotent=False,
                        heartbeat_file=heartbeat, metrics_port=port)

    async def scenario() -> tuple[bool, str]:
        service = Service(settings, components=("sequencer",))
        try:
            await service.start()
            async with httpx.AsyncClient() as http:
                metrics = await http.get(f"http://127.0.0.1:{port}/metrics")
            deadline = time.monotonic() + 30
            while not heartbeat.exists():  # the first beat follows start at once
                assert time.monotonic() < deadline, "no heartbeat"
                await asyncio.sleep(0.05)
            probe = await asyncio.to_thread(health, heartbeat)
            return probe.returncode == 0, metrics.text
        finally:
            await service.stop()

    alive, metrics = asyncio.run(scenario())
    assert alive
    assert "govledger_checkpoint_age_seconds" in metrics
    assert not heartbeat.exists()  # a stopped service leaves no heartbeat behind
    assert health(heartbeat).returncode == 3


def test_health_fails_on_a_stale_heartbeat(tmp_path: Path) -> None:
    heartbeat = tmp_path / "heartbeat"
    write_beat(heartbeat, time.time() - 120)
    result = health(heartbeat, "--max-age", "30")
    assert result.returncode == 3
    assert "old" in result.stderr
    write_beat(heartbeat, time.time())
    assert health(heartbeat, "--max-age", "30").returncode == 0


def test_health_without_a_heartbeat_setting_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVLEDGER_")}
    result = subprocess.run([GOVLEDGER, "health"], capture_output=True, text=True,
                            timeout=60, check=False, env=env)
    assert result.returncode == 2
    assert "GOVLEDGER_HEARTBEAT_FILE" in result.stderr


def test_a_metrics_port_in_use_is_a_configuration_error() -> None:
    from ledger.errors import ConfigError
    from ledger.server.metrics import Metrics, serve_metrics
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="cannot serve metrics"):
            serve_metrics(Metrics(), "127.0.0.1", taken.getsockname()[1])
