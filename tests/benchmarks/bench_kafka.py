"""Throughput and latency of the Kafka plumbing on the embedded broker (not a pytest file).

    .venv/bin/python tests/benchmarks/bench_kafka.py [--events 20000] [--json]

Measures, on one machine with the embedded Tansu broker:

(a) raw aiokafka: consume (getmany) -> PyNaCl Ed25519 verify -> produce (send, not awaited
    one by one), over a pre-produced backlog;
(b) one faust-streaming worker: agent over raw bytes, ``stream.take(N, within=...)``,
    verify, forward to another topic;
(c) two faust workers (separate processes) in one group splitting 4 partitions;
(d) produce -> consume latency at a fixed 500 msg/s, p50/p99: plain topic, through the raw
    processor, and through the faust agent.

The faust settings used are those DESIGN.md section 9 recommends; ``FAUST_SETTINGS`` below is
the list docs/broker.md reports. Each faust worker runs as ``python bench_kafka.py
faust-worker ...`` with ``-W default`` so every Python warning it emits is captured and
reported (the test suite runs with ``filterwarnings = error``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ledger.config import Settings  # noqa: E402
from ledger.kafka.broker import EmbeddedBroker  # noqa: E402
from ledger.kafka.clients import make_consumer, make_producer  # noqa: E402
from ledger.kafka.offsets import read_highwaters  # noqa: E402
from ledger.kafka.topics import ensure_topics  # noqa: E402

PARTITIONS = 4
SEED = hashlib.sha256(b"govledger bench key").digest()
SIGNER = SigningKey(SEED)
VERIFIER: VerifyKey = SIGNER.verify_key
WORKER_GROUP_WAIT_S = 60.0

# Everything the faust app needs on the embedded broker (see docs/broker.md).
FAUST_SETTINGS: dict[str, Any] = {
    "value_serializer": "raw",          # bytes in, bytes out: never faust.Record
    "key_serializer": "raw",
    "store": "memory://",               # no RocksDB changelog state (DESIGN.md 6)
    "web_enabled": False,               # plus --without-web on the command line
    "broker_session_timeout": 10,       # default 60 -> every join waits 30 s
    "broker_heartbeat_interval": 3,
    "broker_request_timeout": 30,       # must stay above the session timeout
    "broker_rebalance_timeout": 30,
    "consumer_auto_offset_reset": "earliest",
    "topic_allow_declare": False,       # topics are created by ledger.kafka.topics
    "topic_disable_leader": True,       # no <app>-__assignor-__leader topic
    "producer_acks": -1,                # acks=all
    "producer_linger_ms": 2,
    "broker_commit_every": 1000,
    "broker_commit_interval": 1.0,
}


def signed_message(i: int) -> bytes:
    """64-byte Ed25519 signature || ~250-byte JSON payload (the shape of a small event)."""
    payload = json.dumps({"kind": "AuthorizationRequested", "n": i, "nonce": f"{i:032x}",
                          "scope": {"actions": ["read"], "resource": "db/orders/*"},
                          "signer": "agent:bench", "tenant": "acme"},
                         separators=(",", ":"), sort_keys=True).encode()
    return SIGNER.sign(payload).signature + payload


def verify(value: bytes) -> bool:
    try:
        VERIFIER.verify(value[64:], value[:64])
    except BadSignatureError:
        return False
    return True


def timestamped(i: int) -> bytes:
    """A signed message whose first 8 bytes after the signature hold the send time."""
    payload = time.monotonic_ns().to_bytes(8, "big") + b"x" * 200 + i.to_bytes(4, "big")
    return SIGNER.sign(payload).signature + payload


def sent_ns(value: bytes) -> int:
    return int.from_bytes(value[64:72], "big")


# -- helpers ---------------------------------------------------------------------------
async def fill(settings: Settings, bootstrap: str, topic: str, count: int) -> None:
    producer = make_producer(settings, bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for i in range(count):
            await producer.send(topic, signed_message(i), key=b"root-%d" % (i % 64))
        await producer.flush()
    finally:
        await producer.stop()


async def highwater_total(settings: Settings, bootstrap: str, topic: str) -> int:
    probe = make_consumer(settings, bootstrap, group_id=None)
    await probe.start()
    try:
        marks = await read_highwaters(probe, [TopicPartition(topic, p)
                                              for p in range(PARTITIONS)])
    finally:
        await probe.stop()
    return sum(marks.values())


async def wait_for_total(settings: Settings, bootstrap: str, topic: str, count: int,
                         timeout_s: float) -> None:
    """Poll the high-water marks (cheap) until ``count`` records are on ``topic``."""
    deadline = time.monotonic() + timeout_s
    while await highwater_total(settings, bootstrap, topic) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{topic} did not reach {count} records in {timeout_s}s")
        await asyncio.sleep(0.5)


async def read_all(settings: Settings, bootstrap: str, topic: str, count: int,
                   timeout_s: float) -> list[Any]:
    consumer = make_consumer(settings, bootstrap, group_id=None)
    await consumer.start()
    records: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += batch
    finally:
        await consumer.stop()
    return records


def rate_from_timestamps(records: list[Any]) -> float:
    """Events/s between the first and last output record (producer CreateTime, ms)."""
    stamps = sorted(r.timestamp for r in records)
    span_s = (stamps[-1] - stamps[0]) / 1000.0
    return (len(stamps) - 1) / span_s if span_s > 0 else float("inf")


# -- (a) raw aiokafka processor ----------------------------------------------------------
async def raw_processor(settings: Settings, bootstrap: str, src: str, dst: str,
                        count: int | None, stop: asyncio.Event | None = None) -> float:
    """Consume src, verify, forward to dst; return events/s over ``count`` events."""
    consumer = make_consumer(settings, bootstrap, group_id=None,
                             max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = make_producer(settings, bootstrap, max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    done, bad, started = 0, 0, 0.0
    try:
        consumer.assign([TopicPartition(src, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        print("READY", flush=True)
        while (count is None or done < count) and not (stop and stop.is_set()):
            batches = await consumer.getmany(timeout_ms=20, max_records=2000)
            if batches and not started:
                started = time.perf_counter()
            for records in batches.values():
                for record in records:
                    if verify(record.value):
                        await producer.send(dst, record.value, key=record.key)
                    else:
                        bad += 1
                    done += 1
        await producer.flush()
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
        await consumer.stop()
    if bad:
        raise RuntimeError(f"{bad} signatures failed to verify")
    return done / elapsed if elapsed > 0 else 0.0


def raw_worker(argv: list[str]) -> None:
    """Entry point of the raw processor as its own process, until SIGTERM."""
    parser = argparse.ArgumentParser()
    for flag in ("--bootstrap", "--src", "--dst"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args(argv)
    settings = Settings(kafka_bootstrap=None, partitions=PARTITIONS)

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await raw_processor(settings, args.bootstrap, args.src, args.dst, None, stop)

    asyncio.run(run())


# -- (b)/(c) faust worker (subprocess) -------------------------------------------------------
def faust_worker(argv: list[str]) -> None:
    """Entry point of one faust worker process (``bench_kafka.py faust-worker ...``)."""
    parser = argparse.ArgumentParser()
    for flag in ("--bootstrap", "--app-id", "--src", "--dst", "--tag", "--datadir"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--take", type=int, default=500)
    parser.add_argument("--within", type=float, default=0.005)
    parser.add_argument("--fetch-wait-ms", type=int, default=10)
    args = parser.parse_args(argv)

    import faust
    from faust.transport.drivers import aiokafka as faust_aiokafka

    # faust hard-codes fetch_max_wait_ms=1500 for its worker consumer; the embedded broker
    # holds each fetch that long, so latency is ~1 s unless this is lowered (docs/broker.md).
    create = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer

    def create_fast(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = args.fetch_wait_ms
        return consumer

    if args.fetch_wait_ms:
        setattr(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer", create_fast)  # noqa: B010

    app = faust.App(args.app_id, broker=f"kafka://{args.bootstrap}", datadir=args.datadir,
                    **FAUST_SETTINGS)
    src = app.topic(args.src, value_type=bytes, key_type=bytes, partitions=PARTITIONS)
    dst = app.topic(args.dst, value_type=bytes, key_type=bytes, partitions=PARTITIONS)
    tag = args.tag.encode()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app: Any, assigned: Any, **_: Any) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == args.src)
        print(f"ASSIGNED {args.tag} {json.dumps(mine)}", flush=True)

    @app.agent(src, name=f"{args.app_id}-forward")  # unique agent/repartition name
    async def forward(stream: Any) -> None:
        async for batch in stream.take(args.take, within=args.within):
            for event in batch:
                if not verify(event):
                    print("BADSIG", flush=True)
                    continue
                # send() without awaiting each delivery; faust flushes in the background
                await dst.send(value=event, headers=[("w", tag)])

    sys.argv = [sys.argv[0], "worker", "--without-web", "--loglevel", "warn"]
    app.main()


class FaustWorkers:
    """Start N faust workers as subprocesses; stop them (SIGTERM, then SIGKILL)."""

    def __init__(self, bootstrap: str, src: str, dst: str, count: int, take: int,
                 within: float, workdir: Path, fetch_wait_ms: int) -> None:
        self.app_id = f"bench-{uuid.uuid4().hex[:8]}"
        self.logs = [workdir / f"{self.app_id}-w{i}.log" for i in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.args = (bootstrap, src, dst, take, within, workdir, fetch_wait_ms)

    def start(self) -> None:
        bootstrap, src, dst, take, within, workdir, fetch_wait_ms = self.args
        for i, log in enumerate(self.logs):
            with open(log, "wb") as out:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-W", "default", __file__, "faust-worker",
                     "--bootstrap", bootstrap, "--app-id", self.app_id, "--src", src,
                     "--dst", dst, "--tag", f"w{i}", "--take", str(take),
                     "--within", str(within), "--fetch-wait-ms", str(fetch_wait_ms),
                     "--datadir", str(workdir / f"w{i}")],
                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT))

    def assignments(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for log in self.logs:
            # faust routes print() through logging: "[...] [WARNING] ASSIGNED w0 [0, 1]"
            for match in re.finditer(r"ASSIGNED (w\d+) (\[[0-9, ]*\])",
                                     log.read_text(errors="replace")):
                found[match.group(1)] = json.loads(match.group(2))  # the latest one wins
        return found

    def wait_assigned(self, timeout_s: float) -> dict[str, list[int]]:
        """Wait until the workers together own every partition, each exactly once."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.assignments()
            owned = sorted(p for parts in found.values() for p in parts)
            if (len(found) == len(self.logs) and owned == list(range(PARTITIONS))
                    and all(found.values())):
                return found
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"faust worker exited: {self.tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"faust workers not assigned in {timeout_s}s: {self.tail()}")

    def tail(self) -> str:
        return "\n".join(log.read_text(errors="replace")[-1500:] for log in self.logs)

    def warnings(self) -> list[str]:
        pattern = re.compile(r"\b(\w+Warning): (.+)$")
        found: set[str] = set()
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                if match := pattern.search(line.strip()):
                    found.add(f"{match.group(1)}: {match.group(2)}")
        return sorted(found)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- (d) latency at a fixed rate -------------------------------------------------------------
async def paced_latency(settings: Settings, bootstrap: str, src: str, observe: str,
                        rate: int, seconds: float) -> dict[str, float]:
    """Send ``rate`` msg/s to src for ``seconds``; measure send -> arrival on ``observe``."""
    total = int(rate * seconds)
    consumer = make_consumer(settings, bootstrap, group_id=None)
    producer = make_producer(settings, bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    latencies: list[float] = []

    async def receive() -> None:
        while len(latencies) < total:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                now = time.monotonic_ns()
                latencies.extend((now - sent_ns(r.value)) / 1e6 for r in records)

    try:
        tps = [TopicPartition(observe, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_end()
        receiver = asyncio.create_task(receive())
        start = time.monotonic()
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(src, timestamped(i), key=b"root-%d" % (i % 64))
        await asyncio.wait_for(receiver, timeout=30)
    finally:
        await producer.stop()
        await consumer.stop()
    ordered = sorted(latencies[: total])
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
            "max_ms": round(ordered[-1], 2), "count": len(ordered)}


# -- driver ------------------------------------------------------------------------------------
async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(kafka_bootstrap=None, partitions=PARTITIONS)
    results: dict[str, Any] = {"events": args.events, "partitions": PARTITIONS,
                               "cores": os.cpu_count()}
    workdir = Path(tempfile.mkdtemp(prefix="govledger-bench-"))
    async with EmbeddedBroker() as broker:
        boot = broker.bootstrap

        async def fresh(name: str) -> tuple[str, str]:
            src, dst = f"bench.{name}.in", f"bench.{name}.out"
            await ensure_topics(boot, [src, dst], PARTITIONS, 1)
            return src, dst

        # Baseline: raw Ed25519 verify cost alone.
        sample = [signed_message(i) for i in range(5000)]
        t0 = time.perf_counter()
        assert all(verify(v) for v in sample)
        results["verify_only_per_s"] = round(len(sample) / (time.perf_counter() - t0))

        src, dst = await fresh("raw")
        await fill(settings, boot, src, args.events)
        rate = await raw_processor(settings, boot, src, dst, args.events)
        assert await highwater_total(settings, boot, dst) == args.events
        results["a_raw_aiokafka_verify_forward_per_s"] = round(rate)

        src, dst = await fresh("lat")
        results["d_latency_plain_produce_consume_500"] = await paced_latency(
            settings, boot, src, src, 500, args.latency_s)

        src, dst = await fresh("rawlat")
        log = workdir / "raw-worker.log"
        with open(log, "wb") as out, subprocess.Popen(
                [sys.executable, "-W", "error", __file__, "raw-worker", "--bootstrap", boot,
                 "--src", src, "--dst", dst], stdout=out, stderr=subprocess.STDOUT) as worker:
            try:
                deadline = time.monotonic() + 30
                while b"READY" not in log.read_bytes():
                    if worker.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"raw worker failed: {log.read_text()}")
                    await asyncio.sleep(0.05)
                results["d_latency_raw_processor_500"] = await paced_latency(
                    settings, boot, src, dst, 500, args.latency_s)
            finally:
                worker.terminate()
                worker.wait(timeout=15)

        if not args.skip_faust:
            for workers in (1, 2):
                src, dst = await fresh(f"faust{workers}")
                await fill(settings, boot, src, args.events)
                pool = FaustWorkers(boot, src, dst, workers, args.take, args.within, workdir,
                                    args.faust_fetch_wait_ms)
                started = time.monotonic()
                pool.start()
                try:
                    assigned = await asyncio.to_thread(pool.wait_assigned, WORKER_GROUP_WAIT_S)
                    join_s = time.monotonic() - started
                    await wait_for_total(settings, boot, dst, args.events, timeout_s=180)
                    records = await read_all(settings, boot, dst, args.events, timeout_s=60)
                    if len(records) != args.events:
                        raise RuntimeError(f"faust forwarded {len(records)}/{args.events}")
                    per_worker = Counter(dict(r.headers).get("w", b"?").decode()
                                         for r in records)
                    key = "b_faust_1_worker" if workers == 1 else "c_faust_2_workers"
                    results[key] = {"per_s": round(rate_from_timestamps(records)),
                                    "join_s": round(join_s, 1), "assigned": assigned,
                                    "events_per_worker": dict(per_worker)}
                    if workers == 1:
                        lsrc, ldst = await fresh("faustlat")
                        pool.stop()
                        pool = FaustWorkers(boot, lsrc, ldst, 1, args.take, args.within,
                                            workdir, args.faust_fetch_wait_ms)
                        pool.start()
                        await asyncio.to_thread(pool.wait_assigned, WORKER_GROUP_WAIT_S)
                        results["d_latency_faust_agent_500"] = await paced_latency(
                            settings, boot, lsrc, ldst, 500, args.latency_s)
                    results.setdefault("faust_warnings", [])
                    results["faust_warnings"] = sorted(
                        set(results["faust_warnings"]) | set(pool.warnings()))
                finally:
                    pool.stop()
    return results


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "faust-worker":
        faust_worker(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "raw-worker":
        raw_worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-s", type=float, default=10.0)
    parser.add_argument("--take", type=int, default=500)
    parser.add_argument("--within", type=float, default=0.005)
    parser.add_argument("--faust-fetch-wait-ms", type=int, default=10,
                        help="0 = faust's own 1500 ms")
    parser.add_argument("--skip-faust", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        results = asyncio.run(main(args))
    finally:
        for leftover in Path(tempfile.gettempdir()).glob("govledger-bench-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return
    for key, value in results.items():
        print(f"{key:45} {value}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        cli()
