"""Decision-side benchmarks: the real DecisionWorker on the embedded broker (not a pytest file).

    .venv/bin/python tests/benchmarks/bench_pipeline.py [--requests 10000] [--rate 500 100]
        [--latency-s 15] [--micro 2000] [--workers 1 2] [--json]

Measures, on one machine (see docs/performance.md for the figures and how to read them):

(a) sustained decisions/s: N pre-signed, policy-valid requests (agent:alice, role reader,
    action read, resource db/orders/*, distinct nonces) are produced as fast as possible to
    ``gov.requests``; decisions are consumed from ``gov.decisions`` and matched by key (a fresh
    request's decision is keyed by its lineage root = its own request id). The rate is taken
    as all N decisions over the time from the first produce call to the last decision consumed
    (decisions arrive in bursts, one per group commit, so no percentile window is used);
(b) p50/p99 latency, request produced -> decision consumed, at a fixed offered load;
(c) in-process costs, no Kafka: ``processors.core.checks.evaluate_policy`` with the example Cedar
    bundle, ``Engine.handle`` per request, Ed25519 verify and sign alone, the journal, a
    restart's restore per journal entry (``DecisionWorker.catch_up`` into a fresh engine),
    and a cProfile of ``Engine.handle`` (top 10 functions by tottime);
(d) the executor gate's offline check, ``ledger.core.artifact.check_artifact`` on a real grant.

The worker runs in a SEPARATE PROCESS (``bench_pipeline.py worker ...``, this file): by
default exactly as ``govledger up`` runs it on the embedded broker (``build_worker``: one
worker owns every partition, offsets in its journal); ``--workers 1 2`` also runs two workers
in one consumer group (``use_group=True``, shared journal) to see whether a second process
helps on 2 cores. Every phase gets its own embedded broker and data directory, and stops them.

``--stub-engine`` measures the floor: the workers answer every request with one grant signed
once, so what remains is consume, journal (fsync), publish and commit, plus the broker and the
load generator. Run (a) also reports the CPU each process used per decision meanwhile
(workers, broker, and this process as the load generator), from /proc.

The per-identity rate limit is raised for the benchmark (all requests come from one agent;
with the default 100/s the run would measure RATE_LIMITED denials, which cost the same but
are not what the target is about).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from ledger.config import Settings  # noqa: E402
from ledger.core.artifact import check_artifact  # noqa: E402
from ledger.core.envelope import (  # noqa: E402
    event_id,
    pae,
    parse_envelope,
    read_stored,
    sign_event_with_id,
)
from ledger.core.keys import verify_signature  # noqa: E402
from ledger.core.streams import Stream  # noqa: E402
from ledger.datadir import DataDir  # noqa: E402
from ledger.kafka.broker import EmbeddedBroker  # noqa: E402
from ledger.kafka.clients import make_consumer, make_producer  # noqa: E402
from ledger.kafka.offsets import read_highwaters  # noqa: E402
from ledger.kafka.topics import Topics, ensure_topics  # noqa: E402
from ledger.log.store import LedgerStore  # noqa: E402
from processors.app import build_engine, build_worker  # noqa: E402
from processors.core.checks import evaluate_policy  # noqa: E402
from processors.core.outcomes import Outcome, Output  # noqa: E402
from processors.genesis import import_genesis  # noqa: E402
from processors.journal import Journal  # noqa: E402
from processors.policy import PolicyBundle  # noqa: E402
from processors.worker import DecisionWorker  # noqa: E402
from tests.factories import ALICE, ENV, request  # noqa: E402
from tests.service_support import make_data_dir  # noqa: E402

EXAMPLE_POLICIES = ROOT / "processors" / "examples" / "policies"
WORKER_READY_S = 60.0
GROUP_JOIN_S = 90.0
GRANT_MARK = b"authorization-granted"


def bench_settings(data_dir: Path) -> Settings:
    """Embedded-mode settings as ``govledger up`` uses them, but with the per-identity rate
    limit out of the way and a 6 s group session (the shortest allowed: faster joins)."""
    return Settings(data_dir=data_dir, rate_limit_per_s=1e9, rate_limit_burst=10**9,
                    kafka_session_timeout_ms=6_000)


# --distinct-resources: every request names its own resource, so no two reach Cedar with
# the same inputs and the engine's verdict memo never hits (the worst case for a decision).
DISTINCT_RESOURCES = False


def presign(count: int, tag: str) -> list[tuple[str, bytes]]:
    """``count`` signed, policy-valid requests from agent:alice: (request id, envelope)."""
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        resource = f"db/orders/{tag}-{i}/*" if DISTINCT_RESOURCES else "db/orders/*"
        envelope, request_id = sign_event_with_id(
            request(nonce=f"bench-{tag}-{i:012d}", issued_at=now, resource=resource), ALICE)
        out.append((request_id, envelope))
    return out


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def timed(fn: Any, count: int) -> float:
    """Seconds per call of ``fn(i)`` over ``count`` calls."""
    started = time.perf_counter()
    for i in range(count):
        fn(i)
    return (time.perf_counter() - started) / count


# -- (c) and (d): in-process costs ----------------------------------------------------------
def micro(count: int, root: Path) -> dict[str, Any]:
    settings = bench_settings(make_data_dir(root / "micro").root)
    engine = build_engine(settings)
    bundle = PolicyBundle.load(EXAMPLE_POLICIES)
    now = datetime.now(UTC)
    roles = frozenset({"requester", "reader"})
    same = request(nonce="bench-policy-000000", issued_at=now)
    varied = [request(nonce=f"bench-policy-{i:012d}", issued_at=now,
                      resource=f"db/orders/{i}") for i in range(count)]
    assert evaluate_policy(bundle, same, roles, 0).allow
    policy_hit = timed(lambda _: evaluate_policy(bundle, same, roles, 0), count)
    policy_miss = timed(lambda i: evaluate_policy(bundle, varied[i], roles, 0), count)

    signed = presign(count, "micro")
    outcomes = []
    started = time.perf_counter()
    for _, envelope in signed:
        outcomes.append(engine.handle(Stream.REQUESTS, envelope, now))
    handle_s = (time.perf_counter() - started) / count
    denied = [o.reasons for o in outcomes if not o.allow]
    if denied:
        raise RuntimeError(f"{len(denied)} of {count} benchmark requests denied: {denied[0]}")

    parsed = parse_envelope(signed[0][1])
    message = pae(parsed.payload_type, parsed.payload)
    assert verify_signature(ALICE.public_key, message, parsed.signature)
    verify_s = timed(lambda _: verify_signature(ALICE.public_key, message, parsed.signature),
                     count)
    sign_s = timed(lambda _: engine.authority.sign(message), count)

    profile = cProfile.Profile()
    fresh = presign(count, "profile")
    profile.enable()
    for _, envelope in fresh:
        engine.handle(Stream.REQUESTS, envelope, now)
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(10)

    journal = Journal(root / "micro-journal" / "processor.db")
    # the governance a restarted worker restores first (the genesis, as `up` journals it)
    with LedgerStore(DataDir.of(settings).ledger_db) as store:
        genesis = import_genesis(journal, store)
    batch = [(Stream.REQUESTS, now, envelope, outcome)
             for (_, envelope), outcome in zip(signed, outcomes, strict=True)]
    chunks = [batch[i:i + 500] for i in range(0, len(batch), 500)]
    started = time.perf_counter()
    for chunk in chunks:
        journal.append(chunk)
    journal_append_s = (time.perf_counter() - started) / len(batch)
    # mark_published: one small write transaction, as the worker does once per batch
    journal_commit_s = timed(lambda i: journal.mark_published(i + 1), 50)
    recall_miss_s = timed(lambda i: journal.recall(f"{i:064x}"), count)
    # restart: a fresh engine restored from the journal, exactly as DecisionWorker.start does
    restarted = DecisionWorker(settings, "unused:0", Topics(settings.topic_prefix),
                               build_engine(settings, journal), journal)
    started = time.perf_counter()
    restored = restarted.catch_up()
    restore_s = (time.perf_counter() - started) / max(restored - genesis, 1)
    assert restored == genesis + count, (restored, genesis, count)
    journal.close()

    grant = outcomes[0].outputs[0].value
    runner = next(p for p in engine.keyring.principals() if p.identity == "runner:1")
    now = datetime.now(UTC)  # inside the grant's window (it opened at presign time)
    target = "db/orders/micro-0/42" if DISTINCT_RESOURCES else "db/orders/42"
    checked = check_artifact(grant, engine.keyring, now, runtime=runner, action="read",
                             resource=target, environment=ENV)
    assert checked.artifact.request_id == signed[0][0]
    gate_s = timed(lambda _: check_artifact(grant, engine.keyring, now, runtime=runner,
                                            action="read", resource=target,
                                            environment=ENV), count)
    return {"count": count, "policy_eval_cache_hit_us": policy_hit * 1e6,
            "policy_eval_cache_miss_us": policy_miss * 1e6,
            "engine_handle_us": handle_s * 1e6, "engine_handle_per_s": 1 / handle_s,
            "ed25519_verify_us": verify_s * 1e6, "ed25519_sign_us": sign_s * 1e6,
            "journal_append_per_decision_us": journal_append_s * 1e6,
            "journal_mark_published_ms": journal_commit_s * 1e3,
            "journal_recall_miss_us": recall_miss_s * 1e6,
            "journal_restore_per_entry_us": restore_s * 1e6,
            "check_artifact_us": gate_s * 1e6, "check_artifact_per_s": 1 / gate_s,
            "profile_top10_tottime": _trim_profile(text.getvalue())}


def _trim_profile(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    head = [line for line in lines[:start] if "function calls" in line]
    return "\n".join([*head, *lines[start:]]).rstrip()


# -- the worker process ---------------------------------------------------------------------
def worker_main(argv: list[str]) -> None:
    """``bench_pipeline.py worker --data DIR --bootstrap HOST:PORT [--group]``: one
    DecisionWorker until SIGTERM. Prints READY, ASSIGNED <n> on every assignment change
    (group mode) and STATS <json> on exit."""
    parser = argparse.ArgumentParser(prog="bench_pipeline.py worker")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the whole worker; print the top 15 by tottime on exit")
    parser.add_argument("--stub-engine", action="store_true",
                        help="answer every input with one pre-signed grant (the floor)")
    args = parser.parse_args(argv)
    settings = bench_settings(args.data)
    profile = cProfile.Profile() if args.profile else None

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        if args.group:
            journal = Journal(DataDir(settings.data_dir).journal)
            worker = DecisionWorker(settings, args.bootstrap, Topics(settings.topic_prefix),
                                    build_engine(settings, journal), journal, use_group=True)
        else:
            worker = build_worker(settings, args.bootstrap)
        await worker.start()
        if args.stub_engine:
            _stub_engine(worker)
        print("READY", flush=True)
        gc_pauses = _watch_gc()
        watcher = asyncio.create_task(_watch_assignment(worker, stop))
        cpu0 = time.process_time()
        if profile is not None:
            profile.enable()
        try:
            await worker.run(stop)
        finally:
            if profile is not None:
                profile.disable()
                text = io.StringIO()
                pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(40)
                print("PROFILE " + json.dumps(_trim_profile(text.getvalue())), flush=True)
                text = io.StringIO()
                pstats.Stats(profile, stream=text).sort_stats("cumtime").print_stats(
                    r"processors/(agents|journal|engine)\.py", 12)
                print("PROFILECUM " + json.dumps(_trim_profile(text.getvalue())), flush=True)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await worker.stop()
            worker.journal.close()
            s = worker.stats
            print("STATS " + json.dumps({"decided": s.decided, "granted": s.granted,
                                         "denied": s.denied, "batches": s.batches,
                                         "cpu_s": time.process_time() - cpu0,
                                         "cpu_s_by_thread": _thread_cpu(),
                                         "gc_pauses": len(gc_pauses),
                                         "gc_max_ms": max(gc_pauses, default=0.0),
                                         "gc_total_ms": sum(gc_pauses)}), flush=True)

    asyncio.run(run())


def _stub_engine(worker: DecisionWorker) -> None:
    """``--stub-engine``: replace the decision with a stand-in that costs next to nothing (it
    reads the request id and answers with one grant signed once), keeping everything around
    it real: consume, journal (fsync), publish, commit. What is left is the floor that the
    broker, the journal and the Kafka client set, whatever a decision costs."""
    sample = worker.engine.handle(Stream.REQUESTS, presign(1, "stub")[0][1], datetime.now(UTC))
    grant = sample.outputs[0].value

    def handle(stream: Stream, raw: bytes, now: datetime) -> Outcome:
        stored = read_stored(raw)  # the bench's own requests: read, not verified
        assert stored is not None
        request_id = event_id(stored.payload)
        outcome = Outcome(request_id, (Output(Stream.DECISIONS, request_id.encode(), grant),),
                          allow=True)
        worker.engine.state.remember(request_id, outcome)  # as the engine does: known here
        return outcome

    worker.engine.handle = handle  # type: ignore[method-assign]


def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each live thread of this process since it started,
    by Python thread name (the journal writer thread is where the SQLite work goes)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            seconds = _stat_cpu_s(task / "stat")
        except OSError:
            continue  # the thread ended meanwhile
        name = names.get(int(task.name), f"native-{task.name}")
        out[name] = round(out.get(name, 0.0) + seconds, 2)
    return out


def _stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds from a /proc ``stat`` file (a process's or a thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _watch_gc() -> list[float]:
    """Milliseconds of every garbage collection from now on (stop-the-world pauses)."""
    pauses: list[float] = []
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((time.perf_counter() - started[0]) * 1e3)

    gc.callbacks.append(callback)
    return pauses


async def _watch_assignment(worker: DecisionWorker, stop: asyncio.Event) -> None:
    last: frozenset[TopicPartition] | None = None
    while not stop.is_set():
        consumer = worker._consumer  # the bench only reads which partitions it owns
        if consumer is not None:
            now = frozenset(consumer.assignment())
            if now != last:
                last = now
                parts = sorted(f"{tp.topic}:{tp.partition}" for tp in now)
                print(f"ASSIGNED {json.dumps(parts)}", flush=True)
        await asyncio.sleep(0.2)


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @classmethod
    def spawn(cls, data: Path, bootstrap: str, group: bool, profile: bool,
              stub: bool = False) -> WorkerProcess:
        cmd = [sys.executable, "-W", "default", str(Path(__file__).resolve()), "worker",
               "--data", str(data), "--bootstrap", bootstrap]
        if group:
            cmd.append("--group")
        if profile:
            cmd.append("--profile")
        if stub:
            cmd.append("--stub-engine")
        # Kafka client tuning (GOVLEDGER_KAFKA_*) reaches the worker, nothing else does.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("GOVLEDGER_") or k.startswith("GOVLEDGER_KAFKA_")}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=ROOT)
        return cls(proc)

    async def read_until(self, prefix: str, timeout_s: float) -> str:
        """Next output line starting with ``prefix`` (others are kept in ``lines``)."""
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(asyncio.to_thread(stdout.readline),
                                          max(0.1, deadline - time.monotonic()))
            if not line:
                break
            self.lines.append(line.rstrip())
            if line.startswith(prefix):
                return line.rstrip()
        raise RuntimeError(f"worker did not print {prefix!r}:\n" + "\n".join(self.lines[-30:]))

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait (kill after 20 s); the worker's final STATS."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.lines += out.splitlines()
        found: dict[str, Any] = {}
        for line in self.lines:
            if line.startswith("STATS "):
                found.update(json.loads(line[6:]))
            elif line.startswith("PROFILE "):
                found["profile"] = json.loads(line[8:])
            elif line.startswith("PROFILECUM "):
                found["profile_cumulative"] = json.loads(line[11:])
        if "decided" not in found:
            found["error"] = "\n".join(self.lines[-20:])
        warnings = [line for line in self.lines if "Warning" in line]
        if warnings:
            found["warnings"] = warnings[:10]
        return found


# -- the bench side: produce, consume decisions ---------------------------------------------
class DecisionReader:
    """Consumes ``gov.decisions`` from its current end; records arrival time per key."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.topic = Topics(settings.topic_prefix).decisions
        self.arrived: dict[bytes, tuple[int, bool]] = {}
        self.created_ms: dict[bytes, int] = {}  # the decision record's timestamp (worker)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        parts = [TopicPartition(self.topic, p) for p in range(self.settings.partitions)]
        probe = make_consumer(self.settings, self.bootstrap, group_id=None)
        await probe.start()
        try:
            marks = await read_highwaters(probe, parts)
        finally:
            await probe.stop()
        self._consumer = make_consumer(self.settings, self.bootstrap, group_id=None,
                                       max_partition_fetch_bytes=4 * 1024 * 1024)
        await self._consumer.start()
        self._consumer.assign(parts)
        for tp in parts:
            self._consumer.seek(tp, marks[tp])
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            stamp = time.monotonic_ns()
            for records in batches.values():
                for record in records:
                    if record.key is not None and record.key not in self.arrived:
                        self.arrived[record.key] = (stamp, GRANT_MARK in (record.value or b""))
                        self.created_ms[record.key] = record.timestamp

    async def wait_for(self, keys: Sequence[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while any(k not in self.arrived for k in keys):
            if time.monotonic() > deadline:
                missing = sum(k not in self.arrived for k in keys)
                raise RuntimeError(f"{missing} of {len(keys)} decisions missing after "
                                   f"{timeout_s}s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux /proc)."""
    return _stat_cpu_s(Path(f"/proc/{pid}/stat"))


async def throughput(settings: Settings, bootstrap: str, signed: list[tuple[str, bytes]],
                     reader: DecisionReader, timeout_s: float,
                     pids: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """(a) produce every request as fast as possible; all decisions / (last decision - first
    produce). With ``pids`` (role -> process ids), also the CPU each role used per decision
    meanwhile; the load generator is this process (producer and decision reader)."""
    pids = pids or {}
    cpu0 = {role: sum(map(_proc_cpu_s, ids)) for role, ids in pids.items()}
    own0 = time.process_time()
    topic = Topics(settings.topic_prefix).requests
    producer = make_producer(settings, bootstrap, linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    try:
        started = time.monotonic_ns()
        for request_id, envelope in signed:
            await producer.send(topic, envelope, key=request_id.encode())
        await producer.flush()
        produced_s = (time.monotonic_ns() - started) / 1e9
    finally:
        await producer.stop()
    keys = [rid.encode() for rid, _ in signed]
    await reader.wait_for(keys, timeout_s)
    stamps = sorted(reader.arrived[k][0] for k in keys)
    n = len(stamps)
    overall = n / ((stamps[-1] - started) / 1e9)
    granted = sum(reader.arrived[k][1] for k in keys)
    cpu_us = {role: (sum(map(_proc_cpu_s, ids)) - cpu0[role]) / n * 1e6
              for role, ids in pids.items()}
    cpu_us["load generator"] = (time.process_time() - own0) / n * 1e6
    return {"requests": n, "produce_s": produced_s, "decisions_per_s": overall,
            "granted": granted, "cpu_us_per_decision": cpu_us}


async def latency(settings: Settings, bootstrap: str, signed: list[tuple[str, bytes]],
                  rate: float, reader: DecisionReader, work: Path) -> dict[str, Any]:
    """(b) paced at ``rate``/s: request produced -> decision consumed, per request.

    The paced producer is a process of its own (``bench_pipeline.py produce``), so this
    process's event loop (the decision reader) does not delay the sends it times; both
    stamp with CLOCK_MONOTONIC, which is system-wide on Linux."""
    topic = Topics(settings.topic_prefix).requests
    inputs, stamps = work / f"paced-{rate:.0f}.jsonl", work / f"sent-{rate:.0f}.json"
    inputs.write_text("".join(json.dumps([rid, base64.b64encode(env).decode()]) + "\n"
                              for rid, env in signed))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "produce", "--bootstrap", bootstrap,
        "--topic", topic, "--rate", str(rate), "--input", str(inputs),
        "--output", str(stamps), cwd=ROOT)
    if await proc.wait() != 0:
        raise RuntimeError(f"the paced producer exited with status {proc.returncode}")
    report = json.loads(stamps.read_text())
    sent = {k.encode(): v for k, v in report["sent_ns"].items()}
    wall = {k.encode(): v for k, v in report["sent_wall"].items()}
    await reader.wait_for(list(sent), 60)
    ms = [(reader.arrived[k][0] - t) / 1e6 for k, t in sent.items()]
    # split at the decision record's timestamp (the worker's producer stamps it, ms
    # resolution, same host clock): produce -> decided, decided -> consumed by the bench
    to_decided = [reader.created_ms[k] - wall[k] * 1e3 for k in sent]
    return {"requests": len(ms), "offered_per_s": report["offered_per_s"],
            "sent_late_over_5ms": report["late"],
            "p50_ms": statistics.median(ms), "p90_ms": pct(ms, 90), "p99_ms": pct(ms, 99),
            "max_ms": max(ms), "to_decided_p50_ms": statistics.median(to_decided),
            "to_decided_p99_ms": pct(to_decided, 99)}


def produce_main(argv: list[str]) -> None:
    """``bench_pipeline.py produce --bootstrap B --topic T --rate R --input F --output F``:
    send the pre-signed requests of F (JSON lines ``[request id, base64 envelope]``) at R/s,
    keyed by request id; write when each was sent."""
    parser = argparse.ArgumentParser(prog="bench_pipeline.py produce")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    signed = [(rid, base64.b64decode(env)) for rid, env in
              map(json.loads, args.input.read_text().splitlines())]

    async def run() -> None:
        producer = make_producer(bench_settings(args.input.parent), args.bootstrap)
        await producer.start()
        sent: dict[str, int] = {}
        wall: dict[str, float] = {}
        late = 0
        try:
            t0 = time.perf_counter()
            for i, (request_id, envelope) in enumerate(signed):
                delay = t0 + i / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.005:
                    late += 1
                sent[request_id] = time.monotonic_ns()
                wall[request_id] = time.time()
                await producer.send(args.topic, envelope, key=request_id.encode())
            await producer.flush()
            offered = len(signed) / (time.perf_counter() - t0)
        finally:
            await producer.stop()
        args.output.write_text(json.dumps({"sent_ns": sent, "sent_wall": wall, "late": late,
                                           "offered_per_s": offered}))

    asyncio.run(run())


class MonitorChild:
    """``--with-monitor``: the governance monitor (``python -m processors.monitor``, what
    ``govledger up`` starts) consuming the same topics while the pipeline is measured."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        from ledger.server.children import settings_env
        self.ready = settings.data_dir / ".bench-monitor-ready"
        env = {**os.environ, **settings_env(settings), "GOVLEDGER_KAFKA_BOOTSTRAP": bootstrap}
        self.proc = subprocess.Popen([sys.executable, "-m", "processors.monitor",
                                      "--ready-file", str(self.ready)], env=env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"monitor not ready (exit {self.proc.poll()})")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


WITH_MONITOR = False
MONITOR_PIDS: list[int] = []


@contextlib.asynccontextmanager
async def stack(root: Path, workers: int, profile: bool = False, stub: bool = False) -> Any:
    """A fresh data dir, embedded broker, topics and ``workers`` worker processes (and the
    monitor with ``--with-monitor``)."""
    make_data_dir(root)
    settings = bench_settings(root)
    broker = EmbeddedBroker()
    await broker.astart()
    procs: list[WorkerProcess] = []
    monitor: MonitorChild | None = None
    try:
        await ensure_topics(broker.bootstrap, Topics(settings.topic_prefix).all(),
                            settings.partitions, settings.replication_factor)
        group = workers > 1
        for _ in range(workers):
            procs.append(WorkerProcess.spawn(root, broker.bootstrap, group, profile, stub))
        for proc in procs:
            await proc.read_until("READY", WORKER_READY_S)
        if group:
            await _wait_split(procs, settings)
        if WITH_MONITOR:
            monitor = MonitorChild(settings, broker.bootstrap)
            await monitor.wait_ready()
            MONITOR_PIDS[:] = [monitor.proc.pid]
        yield settings, broker, procs
    finally:
        for proc in procs:
            proc.stop()
        if monitor is not None:
            monitor.stop()
            MONITOR_PIDS.clear()
        await broker.astop()


async def _wait_split(procs: list[WorkerProcess], settings: Settings) -> None:
    """Until the workers' assignments are disjoint and cover every input partition."""
    wanted = 3 * settings.partitions  # requests, revocations, executions
    latest: list[list[str]] = [[] for _ in procs]
    deadline = time.monotonic() + GROUP_JOIN_S
    while time.monotonic() < deadline:
        for i, proc in enumerate(procs):
            with contextlib.suppress(TimeoutError):
                line = await proc.read_until("ASSIGNED", 0.5)
                latest[i] = json.loads(line.split(" ", 1)[1])
        owned = [p for parts in latest for p in parts]
        if all(latest) and len(owned) == wanted and len(set(owned)) == wanted:
            return
    raise RuntimeError(f"group did not split the partitions: {latest}")


async def pipeline(root: Path, workers: int, count: int, rates: list[float], latency_s: float,
                   profile: bool = False, stub: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"workers": workers, "stub_engine": stub}
    started = time.perf_counter()
    async with stack(root, workers, profile, stub) as (settings, broker, procs):
        bootstrap = broker.bootstrap
        pids = {"workers": [p.proc.pid for p in procs],
                "broker": [broker.pid] if broker.pid is not None else []}
        if MONITOR_PIDS:  # the monitor's CPU per decision too
            pids["monitor"] = list(MONITOR_PIDS)
        result["startup_s"] = time.perf_counter() - started
        reader = DecisionReader(settings, bootstrap)
        await reader.start()
        try:
            warm = presign(200, f"warm{workers}")
            await throughput(settings, bootstrap, warm, reader, 60)
            result["throughput"] = await throughput(settings, bootstrap,
                                                    presign(count, f"tp{workers}"), reader,
                                                    max(60.0, count / 100), pids)
            result["latency"] = []
            for rate in rates if latency_s > 0 else ():
                paced = presign(int(rate * latency_s), f"lat{workers}-{rate:.0f}")
                result["latency"].append(await latency(settings, bootstrap, paced, rate,
                                                       reader, root))
        finally:
            await reader.stop()
    result["worker_stats"] = [p.stop() for p in procs]
    return result


# -- reporting ------------------------------------------------------------------------------
def report(results: dict[str, Any]) -> Iterator[str]:
    yield (f"nproc {results['nproc']}, python {results['python']}, load average before "
           f"{results['loadavg_before'][0]:.2f}, after {results['loadavg_after'][0]:.2f}")
    if results.get("with_monitor"):
        yield "the governance monitor ran on the same topics (its own process)"
    if results.get("distinct_resources"):
        yield "every request names a resource of its own (no Cedar verdict reused)"
    m = results.get("micro")
    if m:
        yield f"(c) in-process, {m['count']} iterations"
        yield f"    evaluate_policy (entity cache hit)   {m['policy_eval_cache_hit_us']:8.0f} us"
        yield f"    evaluate_policy (distinct resources) {m['policy_eval_cache_miss_us']:8.0f} us"
        yield (f"    Engine.handle per request            {m['engine_handle_us']:8.0f} us "
               f"({m['engine_handle_per_s']:,.0f}/s)")
        yield f"    Ed25519 verify (PyNaCl)              {m['ed25519_verify_us']:8.0f} us"
        yield f"    Ed25519 sign (authority)             {m['ed25519_sign_us']:8.0f} us"
        per = m["journal_append_per_decision_us"]
        yield f"    journal append, 500-decision batches {per:8.0f} us per decision"
        yield f"    journal mark_published (1 write txn) {m['journal_mark_published_ms']:8.2f} ms"
        yield f"    journal recall (miss), 2 per request {m['journal_recall_miss_us']:8.0f} us"
        yield (f"    restart: journal restore per entry   "
               f"{m['journal_restore_per_entry_us']:8.0f} us")
        yield "    cProfile of Engine.handle, top 10 by tottime:"
        yield from ("      " + line for line in m["profile_top10_tottime"].splitlines())
        yield (f"(d) check_artifact (offline gate)       {m['check_artifact_us']:8.0f} us "
               f"({m['check_artifact_per_s']:,.0f}/s)")
    for run in results.get("pipeline", []):
        w = run["workers"]
        stub = (", STUB ENGINE (the floor: no decision is made)" if run.get("stub_engine")
                else "")
        yield f"pipeline, {w} worker process(es){stub}, startup {run['startup_s']:.1f} s"
        tp = run["throughput"]
        yield (f"(a) {tp['requests']} requests: {tp['decisions_per_s']:,.0f} decisions/s "
               f"(first produce -> last decision), "
               f"produced in {tp['produce_s']:.2f} s, granted {tp['granted']}")
        cpu = tp.get("cpu_us_per_decision", {})
        if cpu:
            yield ("    CPU per decision meanwhile: " + ", ".join(
                f"{role} {us:.0f} us" for role, us in cpu.items())
                + f"; total {sum(cpu.values()):.0f} us")
        for lat in run["latency"]:
            yield (f"(b) {lat['requests']} at {lat['offered_per_s']:.0f}/s: "
                   f"p50 {lat['p50_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms, "
                   f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms; "
                   f"produced -> decided p50 {lat['to_decided_p50_ms']:.0f} ms, "
                   f"p99 {lat['to_decided_p99_ms']:.0f} ms")
        for i, stats in enumerate(run["worker_stats"]):
            shown = {k: v for k, v in stats.items() if not k.startswith("profile")}
            yield f"    worker {i}: {json.dumps(shown)}"
            if "profile" in stats:
                yield f"    worker {i} cProfile (whole run), top 15 by tottime:"
                yield from ("      " + line for line in stats["profile"].splitlines())
                yield f"    worker {i} cProfile, worker/journal/engine functions by cumtime:"
                yield from ("      " + line
                            for line in stats["profile_cumulative"].splitlines())
    yield from floor_ratios(results.get("pipeline", []))


def floor_ratios(runs: list[dict[str, Any]]) -> Iterator[str]:
    """Each real run against the stub-engine run with as many workers in the same
    invocation: throughput ratio (the target: >= 0.5) and p99 ratio per offered rate."""
    floors = {r["workers"]: r for r in runs if r.get("stub_engine")}
    for run in runs:
        floor = floors.get(run["workers"])
        if run.get("stub_engine") or floor is None:
            continue
        ratio = run["throughput"]["decisions_per_s"] / floor["throughput"]["decisions_per_s"]
        line = (f"ratios to the floor, {run['workers']} worker(s): throughput {ratio:.2f} "
                f"({run['throughput']['decisions_per_s']:,.0f} / "
                f"{floor['throughput']['decisions_per_s']:,.0f} decisions/s)")
        for lat, base in zip(run["latency"], floor["latency"], strict=False):  # same --rate
            line += (f"; p99 at {lat['offered_per_s']:.0f}/s {lat['p99_ms']:.0f} / "
                     f"{base['p99_ms']:.0f} ms = {lat['p99_ms'] / base['p99_ms']:.1f}x")
        yield line


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        worker_main(argv[1:])
        return 0
    if argv[:1] == ["produce"]:
        produce_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000,
                        help="requests in the throughput run (a)")
    parser.add_argument("--rate", type=float, nargs="+", default=[500.0, 100.0],
                        help="offered load(s) of the latency runs (b), requests/s")
    parser.add_argument("--latency-s", type=float, default=15.0,
                        help="duration of each latency run (b); 0 skips them")
    parser.add_argument("--latency-2", action="store_true",
                        help="also run (b) with two workers (default: throughput only)")
    parser.add_argument("--micro", type=int, default=2000,
                        help="iterations of the in-process measurements (c), (d); 0 skips")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], choices=[1, 2],
                        help="worker process counts to run the pipeline with")
    parser.add_argument("--profile-worker", action="store_true",
                        help="cProfile the worker process(es) and print their top 15")
    parser.add_argument("--distinct-resources", action="store_true",
                        help="a resource of its own per request: no Cedar verdict is reused")
    parser.add_argument("--stub-engine", action="store_true",
                        help="the floor: the workers answer every request with one "
                             "pre-signed grant instead of deciding (consume, journal, "
                             "publish and commit stay real)")
    parser.add_argument("--with-floor", action="store_true",
                        help="run each pipeline twice, real and --stub-engine, one after the "
                             "other, and print the ratios to that floor")
    parser.add_argument("--with-monitor", action="store_true",
                        help="run the governance monitor on the same topics meanwhile")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    global DISTINCT_RESOURCES, WITH_MONITOR
    DISTINCT_RESOURCES = args.distinct_resources
    WITH_MONITOR = args.with_monitor
    root = Path(tempfile.mkdtemp(prefix="govledger-bench-"))
    results: dict[str, Any] = {"nproc": os.cpu_count(), "python": sys.version.split()[0],
                               "distinct_resources": DISTINCT_RESOURCES,
                               "with_monitor": WITH_MONITOR,
                               "loadavg_before": os.getloadavg()}
    try:
        if args.micro:
            results["micro"] = micro(args.micro, root)
        runs = []
        for workers in args.workers:
            lat_s = args.latency_s if workers == 1 or args.latency_2 else 0.0
            for stub in ((False, True) if args.with_floor else (args.stub_engine,)):
                runs.append(asyncio.run(pipeline(root / f"w{workers}{'s' * stub}", workers,
                                                 args.requests, args.rate, lat_s,
                                                 args.profile_worker, stub)))
        results["pipeline"] = runs
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results["loadavg_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n".join(report(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
