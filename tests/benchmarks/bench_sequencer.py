"""The sequencer end to end on Kafka: consume, verify, hold back, append, checkpoint. A
script, not a test.

    .venv/bin/python tests/benchmarks/bench_sequencer.py [--events 40000] [--json]

On the embedded broker (a separate process), a backlog of ``--events`` real signed envelopes
is produced first: half AuthorizationRequested (agent-signed, on gov.requests), half the
AuthorizationGranted answering each (authority-signed, on gov.decisions, so every grant has
a cause and some arrive before it). Then a SequencerWorker in this process (the one `govledger
up` runs, group commit and causal hold-back included) consumes it until every event is a
leaf under a signed checkpoint. Reported: events/s (wall), CPU per event of this process
(event loop + sequencer thread: process_time, so it is what one core spends), commits and
leaves per commit, the load average before and after (the machine is shared).

The floor of the same run, on the same backlog: (a) consume only (aiokafka getmany, no
verification), events/s and CPU per event; (b) the admission rule alone
(ledger.core.signers.verify_loggable: envelope parse, Ed25519, model), CPU per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ledger.config import Settings  # noqa: E402
from ledger.core.envelope import sign_event_with_id  # noqa: E402
from ledger.core.signers import verify_loggable  # noqa: E402
from ledger.kafka.broker import EmbeddedBroker  # noqa: E402
from ledger.kafka.clients import make_consumer  # noqa: E402
from ledger.kafka.topics import Topics, ensure_topics  # noqa: E402
from ledger.keyfiles import load_keyring, load_signer  # noqa: E402
from ledger.log.ledger_dir import open_ledger  # noqa: E402
from ledger.log.sequencer import keyring_verifier  # noqa: E402
from ledger.log.store import LedgerStore  # noqa: E402
from ledger.log.worker import SequencerWorker  # noqa: E402
from tests.factories import ALICE, request  # noqa: E402
from tests.ledger_support import grant  # noqa: E402
from tests.service_support import make_data_dir  # noqa: E402

PARTITIONS = 4


def presign(count: int, authority_key: Path) -> tuple[list[bytes], list[bytes]]:
    """``count`` events: count/2 requests and the grant of each."""
    authority = load_signer(authority_key)
    now = datetime.now(UTC).replace(microsecond=0)
    requests, grants = [], []
    for n in range(count // 2):
        envelope, request_id = sign_event_with_id(
            request(nonce=f"bench-seq-{n:012d}", issued_at=now), ALICE)
        requests.append(envelope)
        grants.append(grant(request_id, request_id, None, 0, f"bench-grant-{n:012d}",
                            signer=authority)[0])
    return requests, grants


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=b"k%d" % (n % 64))
                for n, value in enumerate(values)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def sequence(settings: Settings, bootstrap: str, topics: Topics, total: int,
                   ) -> dict[str, float]:
    keyring = load_keyring(settings.data_dir / "keyring.json")

    def opener():  # type: ignore[no-untyped-def]
        return open_ledger(settings.data_dir, keyring_verifier(keyring),
                           checkpoint_interval=settings.checkpoint_interval_s)
    with LedgerStore(settings.data_dir / "ledger.db") as store:
        genesis = store.tree_size()  # the governance genesis the first start journals
    target = genesis + total
    worker = await SequencerWorker.open(settings, bootstrap, topics, opener)
    await worker.start()
    stop = asyncio.Event()
    t0, c0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(worker.run(stop))
    while not (worker.stats.tree_size >= target and worker.stats.checkpoint_size >= target):
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stop.set()
    await task
    stats = worker.stats
    await worker.close()
    with LedgerStore(settings.data_dir / "ledger.db") as store:
        assert store.tree_size() == target, (store.tree_size(), target)
    return {"events_per_s": total / wall, "wall_s": wall, "cpu_us_per_event": cpu / total * 1e6,
            "cpu_bound_events_per_s": total / cpu, "commits": stats.batches,
            "leaves_per_commit": total / max(1, stats.batches), "late": stats.late,
            "longest_group_ms": stats.longest_group_s * 1e3}


async def consume_floor(settings: Settings, bootstrap: str, topics: list[str], total: int,
                        ) -> dict[str, float]:
    consumer = make_consumer(settings, bootstrap, group_id=None, max_poll_records=2000,
                             fetch_max_wait_ms=100)
    await consumer.start()
    try:
        from ledger.kafka.offsets import topic_partitions
        consumer.assign(await topic_partitions(settings, bootstrap, topics))
        await consumer.seek_to_beginning()
        got = 0
        t0, c0 = time.perf_counter(), time.process_time()
        while got < total:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            got += sum(len(part) for part in batches.values())
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await consumer.stop()
    return {"consume_events_per_s": total / wall, "consume_cpu_us_per_event": cpu / total * 1e6}


def verify_floor(values: list[bytes], keyring_path: Path) -> dict[str, float]:
    keyring = load_keyring(keyring_path)
    c0 = time.process_time()
    for value in values:
        verify_loggable(value, keyring)
    return {"verify_cpu_us_per_event": (time.process_time() - c0) / len(values) * 1e6}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="bench-sequencer-"))
    data = make_data_dir(root / "data")
    requests, grants = presign(args.events, data.authority_key)
    total = len(requests) + len(grants)
    load_before = os.getloadavg()
    with EmbeddedBroker() as broker:
        topics = Topics(prefix=f"b{uuid.uuid4().hex[:8]}.")
        await ensure_topics(broker.bootstrap, topics.all(), PARTITIONS, 1)
        settings = Settings(data_dir=data.root, kafka_bootstrap=broker.bootstrap,
                            partitions=PARTITIONS, topic_prefix=topics.prefix)
        # Grants produced first: half of them are consumed before their request.
        await produce(broker.bootstrap, topics.decisions, grants)
        await produce(broker.bootstrap, topics.requests, requests)
        result: dict[str, object] = {"events": total, "load_before": load_before}
        result.update(await sequence(settings, broker.bootstrap, topics, total))
        result.update(await consume_floor(settings, broker.bootstrap,
                                          [topics.requests, topics.decisions], total))
    result.update(verify_floor(requests[:2000] + grants[:2000], data.keyring))
    result["load_after"] = os.getloadavg()
    result["cpus"] = os.cpu_count()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:28} {value:.4g}" if isinstance(value, float) else f"{key:28} {value}")


if __name__ == "__main__":
    main()
