"""Kafka offsets: high-water marks, where to resume, and the broker-wipe rule.

The embedded broker misreports or forgets offsets (DESIGN.md section 9):

* :func:`read_highwaters` uses the *fetch* high-water mark, never ``end_offsets()``
  (ListOffsets there answers "start of the last batch + 1");
* a broker whose high-water mark is below an offset we already consumed durably was wiped
  or replaced (an embedded broker restart forgets everything). :func:`rewound` is that rule,
  in one place; :func:`verify_offsets_not_rewound` refuses such a broker, and
  :func:`assign_resumed` (the processor's single-worker mode and the sequencer) logs it,
  forgets stored offsets and consumes again from 0: the wiped topics (the sequencer), or
  every input topic (the processor, ``reset_all``: its journal answers what it decided).

Which partitions a topic has is the broker's word, never a local setting
(:func:`topic_partitions`): a client configured for 4 partitions of a topic the broker holds
on 8 would never read half of it.

Pure: :func:`rewound`, :func:`plan_resume`, :func:`next_offsets`. Shell: the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from ledger.config import Settings
from ledger.errors import Unavailable
from ledger.kafka.clients import make_admin, make_consumer, stop_quietly
from ledger.kafka.topics import partition_ids

Offsets = Mapping[tuple[str, int], int]
"""(topic, partition) -> the next offset to consume."""


def rewound(expected: Offsets, reported: Offsets) -> list[tuple[tuple[str, int], int | None]]:
    """The (topic, partition) keys of ``expected`` whose ``reported`` offset is below it, or
    missing, with that reported offset (None if missing), in key order: the partitions a
    broker lost data of. Pure."""
    out: list[tuple[tuple[str, int], int | None]] = []
    for key, held in sorted(expected.items()):
        now = reported.get(key)
        if now is None or now < held:
            out.append((key, now))
    return out


def verify_offsets_not_rewound(expected: Offsets, reported: Offsets) -> None:
    """Refuse a broker whose offsets went backwards: it was wiped or replaced.

    ``expected`` maps (topic, partition) to the next offset we already hold durably (e.g.
    the sequencer's stored offsets); ``reported`` maps the same keys to what the broker says
    now (high-water mark or committed offset). A reported value below an expected one means
    the broker lost data we consumed; continuing would re-number new events as old offsets
    (DESIGN.md section 9). A partition missing from ``reported`` is treated the same way.
    Pure. Raises Unavailable naming every rewound partition.
    """
    shown = [f"{topic}[{partition}]: already consumed up to {expected[topic, partition]}, "
             f"broker reports {'missing' if now is None else now}"
             for (topic, partition), now in rewound(expected, reported)]
    if shown:
        raise Unavailable("broker offsets went backwards (broker wiped or replaced; rebuild "
                          "from the ledger before consuming): " + "; ".join(shown))


def next_offsets(records: Iterable[ConsumerRecord[bytes, bytes]]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset after the last record seen: what to store or commit."""
    offsets: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)
    return offsets


@dataclass(frozen=True, slots=True)
class Resume:
    """Where consumption resumes: ``wiped`` partitions went backwards, the stored offsets of
    the ``reset`` topics are forgotten, and each partition is sought to ``seek``."""

    wiped: tuple[TopicPartition, ...]
    reset: tuple[str, ...]
    seek: dict[TopicPartition, int]


def plan_resume(partitions: Sequence[TopicPartition], stored: Offsets,
                marks: Mapping[TopicPartition, int], *, reset_all: bool = False) -> Resume:
    """Resume ``partitions`` from the ``stored`` offsets (0 where none), except where the
    broker's high-water ``marks`` went backwards (:func:`rewound`): those topics (with
    ``reset_all``, every topic of ``partitions``) start again from 0. Pure."""
    held = {(tp.topic, tp.partition): stored.get((tp.topic, tp.partition), 0)
            for tp in partitions}
    lost = {key for key, _ in rewound(held, {(tp.topic, tp.partition): mark
                                             for tp, mark in marks.items()})}
    wiped = tuple(tp for tp in partitions if (tp.topic, tp.partition) in lost)
    scope = partitions if reset_all else wiped
    reset = tuple(dict.fromkeys(tp.topic for tp in scope)) if wiped else ()
    seek = {tp: 0 if tp.topic in reset else held[tp.topic, tp.partition] for tp in partitions}
    return Resume(wiped, reset, seek)


async def assign_resumed(consumer: AIOKafkaConsumer, settings: Settings, bootstrap: str,
                         topics: Sequence[str], stored: Offsets, *,
                         forget: Callable[[tuple[str, ...]], Awaitable[None]],
                         logger: logging.Logger, consequence: str,
                         reset_all: bool = False) -> Resume:
    """Own every partition of ``topics`` on ``consumer`` (no group) from ``stored`` offsets,
    after probing the broker's high-water marks (:func:`plan_resume`). If the broker went
    backwards: log an error naming the wiped partitions and the ``consequence``, and await
    ``forget(reset topics)`` (the caller drops their stored offsets) before seeking them
    to 0. Raises Unavailable (probe) or what ``forget`` raises."""
    parts = await topic_partitions(settings, bootstrap, topics)
    marks = await probe_highwaters(settings, bootstrap, parts)
    plan = plan_resume(parts, stored, marks, reset_all=reset_all)
    if plan.wiped:
        by_topic: dict[str, list[str]] = {}
        for tp in plan.wiped:
            by_topic.setdefault(tp.topic, []).append(str(tp.partition))
        logger.error("broker offsets went backwards on %s (broker wiped or replaced): %s",
                     ", ".join(f"{t}[{','.join(ps)}]" for t, ps in by_topic.items()),
                     consequence)
        await forget(plan.reset)
    consumer.assign(parts)
    for tp, offset in plan.seek.items():
        consumer.seek(tp, offset)
    return plan


async def topic_partitions(settings: Settings, bootstrap: str, topics: Sequence[str]
                           ) -> list[TopicPartition]:
    """Every partition of ``topics``, as the broker's metadata has them (never
    ``settings.partitions``: the broker's count wins over a local setting), topic by topic.

    Raises Unavailable if the broker does not answer within the request timeout, or a topic
    is missing or has no partitions in the metadata (never "assume N").
    """
    admin = make_admin(settings, bootstrap)
    timeout_s = settings.kafka_request_timeout_ms / 1000
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        found = await asyncio.wait_for(partition_ids(admin, topics), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise Unavailable(f"cannot read topic metadata at {bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()
    absent = [t for t in topics if not found.get(t)]
    if absent:
        raise Unavailable(f"no partitions in the broker's metadata for {', '.join(absent)} "
                          "(create the topics first: govledger topics create)")
    return [TopicPartition(t, p) for t in topics for p in found[t]]


async def read_highwaters(consumer: AIOKafkaConsumer, partitions: list[TopicPartition], *,
                          timeout_s: float = 10.0) -> dict[TopicPartition, int]:
    """The fetch high-water mark of each partition, from a consumer that owns no data.

    Requires a *dedicated* consumer (no group) that is started: the partitions are assigned
    to it and fetched, and the records returned are discarded. The fetch answer carries the
    true high-water mark; ``end_offsets()`` does not on the embedded broker (DESIGN.md 9).
    Raises Unavailable if a partition's mark is not known within ``timeout_s``.
    """
    consumer.assign(partitions)
    for tp in partitions:
        # Start near the end so the fetch moves little data. Where ListOffsets is a little
        # short (embedded broker) the fetch still returns the real high-water mark.
        await consumer.seek_to_end(tp)
    deadline = time.monotonic() + timeout_s
    marks: dict[TopicPartition, int] = {}
    try:
        while True:
            for tp in partitions:
                mark = consumer.highwater(tp)
                if mark is not None:
                    marks[tp] = mark
            if len(marks) == len(partitions):
                return marks
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions
                                 if tp not in marks)
                raise Unavailable(f"no high-water mark for {', '.join(missing)}")
            await consumer.getmany(*partitions, timeout_ms=int(min(remaining, 0.5) * 1000))
    except KafkaError as exc:
        raise Unavailable(f"reading high-water marks failed: {exc}") from exc


async def probe_highwaters(settings: Settings, bootstrap: str,
                           partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The true high-water marks, read with a dedicated probe consumer that is then closed.
    Raises Unavailable."""
    probe = make_consumer(settings, bootstrap, group_id=None)
    try:
        await probe.start()
        return await read_highwaters(probe, partitions)
    except KafkaError as exc:
        raise Unavailable(f"cannot read high-water marks at {bootstrap}: {exc}") from exc
    finally:
        await stop_quietly(probe)
