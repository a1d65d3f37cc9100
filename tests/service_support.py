"""Shared helpers for integration tests of the running pieces (real broker, real SQLite)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ledger.clock import utc_now
from ledger.config import Settings
from ledger.core.keys import Principal, principal_document
from ledger.datadir import DataDir, init_data_dir
from ledger.server.service import COMPONENTS, Service
from processors.app import build_worker
from processors.genesis import ensure_genesis
from processors.worker import DecisionWorker
from tests.factories import ALICE, T0, seeded_signer

BOB = seeded_signer("bob")
RUNNER = seeded_signer("runner")
REVOKER = seeded_signer("revoker")

AGENTS = [
    Principal("agent:alice", "acme", ALICE.public_key, frozenset({"requester", "reader"})),
    Principal("agent:bob", "acme", BOB.public_key, frozenset({"requester", "reader"})),
    Principal("runner:1", "acme", RUNNER.public_key, frozenset({"executor"})),
    Principal("ops:revoker", "acme", REVOKER.public_key, frozenset({"revoker"})),
]


def make_data_dir(root: Path, principals: Sequence[Principal] = AGENTS, *,
                  genesis: bool = True) -> DataDir:
    """A data directory made by ``govledger init`` plus the test agents in its keyring, and
    the governance genesis of that keyring in its ledger (as the first start writes it)."""
    init_data_dir(root, "govledger.test/log")
    data = DataDir(root)
    doc = json.loads(data.keyring.read_text())
    doc["principals"] += [dict(principal_document(p)) for p in principals]
    data.keyring.write_text(json.dumps(doc, indent=2))
    if genesis:
        ensure_genesis(root, utc_now())  # what the first `govledger up` does
    return data


@asynccontextmanager
async def worker_running(settings: Settings, bootstrap: str) -> AsyncIterator[DecisionWorker]:
    """The data directory's decision worker, started (clock fixed at T0) and consuming until
    the block ends; then stopped and its journal closed."""
    worker = build_worker(settings, bootstrap)
    worker.clock = lambda: T0
    await worker.start()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task
        await worker.stop()
        worker.journal.close()


async def produce(bootstrap: str, topic: str, items: Sequence[tuple[bytes, bytes]], *,
                  max_request_size: int = 1024 * 1024) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                max_request_size=max_request_size)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def collect(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0,
                  ) -> list[bytes]:
    """Read ``topic`` from the beginning until ``count`` values arrived (or time runs out)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            values += [r.value for part in batch.values() for r in part if r.value is not None]
    finally:
        await consumer.stop()
    return values


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


class ServiceProcess:
    """``govledger up`` as a subprocess on free ports; stops it (or kills it) on exit."""

    def __init__(self, data: Path, *args: str, new_session: bool = False) -> None:
        """``new_session``: in a process group of its own, as a terminal runs it (a
        Ctrl-C can then be sent to the group without reaching the tests)."""
        import os
        import subprocess
        import sys
        self.data = data
        self.log_path = data.parent / f"up-{int(time.time() * 1000)}.log"
        env = {**os.environ, "GOVLEDGER_CHECKPOINT_INTERVAL_S": "0.2"}
        env.pop("GOVLEDGER_KAFKA_BOOTSTRAP", None)
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "govledger"), "up", "--data", str(data),
             "--api-port", "0", *args], stdout=self.log, stderr=subprocess.STDOUT, env=env,
            start_new_session=new_session)
        self.api = self._wait_for("api")

    def _wait_for(self, key: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                parts = line.split("govledger: ", 1)
                if len(parts) == 2 and parts[1].startswith(f"{key} "):
                    return parts[1].split()[1]
            if self.proc.poll() is not None:
                raise RuntimeError(f"govledger up exited {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        raise RuntimeError(f"govledger up did not report {key!r}:\n"
                           + self.log_path.read_text(errors="replace"))

    def kill(self) -> None:
        import signal
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def terminate(self) -> int:
        import signal
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.log.close()
        return code

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class Running:
    """A Service on its own thread and loop, so blocking calls can run in the test."""

    def __init__(self, data: Path, before_start: Callable[[], object] | None = None, *,
                 components: Sequence[str] = COMPONENTS, **overrides: object) -> None:
        make_data_dir(data, genesis=False)
        if before_start is not None:  # e.g. add a principal to the keyring the service loads
            before_start()
        ensure_genesis(data, utc_now())  # as the first `govledger up` does, for any roles
        self.settings = Settings(data_dir=data, api_port=0, checkpoint_interval_s=0.1,
                                 **overrides)  # type: ignore[arg-type]
        self.service = Service(self.settings, tuple(components))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.service.start(), 120)

    def call(self, coro, timeout_s: float):  # type: ignore[no-untyped-def]
        """Run ``coro`` on the service's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.call(self.service.stop(), 120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()
