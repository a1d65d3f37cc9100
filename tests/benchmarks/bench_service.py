"""Whole-service benchmarks: ``govledger up`` as a subprocess (not a pytest file).

    .venv/bin/python tests/benchmarks/bench_service.py [--requests 3000] [--concurrency 16]
        [--rate 200] [--latency-s 10] [--sdk-requests 4000] [--integration-s 0] [--json]

Starts ``govledger up --data DIR --api-port 0 --ready-file F`` as a user runs it (the API in
that process; the embedded broker, the processor and the sequencer in child processes) on a
data directory holding the test agents, waits for the ready file, then measures, every
request pre-signed and naming a resource of its own (no Cedar verdict reused):

(0) the floor: ``GET /healthz`` in a closed loop on the same connections: what the HTTP
    stack alone allows, with no submission, decision or Kafka;
(1) HTTP submit-and-wait, closed loop: ``--concurrency`` clients, each with ONE keep-alive
    connection of its own (``rawhttp.RawHttp``, a lean asyncio HTTP/1.1 client), each
    ``POST /v1/events?wait=10`` (submit, and the decision in the same answer);
(2) the same at a fixed offered load (``--rate``/s for ``--latency-s``): latency from the
    scheduled send (queueing included) to the decision received; p50/p99;
(3) the SDK over Kafka (``ledger.sdk.client.Client`` in this process, on the service's
    broker): ``send_raw`` of the pre-signed envelope then ``decision`` (which verifies),
    ``--concurrency`` in flight;
(4) optional, ``--integration-s``: sequencer integration delay at ``--integration-rate``:
    produced to the service's ``gov.requests``, until a signed checkpoint covers the leaf
    (the ledger SQLite file polled read-only every ``--poll-ms`` ms).

For (0)-(3): CPU per decision of every process, from /proc: the API (``up`` itself), the
broker, the processor, the sequencer, and this process (the load generator), plus the load
average before and after. The per-identity rate limit is raised (every request comes from
one agent). Everything started is stopped (SIGTERM, then SIGKILL after 30 s) and the data
directory removed. The machine may be shared: compare with the floor of the same run.
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ledger.config import Settings  # noqa: E402
from ledger.core.envelope import sign_event_with_id  # noqa: E402
from ledger.datadir import DataDir  # noqa: E402
from ledger.kafka.clients import make_producer  # noqa: E402
from ledger.kafka.topics import Topics  # noqa: E402
from ledger.keyfiles import load_keyring  # noqa: E402
from ledger.sdk.client import Client  # noqa: E402
from tests.benchmarks.rawhttp import RawHttp  # noqa: E402
from tests.factories import ALICE, request  # noqa: E402
from tests.service_support import make_data_dir  # noqa: E402

TOKEN: str | None = None  # the bench agent's API bearer token, made with its data directory

READY_TIMEOUT_S = 90.0


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def summary(ms: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(ms), "p90_ms": pct(ms, 90), "p99_ms": pct(ms, 99),
            "max_ms": max(ms)}


def presign(count: int, tag: str) -> list[tuple[str, bytes]]:
    """Pre-signed requests, each for a resource of its own (``db/orders/<tag>-<i>``)."""
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        envelope, request_id = sign_event_with_id(
            request(nonce=f"svc-{tag}-{i:012d}", issued_at=now,
                    resource=f"db/orders/{tag}-{i}"), ALICE)
        out.append((request_id, envelope))
    return out


class ServiceUnderTest:
    """``govledger up`` in a subprocess; ``info`` is its ready file (api, kafka, ...)."""

    def __init__(self, root: Path, checkpoint_interval: float | None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.data = root / "data"
        make_data_dir(self.data)
        token = self.data / "alice.token"  # decisions are read by a reader of their tenant
        subprocess.run([str(Path(sys.executable).with_name("govledger")), "tokens", "create",
                        "agent:alice", "--data", str(self.data), "--out", str(token)],
                       check=True, capture_output=True)
        global TOKEN
        TOKEN = token.read_text().strip()
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

    def roles(self) -> dict[str, int]:
        """role -> pid: ``api`` (up itself), and its children ``processor``, ``monitor``,
        ``sequencer`` (by their ``python -m`` module) and ``broker`` (the other child)."""
        out = {"api": self.proc.pid}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != self.proc.pid:
                    continue
                argv = stat.parent.joinpath("cmdline").read_bytes().split(b"\0")
                role = ("processor" if b"processors" in argv else
                        "monitor" if b"processors.monitor" in argv else
                        "sequencer" if b"ledger.server.sequencer_process" in argv else "broker")
                out[role] = int(stat.parent.name)
        return out

    def broker_pid(self) -> int | None:
        """The embedded broker: the service's child process (None if not found)."""
        return self.roles().get("broker")

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far of every role, and ``load generator`` (this process)."""
        out = {role: self.cpu_s(pid) for role, pid in self.roles().items()}
        out["load generator"] = time.process_time()
        return out

    def idle_cpu(self, seconds: float) -> dict[str, float]:
        """Cores used by the service and the broker while nothing is submitted."""
        broker = self.broker_pid()
        s0, b0 = self.cpu_s(), self.cpu_s(broker) if broker else 0.0
        time.sleep(seconds)
        out = {"service_cores": (self.cpu_s() - s0) / seconds}
        if broker:
            out["broker_cores"] = (self.cpu_s(broker) - b0) / seconds
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


# -- (0)-(2) HTTP API -----------------------------------------------------------------------
def cpu_per(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """Microseconds of CPU per decision by role between two :meth:`cpu_by_role` reads."""
    return {role: (after[role] - before.get(role, after[role])) / count * 1e6
            for role in after}


async def connections(api: str, count: int) -> list[RawHttp]:
    return list(await asyncio.gather(*(RawHttp.connect(api, TOKEN) for _ in range(count))))


async def closed_loop(conns: list[RawHttp], work: list[tuple[str, bytes]] | int,
                      ) -> tuple[float, list[float]]:
    """Each connection takes the next item until none is left: submit-and-wait (POST
    /v1/events?wait=10, expect 200 and a grant), or with an int, that many GET /healthz.
    Returns (elapsed seconds, per-request milliseconds)."""
    items = iter(work if isinstance(work, list) else [("", b"")] * work)
    ms: list[float] = []

    async def client(conn: RawHttp) -> None:
        for _, envelope in items:
            t0 = time.perf_counter()
            if envelope:
                status, body = await conn.request("POST", "/v1/events?wait=10", envelope)
                if status != 200 or b'"allow":true' not in body:
                    raise RuntimeError(f"POST /v1/events?wait: {status} {body[:300]!r}")
            else:
                status, body = await conn.request("GET", "/healthz")
                if status != 200:
                    raise RuntimeError(f"GET /healthz: {status}")
            ms.append((time.perf_counter() - t0) * 1000)
    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    return time.perf_counter() - started, ms


async def open_loop(api: str, signed: list[tuple[str, bytes]], rate: float) -> list[float]:
    """Send at ``rate``/s on a pool of keep-alive connections (a new one when all are busy);
    latency from the *scheduled* send time to the decision (queueing included)."""
    idle: list[RawHttp] = await connections(api, 8)
    opened = list(idle)
    ms: list[float] = []

    last_used: dict[int, float] = {}

    async def one(due: float, envelope: bytes) -> None:
        conn = idle.pop() if idle else None
        if conn is not None and time.perf_counter() - last_used.get(id(conn), due) > 4.0:
            await conn.close()  # the server closes keep-alive connections idle 5 s
            conn = None
        if conn is None:
            conn = await RawHttp.connect(api, TOKEN)
            opened.append(conn)
        status, body = await conn.request("POST", "/v1/events?wait=10", envelope)
        if status != 200 or b'"allow":true' not in body:
            raise RuntimeError(f"POST /v1/events?wait: {status} {body[:300]!r}")
        ms.append((time.perf_counter() - due) * 1000)
        last_used[id(conn)] = time.perf_counter()
        idle.append(conn)
    tasks = []
    t0 = time.perf_counter()
    for i, (_, envelope) in enumerate(signed):
        due = t0 + i / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, envelope)))
    await asyncio.gather(*tasks)
    await asyncio.gather(*(c.close() for c in opened))
    return ms


async def http_phases(service: ServiceUnderTest, args: argparse.Namespace
                      ) -> dict[str, Any]:
    """(0) the /healthz floor, (1) closed-loop submit-and-wait, (2) latency at --rate."""
    out: dict[str, Any] = {}
    conns = await connections(service.api, args.concurrency)
    try:
        await closed_loop(conns, presign(200, "warm"))   # warm-up, not reported
        for name, work in (("floor", args.requests), ("http", presign(args.requests, "http"))):
            cpu0 = service.cpu_by_role()
            elapsed, ms = await closed_loop(conns, work)
            out[name] = {"requests": len(ms), "concurrency": args.concurrency,
                         "per_s": len(ms) / elapsed, **summary(ms),
                         "cpu_us": cpu_per(cpu0, service.cpu_by_role(), len(ms))}
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    if args.latency_s > 0:
        cpu0 = service.cpu_by_role()
        signed = presign(int(args.rate * args.latency_s), "lat")
        ms = await open_loop(service.api, signed, args.rate)
        out["latency"] = {"requests": len(ms), "offered_per_s": args.rate, **summary(ms),
                          "cpu_us": cpu_per(cpu0, service.cpu_by_role(), len(ms))}
    return out


# -- (3) SDK over Kafka ---------------------------------------------------------------------
def sdk_settings(service: ServiceUnderTest) -> Settings:
    """Client settings for the service's embedded broker, reached as an external bootstrap:
    no idempotent producer (InitProducerId fails there) and the 10 ms fetch wait."""
    return Settings(data_dir=service.root / "sdk", kafka_bootstrap=service.kafka,
                    kafka_idempotent=False, kafka_fetch_max_wait_ms=10)


async def sdk_run(service: ServiceUnderTest, count: int, concurrency: int) -> dict[str, Any]:
    settings = sdk_settings(service)
    keyring = load_keyring(DataDir(service.data).keyring)
    signed = presign(count, "sdk")
    work = iter(signed)
    ms: list[float] = []
    denied = 0
    async with Client(settings, service.kafka, keyring) as client:
        async def one_client() -> None:
            nonlocal denied
            for request_id, envelope in work:
                t0 = time.perf_counter()
                await client.send_raw("requests", envelope, request_id)
                decision = await client.decision(request_id, timeout=30)
                ms.append((time.perf_counter() - t0) * 1000)
                denied += not decision.allow

        cpu0 = service.cpu_by_role()
        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = cpu_per(cpu0, service.cpu_by_role(), len(ms))
    return {"requests": len(ms), "concurrency": concurrency, "per_s": len(ms) / elapsed,
            "denied": denied, **summary(ms), "cpu_us": cpu}


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
async def run_all(service: ServiceUnderTest, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.requests:
        out.update(await http_phases(service, args))
    if args.sdk_requests:
        out["sdk"] = await sdk_run(service, args.sdk_requests, args.concurrency)
    if args.integration_s > 0:
        out["integration"] = await integration_run(service, args.integration_rate,
                                                   args.integration_s, args.poll_ms)
    return out


def cpu_line(cpu: dict[str, float]) -> str:
    roles = ("api", "processor", "monitor", "sequencer", "broker", "load generator")
    shown = [f"{r} {cpu[r]:.0f}" for r in roles if r in cpu]
    return (f"    CPU per decision (us): {', '.join(shown)}; service total "
            f"{sum(v for k, v in cpu.items() if k != 'load generator'):.0f}, all "
            f"{sum(cpu.values()):.0f}")


def report(results: dict[str, Any]) -> Iterator[str]:
    yield (f"nproc {results['nproc']}, python {results['python']}, load average before "
           f"{results['loadavg_before'][0]:.2f}, after {results['loadavg_after'][0]:.2f}")
    yield (f"govledger up ready in {results['startup_s']:.1f} s, checkpoint interval "
           f"{results['checkpoint_interval']}, processes {results['roles']}")
    if "idle" in results:
        idle = results["idle"]
        yield (f"idle CPU: service {idle['service_cores']:.3f} cores, embedded broker "
               f"{idle.get('broker_cores', float('nan')):.3f} cores")
    labels = {"floor": "(0) floor, GET /healthz", "http": "(1) HTTP submit-and-wait",
              "latency": "(2) HTTP submit-and-wait, open loop", "sdk": "(3) SDK over Kafka"}
    for name, label in labels.items():
        if name not in results:
            continue
        r = results[name]
        load = (f"{r['offered_per_s']:.0f}/s offered" if name == "latency" else
                f"{r['concurrency']} connections/in flight: {r['per_s']:,.0f}/s")
        yield (f"{label}: {r['requests']} requests, {load}, p50 {r['p50_ms']:.1f} ms, "
               f"p90 {r['p90_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.0f} ms")
        yield cpu_line(r["cpu_us"])
        if name == "http" and "floor" in results:
            yield (f"    HTTP decisions/s over the floor's requests/s: "
                   f"{r['per_s'] / results['floor']['per_s']:.2f}")
    if "integration" in results:
        r = results["integration"]
        yield (f"(4) integration delay, {r['events']} events at {r['offered_per_s']:.0f}/s "
               f"(poll {r['poll_ms']:.0f} ms): p50 {r['p50_ms']:.0f} ms, p90 "
               f"{r['p90_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, max {r['max_ms']:.0f} ms")
    yield f"service exit code {results['exit_code']}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000,
                        help="requests in (0) and (1); 0 skips (0)-(2)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="connections in (0) and (1), requests in flight in (3)")
    parser.add_argument("--rate", type=float, default=200.0, help="offered load of (2), /s")
    parser.add_argument("--latency-s", type=float, default=10.0,
                        help="duration of (2); 0 skips")
    parser.add_argument("--sdk-requests", type=int, default=4000,
                        help="requests through the SDK (3); 0 skips")
    parser.add_argument("--integration-rate", type=float, default=100.0,
                        help="offered load of (4), events/s")
    parser.add_argument("--integration-s", type=float, default=0.0,
                        help="duration of (4); 0 (the default) skips")
    parser.add_argument("--poll-ms", type=float, default=10.0,
                        help="ledger polling interval in (4)")
    parser.add_argument("--checkpoint-interval", type=float, default=None,
                        help="GOVLEDGER_CHECKPOINT_INTERVAL_S for the service "
                        "(default: the service default)")
    parser.add_argument("--idle-s", type=float, default=0.0,
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
        results["roles"] = service.roles()
        results.update(asyncio.run(run_all(service, args)))
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
