"""Whole-service benchmarks: ``govledger up`` as a subprocess (not a pytest file).

    .venv/bin/python tests/benchmarks/bench_service.py [--requests 1000] [--concurrency 32]
        [--sdk-requests 2000] [--integration-rate 100] [--integration-s 10]
        [--checkpoint-interval S] [--json]

Starts ``govledger up --data DIR --api-port 0 --ready-file F`` (embedded broker, processor,
sequencer and HTTP API in ONE process, as a user runs it) on a data directory holding the test
agents, waits for the ready file, then measures:

(1) HTTP API, closed loop with ``--concurrency`` clients (httpx.AsyncClient): each submits a
    pre-signed request (POST /v1/events) and waits for its decision
    (GET /v1/decisions/{id}?wait=10); decisions/s and p50/p99 of submit -> decision;
(2) SDK (ledger.sdk.client.Client, in this process, on the service's Kafka): ``submit`` (which
    signs) then ``decision`` (which verifies), same concurrency; decisions/s and p50/p99;
(3) sequencer integration delay at a fixed offered load: requests produced straight to the
    service's ``gov.requests`` (the HTTP path saturates below 100/s here, see (1)); from "the
    broker acknowledged the produce" to "a signed checkpoint covers its leaf", observed by
    polling the ledger SQLite file read-only every ``--poll-ms`` ms (late by at most one poll).

The per-identity rate limit is raised (every request comes from one agent). The checkpoint
interval is the service default unless ``--checkpoint-interval`` is given. Everything started
is stopped (SIGTERM, then SIGKILL after 30 s) and the data directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ledger.config import Settings  # noqa: E402
from ledger.core.envelope import sign_event_with_id  # noqa: E402
from ledger.datadir import DataDir  # noqa: E402
from ledger.kafka.clients import make_producer  # noqa: E402
from ledger.kafka.topics import Topics  # noqa: E402
from ledger.keyfiles import load_keyring  # noqa: E402
from ledger.sdk.client import Client  # noqa: E402
from ledger.sdk.httpsig import SignedRequests  # noqa: E402
from tests.factories import ALICE, request  # noqa: E402
from tests.service_support import make_data_dir  # noqa: E402

READY_TIMEOUT_S = 90.0


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def summary(ms: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(ms), "p90_ms": pct(ms, 90), "p99_ms": pct(ms, 99),
            "max_ms": max(ms)}


def presign(count: int, tag: str) -> list[tuple[str, bytes]]:
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        envelope, request_id = sign_event_with_id(
            request(nonce=f"svc-{tag}-{i:012d}", issued_at=now), ALICE)
        out.append((request_id, envelope))
    return out


class ServiceUnderTest:
    """``govledger up`` in a subprocess; ``info`` is its ready file (api, kafka, ...)."""

    def __init__(self, root: Path, checkpoint_interval: float | None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.data = root / "data"
        make_data_dir(self.data)
        ready = root / "ready.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOVLEDGER_")}
        env.update(GOVLEDGER_RATE_LIMIT_PER_S="1000000000",
                   GOVLEDGER_RATE_LIMIT_BURST="1000000000")
        if checkpoint_interval is not None:
            env["GOVLEDGER_CHECKPOINT_INTERVAL_S"] = str(checkpoint_interval)
        env.update(extra_env or {})
        self.log_path = root / "up.log"
        self._log = self.log_path.open("wb")
        started = time.perf_counter()
        launcher = os.environ.get("BENCH_UP_LAUNCHER")  # e.g. a profiling wrapper
        command = ([sys.executable, launcher] if launcher
                   else [str(Path(sys.executable).parent / "govledger")])
        self.proc = subprocess.Popen(
            [*command, "up", "--data", str(self.data),
             "--api-port", "0", "--ready-file", str(ready)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=root)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("govledger up did not become ready:\n" + self.log_tail())
            time.sleep(0.05)
        self.startup_s = time.perf_counter() - started
        self.info: dict[str, Any] = json.loads(ready.read_text())
        self.api = str(self.info["api"])
        self.kafka = str(self.info["kafka"])

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def cpu_s(self, pid: int | None = None) -> float:
        """User + system CPU seconds of the service process (or ``pid``) so far (/proc)."""
        fields = Path(f"/proc/{pid or self.proc.pid}/stat").read_text().rsplit(")", 1)[1]
        parts = fields.split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def broker_pid(self) -> int | None:
        """The embedded broker: the service's child process (None if not found)."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    return int(stat.parent.name)
        return None

    def idle_cpu(self, seconds: float) -> dict[str, float]:
        """Cores used by the service and the broker while nothing is submitted."""
        broker = self.broker_pid()
        s0, b0 = self.cpu_s(), self.cpu_s(broker) if broker else 0.0
        time.sleep(seconds)
        out = {"service_cores": (self.cpu_s() - s0) / seconds}
        if broker:
            out["broker_cores"] = (self.cpu_s(broker) - b0) / seconds
        return out

    def thread_cpu_s(self) -> dict[str, float]:
        """CPU seconds per thread name of the service process (Linux /proc)."""
        out: dict[str, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                name, rest = task.joinpath("stat").read_text().split(" (", 1)[1].rsplit(")", 1)
                fields = rest.split()
                out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        return out

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# -- (1) HTTP API ---------------------------------------------------------------------------
async def server_times(api: str) -> dict[str, tuple[float, float]]:
    """Per route: (sum of seconds, count) from the service's own /metrics histogram."""
    async with httpx.AsyncClient(base_url=api, timeout=10.0) as http:
        text = (await http.get("/metrics")).text
    out: dict[str, tuple[float, float]] = {}
    for line in text.splitlines():
        for suffix, slot in (("_sum", 0), ("_count", 1)):
            head = f"govledger_http_request_seconds{suffix}{{route=\""
            if line.startswith(head):
                route = line[len(head):].split('"', 1)[0]
                pair = list(out.get(route, (0.0, 0.0)))
                pair[slot] = float(line.rsplit(" ", 1)[1])
                out[route] = (pair[0], pair[1])
    return out


def server_ms(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
              ) -> dict[str, float]:
    """Mean in-app milliseconds per route between two /metrics reads."""
    out = {}
    for route, (total, count) in after.items():
        t0, c0 = before.get(route, (0.0, 0.0))
        if count > c0:
            out[route] = (total - t0) / (count - c0) * 1000
    return out


async def http_run(api: str, signed: list[tuple[str, bytes]], concurrency: int
                   ) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients, each POST then GET ?wait=10, until done. A probe
    GETs /healthz every 50 ms alongside: its latency is the service's event-loop lag."""
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in signed:
        queue.put_nowait(item)
    ms: list[float] = []
    post_ms: list[float] = []
    get_ms: list[float] = []
    health_ms: list[float] = []
    denied: list[str] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=concurrency + 1,
                          max_keepalive_connections=concurrency + 1)
    async with httpx.AsyncClient(base_url=api, limits=limits, timeout=30.0,
                                 auth=SignedRequests(ALICE)) as http:
        async def one_client() -> None:
            while not queue.empty():
                request_id, envelope = queue.get_nowait()
                t0 = time.perf_counter()
                posted = await http.post("/v1/events", content=envelope,
                                         headers={"content-type": "application/json"})
                if posted.status_code != 202:
                    raise RuntimeError(f"POST /v1/events {posted.status_code}: {posted.text}")
                t1 = time.perf_counter()
                got = await http.get(f"/v1/decisions/{request_id}", params={"wait": 10})
                if got.status_code != 200:
                    raise RuntimeError(f"GET decision {got.status_code}: {got.text}")
                t2 = time.perf_counter()
                ms.append((t2 - t0) * 1000)
                post_ms.append((t1 - t0) * 1000)
                get_ms.append((t2 - t1) * 1000)
                body = got.json()
                if not body["allow"]:
                    denied.append(",".join(body["reasons"]))

        async def probe() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                (await http.get("/healthz")).raise_for_status()
                health_ms.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.05)

        prober = asyncio.create_task(probe())
        started = time.perf_counter()
        try:
            await asyncio.gather(*(one_client() for _ in range(concurrency)))
        finally:
            elapsed = time.perf_counter() - started
            stop.set()
            await prober
    return {"requests": len(ms), "concurrency": concurrency,
            "decisions_per_s": len(ms) / elapsed, "elapsed_s": elapsed,
            "denied": len(denied), **summary(ms),
            "post_p50_ms": statistics.median(post_ms), "get_p50_ms": statistics.median(get_ms),
            "healthz_p50_ms": statistics.median(health_ms), "healthz_p99_ms": pct(health_ms, 99)}


# -- (2) SDK --------------------------------------------------------------------------------
def sdk_settings(service: ServiceUnderTest) -> Settings:
    """Client settings for the service's embedded broker, reached as an external bootstrap:
    no idempotent producer (InitProducerId fails there) and the 10 ms fetch wait."""
    return Settings(data_dir=service.root / "sdk", kafka_bootstrap=service.kafka,
                    kafka_idempotent=False, kafka_fetch_max_wait_ms=10)


async def sdk_run(service: ServiceUnderTest, count: int, concurrency: int) -> dict[str, Any]:
    settings = sdk_settings(service)
    keyring = load_keyring(DataDir(service.data).keyring)
    ms: list[float] = []
    denied = 0
    counter = iter(range(count))
    async with Client(settings, service.kafka, keyring) as client:
        async def one_client() -> None:
            nonlocal denied
            for i in counter:
                t0 = time.perf_counter()
                request_id = await client.submit(
                    request(nonce=f"sdk-{i:016d}", issued_at=datetime.now(UTC)), ALICE)
                decision = await client.decision(request_id, timeout=10)
                ms.append((time.perf_counter() - t0) * 1000)
                denied += not decision.allow

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": len(ms), "concurrency": concurrency,
            "decisions_per_s": len(ms) / elapsed, "denied": denied, **summary(ms)}


# -- (3) integration delay ------------------------------------------------------------------
class LedgerWatcher:
    """Polls ledger.db read-only: when does a signed checkpoint cover each event's leaf?"""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.index: dict[str, int] = {}

    def covered(self, event_ids: Sequence[str]) -> list[str]:
        """Which of ``event_ids`` are under the latest signed checkpoint right now."""
        size = self.db.execute("SELECT coalesce(max(size), 0) FROM checkpoints").fetchone()[0]
        unknown = [e for e in event_ids if e not in self.index]
        for i in range(0, len(unknown), 500):
            chunk = unknown[i:i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT idx, event_id FROM leaves WHERE event_id IN ({marks})",
                [bytes.fromhex(e) for e in chunk]).fetchall()
            for idx, raw in rows:
                self.index[bytes(raw).hex()] = int(idx)
        return [e for e in event_ids if e in self.index and self.index[e] < size]

    def close(self) -> None:
        self.db.close()


async def integration_run(service: ServiceUnderTest, rate: float, seconds: float,
                          poll_ms: float) -> dict[str, Any]:
    """Produce pre-signed requests straight to the service's ``gov.requests`` at ``rate``/s
    (acks=all; "produced" = acknowledged) and time until a signed checkpoint covers each."""
    signed = presign(int(rate * seconds), "integ")
    produced: dict[str, float] = {}
    covered_at: dict[str, float] = {}
    watcher = LedgerWatcher(service.data / "ledger.db")
    settings = sdk_settings(service)
    producer = make_producer(settings, service.kafka)
    done = asyncio.Event()

    async def poll() -> None:
        while not done.is_set() or len(covered_at) < len(produced):
            pending = [e for e in produced if e not in covered_at]
            if pending:
                hits = await asyncio.to_thread(watcher.covered, pending)
                now = time.perf_counter()
                for event_id in hits:
                    covered_at[event_id] = now
            await asyncio.sleep(poll_ms / 1000)

    async def acked(request_id: str, delivery: asyncio.Future[Any]) -> None:
        await delivery
        produced[request_id] = time.perf_counter()

    await producer.start()
    poller = asyncio.create_task(poll())
    try:
        topic = Topics(settings.topic_prefix).requests
        acks: list[asyncio.Task[None]] = []
        t0 = time.perf_counter()
        for i, (request_id, envelope) in enumerate(signed):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            delivery = await producer.send(topic, envelope, key=request_id.encode())
            acks.append(asyncio.create_task(acked(request_id, delivery)))
        await asyncio.gather(*acks)
        done.set()
        await asyncio.wait_for(poller, 60)
    finally:
        done.set()
        if not poller.done():
            poller.cancel()
        await producer.stop()
        watcher.close()
    ms = [(covered_at[e] - t) * 1000 for e, t in produced.items()]
    return {"events": len(ms), "offered_per_s": rate, "poll_ms": poll_ms, **summary(ms)}


# -- driver ---------------------------------------------------------------------------------
async def run_all(service: ServiceUnderTest, args: argparse.Namespace,
                  idle: float | None) -> dict[str, Any]:
    """Phases (1)-(3). ``idle`` is the service's idle CPU (cores), to net it out."""
    out: dict[str, Any] = {}
    await http_run(service.api, presign(100, "warm"), 8)  # warm-up, not reported
    if args.requests:
        cpu0, times0 = service.cpu_s(), await server_times(service.api)
        out["http"] = await http_run(service.api, presign(args.requests, "http"),
                                     args.concurrency)
        out["http"]["service_cpu_ms_per_decision"] = (
            (service.cpu_s() - cpu0) * 1000 / args.requests)
        if idle is not None:
            out["http"]["service_cpu_net_of_idle_ms"] = (
                (service.cpu_s() - cpu0 - idle * out["http"]["elapsed_s"]) * 1000
                / args.requests)
        out["http"]["server_mean_ms"] = server_ms(times0, await server_times(service.api))
    if args.sdk_requests:
        cpu0 = service.cpu_s()
        out["sdk"] = await sdk_run(service, args.sdk_requests, args.concurrency)
        out["sdk"]["service_cpu_ms_per_decision"] = (
            (service.cpu_s() - cpu0) * 1000 / args.sdk_requests)
    if args.integration_s > 0:
        out["integration"] = await integration_run(service, args.integration_rate,
                                                   args.integration_s, args.poll_ms)
    return out


def report(results: dict[str, Any]) -> Iterator[str]:
    yield (f"nproc {results['nproc']}, python {results['python']}, load average before "
           f"{results['loadavg_before'][0]:.2f}, after {results['loadavg_after'][0]:.2f}")
    yield (f"govledger up ready in {results['startup_s']:.1f} s, checkpoint interval "
           f"{results['checkpoint_interval']}")
    if "idle" in results:
        idle = results["idle"]
        yield (f"idle CPU: service {idle['service_cores']:.2f} cores, embedded broker "
               f"{idle.get('broker_cores', float('nan')):.2f} cores")
    for name, label in (("http", "(1) HTTP API"), ("sdk", "(2) SDK Client")):
        if name in results:
            r = results[name]
            yield (f"{label}: {r['requests']} requests, concurrency {r['concurrency']}: "
                   f"{r['decisions_per_s']:,.0f} decisions/s, p50 {r['p50_ms']:.0f} ms, "
                   f"p90 {r['p90_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, max "
                   f"{r['max_ms']:.0f} ms, denied {r['denied']}, service CPU "
                   f"{r['service_cpu_ms_per_decision']:.2f} ms/decision")
            if "post_p50_ms" in r:
                yield (f"    POST p50 {r['post_p50_ms']:.0f} ms, GET ?wait p50 "
                       f"{r['get_p50_ms']:.0f} ms; /healthz alongside p50 "
                       f"{r['healthz_p50_ms']:.0f} ms, p99 {r['healthz_p99_ms']:.0f} ms; "
                       f"service CPU net of idle "
                       f"{r.get('service_cpu_net_of_idle_ms', float('nan')):.2f} ms/decision")
            if "server_mean_ms" in r:
                inside = ", ".join(f"{k} {v:.1f} ms" for k, v in r["server_mean_ms"].items())
                yield f"    mean time inside the API app per route: {inside}"
    if "integration" in results:
        r = results["integration"]
        yield (f"(3) integration delay, {r['events']} events at {r['offered_per_s']:.0f}/s "
               f"(poll {r['poll_ms']:.0f} ms): p50 {r['p50_ms']:.0f} ms, p90 "
               f"{r['p90_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, max {r['max_ms']:.0f} ms")
    yield f"service exit code {results['exit_code']}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000,
                        help="requests through the HTTP API (1); 0 skips")
    parser.add_argument("--sdk-requests", type=int, default=2000,
                        help="requests through the SDK (2); 0 skips")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="requests in flight in (1) and (2)")
    parser.add_argument("--integration-rate", type=float, default=100.0,
                        help="offered load of (3), events/s")
    parser.add_argument("--integration-s", type=float, default=10.0,
                        help="duration of (3); 0 skips")
    parser.add_argument("--poll-ms", type=float, default=10.0,
                        help="ledger polling interval in (3)")
    parser.add_argument("--checkpoint-interval", type=float, default=None,
                        help="GOVLEDGER_CHECKPOINT_INTERVAL_S for the service "
                        "(default: the service default)")
    parser.add_argument("--idle-s", type=float, default=5.0,
                        help="first measure idle CPU of service and broker this long; 0 skips")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="govledger-svc-bench-"))
    results: dict[str, Any] = {"nproc": os.cpu_count(), "python": sys.version.split()[0],
                               "loadavg_before": os.getloadavg()}
    service: ServiceUnderTest | None = None
    try:
        service = ServiceUnderTest(root, args.checkpoint_interval)
        results["startup_s"] = service.startup_s
        results["checkpoint_interval"] = (args.checkpoint_interval
                                          if args.checkpoint_interval is not None
                                          else Settings().checkpoint_interval_s)
        if args.idle_s > 0:
            results["idle"] = service.idle_cpu(args.idle_s)
        idle = results.get("idle", {}).get("service_cores")
        results.update(asyncio.run(run_all(service, args, idle)))
    except BaseException:
        if service is not None:
            print(service.log_tail(), file=sys.stderr)
        raise
    finally:
        if service is not None:
            results["exit_code"] = service.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(root)
    results["loadavg_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n".join(report(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
