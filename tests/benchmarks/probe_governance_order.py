"""Probe (issue 13): does a consumer with a backlog hand out records produced after a
governance record before it? No govledger service: the embedded broker, one aiokafka consumer
built as the processor builds its own (``make_consumer``, 500 records a batch), a decision
simulated by ``--work-us`` of blocking CPU per record.

    .venv/bin/python tests/benchmarks/probe_governance_order.py [--before 1000]
        [--after 1000] [--work-us 500] [--fetch-wait-ms 500] [--drain-governance]

Produces ``--before`` records to a 4-partition ``E`` topic, one record to the 1-partition
``G`` topic (acknowledged), then ``--after`` records to ``E``, while the consumer consumes;
within a batch ``G`` records are taken first (as the processor sorts them). Prints where
``G`` was consumed and how many records produced after it were consumed before it.
``--drain-governance``: before and after each batch, also take what is buffered for ``G``
(``getmany(G, timeout_ms=0)``), the change that would put it ahead of requests.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiokafka import AIOKafkaConsumer, TopicPartition

from ledger.config import Settings
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.clients import make_consumer, make_producer
from ledger.kafka.topics import ensure_topics

G = TopicPartition("G", 0)


async def batch(consumer: AIOKafkaConsumer, drain: bool) -> list[Any]:
    """One batch as the processor would take it (governance first within it)."""
    got: dict[TopicPartition, list[Any]] = {}
    if drain:
        got = dict(await consumer.getmany(G, timeout_ms=0))
    if not got:
        got = dict(await consumer.getmany(timeout_ms=200, max_records=500))
        if drain:  # and what came in the same fetch response
            for tp, records in (await consumer.getmany(G, timeout_ms=0)).items():
                got[tp] = got.get(tp, []) + records
    records = [r for part in got.values() for r in part]
    return sorted(records, key=lambda r: r.topic != "G")


async def probe(args: argparse.Namespace) -> tuple[int, int]:
    broker = EmbeddedBroker(start_timeout_s=60)
    await broker.astart()
    try:
        await ensure_topics(broker.bootstrap, ["E", "G"], 4, 1, single=["G"])
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_idempotent=False,
                            kafka_fetch_max_wait_ms=args.fetch_wait_ms)
        producer = make_producer(settings, broker.bootstrap)
        consumer = make_consumer(settings, broker.bootstrap, group_id=None,
                                 max_poll_records=500)
        await producer.start()
        await consumer.start()
        parts = [TopicPartition("E", p) for p in range(4)] + [G]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, 0)
        seen: list[bytes] = []
        total = args.before + args.after + 1

        async def consume() -> None:
            while len(seen) < total:
                records = await batch(consumer, args.drain_governance)
                seen.extend(r.value for r in records)
                time.sleep(args.work_us * 1e-6 * len(records))  # deciding blocks the loop
                await asyncio.sleep(0)
        task = asyncio.create_task(consume())

        async def produce(topic: str, tag: str, count: int) -> None:
            for i in range(0, count, 250):
                await asyncio.gather(*(producer.send_and_wait(
                    topic, f"{tag}-{j}".encode(), key=str(j).encode())
                    for j in range(i, min(count, i + 250))))
        await produce("E", "before", args.before)
        await producer.send_and_wait("G", b"G", key=b"g")
        await produce("E", "after", args.after)
        await asyncio.wait_for(task, 300)
        await consumer.stop()
        await producer.stop()
    finally:
        await broker.astop()
    at = seen.index(b"G")
    return at, sum(v.startswith(b"after") for v in seen[:at])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=int, default=1000)
    parser.add_argument("--after", type=int, default=1000)
    parser.add_argument("--work-us", type=float, default=500.0)
    parser.add_argument("--fetch-wait-ms", type=int, default=500)
    parser.add_argument("--drain-governance", action="store_true")
    args = parser.parse_args(argv)
    at, overtaken = asyncio.run(probe(args))
    print(f"fetch wait {args.fetch_wait_ms} ms, {args.work_us:.0f} us per record, drain "
          f"governance {args.drain_governance}: G consumed as record #{at} of "
          f"{args.before + args.after + 1}; records produced after G consumed before it: "
          f"{overtaken} of {args.after}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
