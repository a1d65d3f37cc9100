"""What tracing costs the hot paths when it is OFF (no OTLP endpoint), in-process, no Kafka
(not a pytest file):

    .venv/bin/python tests/benchmarks/bench_tracing_off.py [--batches 40] [--batch 250]

(a) ``DecisionWorker._decide`` as it is (with the ``tracecontext.enabled()`` guard) against
    the loop it replaced (``engine.handle`` per record, copied below), on fresh pre-signed
    policy-valid requests, alternating A/B blocks so drift on a shared machine hits both;
    the floor (min) and the median per decision of each are printed;
(b) the guards alone: ``tracecontext.enabled()`` (the worker, the sequencer, per batch) and
    ``tracecontext.active()`` (the SDK, per send), in ns per call;
(c) with tracing ON (a provider with no exporter), ``_decide`` per decision, for scale.
Prints the load average and the CPU this process used: the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Sequence
from pathlib import Path

from aiokafka import ConsumerRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ledger.kafka import tracecontext
from ledger.kafka.topics import Topics
from processors.app import build_engine
from processors.journal import Journal
from processors.worker import YIELD_EVERY, DecisionWorker, Handled
from tests.benchmarks.bench_pipeline import bench_settings, presign
from tests.service_support import make_data_dir


def records(topic: str, envelopes: Sequence[bytes]) -> list[ConsumerRecord[bytes, bytes]]:
    return [ConsumerRecord(topic, 0, n, 0, 0, b"k", env, None, 1, len(env), [])
            for n, env in enumerate(envelopes)]


async def decide_before(worker: DecisionWorker, batch: Sequence[ConsumerRecord[bytes, bytes]]
                        ) -> list[Handled]:
    """``_decide`` as it was before tracing (main at e4ab603), for one worker without a
    group."""
    now = worker.clock()
    handled: list[Handled] = []
    for n, record in enumerate(batch, 1):
        stream = worker._stream_of[record.topic]
        raw = record.value if record.value is not None else b""
        handled.append((stream, now, raw, worker.engine.handle(stream, raw, now)))
        if n % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    return handled


def run(fn: object, batch: list[ConsumerRecord[bytes, bytes]]) -> float:
    started = time.perf_counter()
    asyncio.run(fn(batch))  # type: ignore[operator]
    return (time.perf_counter() - started) / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=250)
    args = parser.parse_args()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data_dir(Path(tmp) / "data").root
        settings = bench_settings(data)
        topics = Topics()
        worker = DecisionWorker(settings, "unused:9092", topics, build_engine(settings),
                                Journal(data / "processor.db"))
        topic = topics.name("requests")
        total = args.batches * args.batch * 2 + args.batch * 4
        signed = [env for _, env in presign(total, "off")]
        batches = [records(topic, signed[i:i + args.batch])
                   for i in range(0, len(signed), args.batch)]
        after: list[float] = []
        before: list[float] = []
        for n in range(args.batches):  # alternate the order, so drift hits both
            pair = [(after, worker._decide), (before, lambda b: decide_before(worker, b))]
            if n % 2:
                pair.reverse()
            for i, (times, fn) in enumerate(pair):
                times.append(run(fn, batches[2 * n + i]))
        guard_enabled = min(timeit.repeat(tracecontext.enabled, number=200_000, repeat=5))
        guard_active = min(timeit.repeat(tracecontext.active, number=200_000, repeat=5))
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        trace.set_tracer_provider(TracerProvider())
        tracecontext.enable()
        on = [run(worker._decide, b) for b in batches[2 * args.batches:]]
        worker.journal.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    us = 1e6
    print(f"decide, tracing off, current code : floor {min(after) * us:7.1f} us  median "
          f"{statistics.median(after) * us:7.1f} us per decision ({len(after)} batches)")
    print(f"decide, tracing off, before change: floor {min(before) * us:7.1f} us  median "
          f"{statistics.median(before) * us:7.1f} us per decision ({len(before)} batches)")
    print(f"decide, tracing ON (no exporter)  : floor {min(on) * us:7.1f} us  median "
          f"{statistics.median(on) * us:7.1f} us per decision ({len(on)} batches)")
    print(f"guard tracecontext.enabled(): {guard_enabled / 200_000 * 1e9:.0f} ns; "
          f"tracecontext.active(): {guard_active / 200_000 * 1e9:.0f} ns per call")
    print(f"batch {args.batch}; CPU this process {cpu1.ru_utime - cpu0.ru_utime:.1f} s user "
          f"{cpu1.ru_stime - cpu0.ru_stime:.1f} s sys; load average {os.getloadavg()} "
          "(a shared machine)")


if __name__ == "__main__":
    main()
