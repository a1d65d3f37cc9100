"""Kafka plumbing against the real embedded broker: keys, order, topics, groups, offsets."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer

from ledger.config import Settings
from ledger.errors import ConfigError, Unavailable
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.clients import (
    TopicPartition,
    make_consumer,
    make_producer,
    partition_for,
    publish_keyed,
)
from ledger.kafka.offsets import read_highwaters, verify_offsets_not_rewound
from ledger.kafka.topics import Topics, ensure_topics

pytestmark = pytest.mark.integration

# Tests join groups with a short session: each join waits half of it on this broker.
FAST_GROUP = {"session_timeout_ms": 2_000, "heartbeat_interval_ms": 600}


async def produce(settings: Settings, bootstrap: str, topic: str,
                  messages: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(settings, bootstrap)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await producer.flush()
        for future in futures:
            await future
    finally:
        await producer.stop()


async def drain(consumer: AIOKafkaConsumer, count: int,
                timeout_s: float = 20.0) -> list[tuple[int, int, bytes, bytes]]:
    """Read exactly ``count`` records as (partition, offset, key, value)."""
    got: list[tuple[int, int, bytes, bytes]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(got) < count and loop.time() < deadline:
        batches = await consumer.getmany(timeout_ms=200, max_records=count - len(got))
        for records in batches.values():
            got += [(r.partition, r.offset, r.key, r.value) for r in records]
    assert len(got) == count, f"read {len(got)} of {count} records"
    return got


def partitions(topic: str, count: int = 4) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(count)]


def test_same_key_same_partition_in_order(broker: EmbeddedBroker, topics: Topics,
                                          kafka_settings: Settings) -> None:
    keys = [f"lineage-{i}".encode() for i in range(8)]
    messages = [(keys[i % 8], f"{i % 8}:{i}".encode()) for i in range(200)]

    async def run() -> list[tuple[int, int, bytes, bytes]]:
        await produce(kafka_settings, broker.bootstrap, topics.requests, messages)
        consumer = make_consumer(kafka_settings, broker.bootstrap, group_id=None)
        await consumer.start()
        try:
            consumer.assign(partitions(topics.requests))
            await consumer.seek_to_beginning()
            return await drain(consumer, len(messages))
        finally:
            await consumer.stop()

    records = asyncio.run(run())
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for partition, _, key, value in sorted(records, key=lambda r: (r[0], r[1])):
        by_key[key].append(value)
        partition_of[key].add(partition)
    assert all(len(p) == 1 for p in partition_of.values())
    assert len({next(iter(p)) for p in partition_of.values()}) > 1  # keys do spread
    for key, values in by_key.items():
        expected = [v for k, v in messages if k == key]
        assert values == expected


def test_publish_keyed_lands_where_send_would_in_order(broker: EmbeddedBroker, topics: Topics,
                                                        kafka_settings: Settings) -> None:
    """Batched publishing: every message on its key's default-partitioner partition, in
    order per key, across two topics, including messages larger than one batch."""
    keys = [f"root-{i}".encode() for i in range(16)]
    big = b"x" * 40_000  # above the producer's 16 KiB batch size: its own batch
    messages = [(topics.decisions if i % 3 else topics.verdicts, keys[i % 16],
                 (big if i % 97 == 0 else b"") + f"{i}".encode()) for i in range(600)]

    async def run() -> list[tuple[str, int, int, bytes, bytes]]:
        producer = make_producer(kafka_settings, broker.bootstrap)
        await producer.start()
        try:
            await publish_keyed(producer, messages[:300])
            await publish_keyed(producer, messages[300:])
        finally:
            await producer.stop()
        consumer = make_consumer(kafka_settings, broker.bootstrap, group_id=None)
        await consumer.start()
        try:
            consumer.assign(partitions(topics.decisions) + partitions(topics.verdicts))
            await consumer.seek_to_beginning()
            got: list[tuple[str, int, int, bytes, bytes]] = []
            for _ in range(100):
                if len(got) >= len(messages):
                    break
                batches = await consumer.getmany(timeout_ms=200)
                got += [(r.topic, r.partition, r.offset, r.key, r.value)
                        for records in batches.values() for r in records]
            return got
        finally:
            await consumer.stop()

    records = asyncio.run(run())
    assert len(records) == len(messages)
    seen: dict[tuple[str, bytes], list[bytes]] = defaultdict(list)
    for topic, partition, _, key, value in sorted(records, key=lambda r: r[:3]):
        assert partition == partition_for(key, 4)
        seen[(topic, key)].append(value)
    for (topic, key), values in seen.items():
        assert values == [v for t, k, v in messages if (t, k) == (topic, key)]


def test_ensure_topics_is_idempotent_and_checks_partitions(broker: EmbeddedBroker) -> None:
    names = Topics(prefix=f"e{uuid.uuid4().hex[:10]}.")

    async def run() -> None:
        created = await ensure_topics(broker.bootstrap, names.all(), 3, 1)
        assert created == dict.fromkeys(names.all(), 3)
        again = await ensure_topics(broker.bootstrap, [names.requests, names.verdicts], 3, 1)
        assert again == {names.requests: 3, names.verdicts: 3}
        with pytest.raises(ConfigError, match="wrong partition count"):
            await ensure_topics(broker.bootstrap, [names.requests], 5, 1)
        with pytest.raises(ConfigError, match="invalid Kafka topic name"):
            await ensure_topics(broker.bootstrap, ["bad topic"], 3, 1)

    asyncio.run(run())


def test_ensure_topics_on_a_dead_bootstrap_is_unavailable() -> None:
    from ledger.kafka.broker import free_port

    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable):
        asyncio.run(ensure_topics(dead, ["x.requests"], 1, 1, timeout_s=2))


def test_highwater_counts_every_message_per_partition(broker: EmbeddedBroker, topics: Topics,
                                                      kafka_settings: Settings) -> None:
    messages = [(f"k{i % 5}".encode(), b"v%d" % i) for i in range(37)]

    async def run() -> dict[TopicPartition, int]:
        await produce(kafka_settings, broker.bootstrap, topics.decisions, messages)
        await produce(kafka_settings, broker.bootstrap, topics.decisions, messages[:3])
        probe = make_consumer(kafka_settings, broker.bootstrap, group_id=None)
        await probe.start()
        try:
            return await read_highwaters(probe, partitions(topics.decisions))
        finally:
            await probe.stop()

    marks = asyncio.run(run())
    assert sum(marks.values()) == 40
    assert set(marks) == set(partitions(topics.decisions))


def test_consumer_group_commit_then_resume_where_it_left_off(
        broker: EmbeddedBroker, topics: Topics, kafka_settings: Settings) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    messages = [(b"one-key", b"m%03d" % i) for i in range(30)]

    async def run() -> tuple[list[bytes], list[bytes]]:
        await produce(kafka_settings, broker.bootstrap, topics.requests, messages)
        first = make_consumer(kafka_settings, broker.bootstrap, topics.requests,
                              group_id=group, **FAST_GROUP)
        await first.start()
        try:
            head = [v for *_, v in await drain(first, 12)]
            await first.commit()  # commits the position after the 12 records read
        finally:
            await first.stop()
        second = make_consumer(kafka_settings, broker.bootstrap, topics.requests,
                               group_id=group, **FAST_GROUP)
        await second.start()
        try:
            tail = [v for *_, v in await drain(second, 18)]
        finally:
            await second.stop()
        return head, tail

    head, tail = asyncio.run(run())
    assert head + tail == [v for _, v in messages]


def test_broker_restart_is_detected_as_offsets_going_backwards(
        kafka_settings: Settings) -> None:
    """A restart wipes the memory store; the stored offsets then exceed the broker's."""
    names = Topics(prefix="restart.")
    tps = partitions(names.requests, 2)

    async def marks(bootstrap: str) -> dict[tuple[str, int], int]:
        probe = make_consumer(kafka_settings, bootstrap, group_id=None)
        await probe.start()
        try:
            found = await read_highwaters(probe, tps)
        finally:
            await probe.stop()
        return {(tp.topic, tp.partition): n for tp, n in found.items()}

    async def run() -> None:
        async with EmbeddedBroker() as own:
            await ensure_topics(own.bootstrap, [names.requests], 2, 1)
            await produce(kafka_settings, own.bootstrap, names.requests,
                          [(b"k%d" % (i % 3), b"v") for i in range(10)])
            stored = await marks(own.bootstrap)
            assert sum(stored.values()) == 10
            verify_offsets_not_rewound(stored, stored)  # same broker: fine

            await asyncio.to_thread(own.restart)
            await ensure_topics(own.bootstrap, [names.requests], 2, 1)
            now = await marks(own.bootstrap)
            assert sum(now.values()) == 0
            with pytest.raises(Unavailable, match="offsets went backwards"):
                verify_offsets_not_rewound(stored, now)

    asyncio.run(run())
