"""The sequencer on Kafka: every gov.* topic -> verified leaves -> signed checkpoints.

One process, one writer. It owns every partition of the logged topics (no consumer group:
there must be exactly one sequencer per log) and keeps its consumed offsets in the ledger,
in the same SQLite transaction as the leaves of each commit, lowered to the lowest offset of
an event still held back for its cause (ledger/log/holdback.py), so a restart neither loses
nor duplicates a leaf. A commit may hold several fetched batches (group commit: bounds
below, docs/ledger.md). Each batch is verified (``Sequencer.admit``): only events that
verify become leaves; poison input is refused here and represented in the log by the authority's
signed denial that names its hash. The dead-letter topic is never logged (its bytes are, by
definition, unauthenticated).

If the broker's offsets went backwards (the embedded broker forgets everything on restart),
the sequencer logs an error, forgets the stored offsets of the wiped topics and consumes
them from 0: the ledger dedupes by event id, so events re-published by the processor from
its journal land once. Checkpoints are signed at most every ``checkpoint_interval_s`` and,
when the tail is unsigned and nothing new arrives, by a timer, so every event is published
under a signed checkpoint within about that interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError

from ledger.config import Settings
from ledger.core.streams import LOGGED_STREAMS
from ledger.errors import Unavailable
from ledger.kafka.clients import make_consumer, stop_quietly
from ledger.kafka.idle import PacedConsumer
from ledger.kafka.offsets import assign_resumed
from ledger.kafka.topics import Topics
from ledger.kafka.tracecontext import consumer_spans, enabled, end_spans
from ledger.log.holdback import Released
from ledger.log.sequencer import Refusal, Sequencer, SubmitResult

log = logging.getLogger("govledger.sequencer")

SEQUENCER_FETCH_WAIT_MS = 100
SEQUENCER_IDLE_FETCH_WAIT_MS = 1_000  # off the decision path: an idle sequencer polls 1/s
IDLE_LOOP_MS = 1_000
GROUP_MAX_LEAVES = 8_192
GROUP_MAX_DELAY_S = 0.05
GROUP_TAKE = 500
"""Group commit (docs/ledger.md): a commit takes further already-fetched batches of at most
GROUP_TAKE records until it holds GROUP_MAX_LEAVES events or GROUP_MAX_DELAY_S have passed
since its first batch; the last batch taken adds at most its own verification (~50 ms at
~100 us an event), so an event waits at most ~100 ms longer than alone in its commit."""


@dataclass(slots=True)
class IngestStats:
    batches: int = 0
    appended: int = 0
    duplicates: int = 0
    refused: int = 0
    tree_size: int = 0
    checkpoint_size: int = 0
    checkpoint_at: float = 0.0
    late: int = 0
    held: int = 0
    longest_group_s: float = 0.0  # first event of a group ready -> its commit returned


T = TypeVar("T")


class SequencerWorker:
    """Consumes the logged topics into one :class:`~ledger.log.sequencer.Sequencer`.

    Every SQLite call runs on one dedicated thread (SQLite connections belong to the thread
    that opened them), so the event loop keeps serving while a batch commits.
    """

    @classmethod
    async def open(cls, settings: Settings, bootstrap: str, topics: Topics,
                   opener: Callable[[], Sequencer], **kwargs: object) -> SequencerWorker:
        """Open the ledger on the worker's own thread (verifies it against its checkpoint)."""
        executor = ThreadPoolExecutor(1, thread_name_prefix="sequencer")
        try:
            sequencer = await asyncio.get_running_loop().run_in_executor(executor, opener)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(settings, bootstrap, topics, sequencer, executor=executor,
                   **kwargs)  # type: ignore[arg-type]

    def __init__(self, settings: Settings, bootstrap: str, topics: Topics,
                 sequencer: Sequencer, *, max_batch: int = 2000,
                 on_batch: Callable[[SubmitResult], None] | None = None,
                 on_lag: Callable[[str, int], None] | None = None,
                 executor: ThreadPoolExecutor | None = None) -> None:
        self.executor = executor or ThreadPoolExecutor(1, thread_name_prefix="sequencer")
        self.settings = settings
        self.bootstrap = bootstrap
        self.topics = [topics.name(s) for s in LOGGED_STREAMS]
        self.sequencer = sequencer
        self.max_batch = max_batch
        self.on_batch = on_batch
        self.on_lag = on_lag
        self.stats = IngestStats()
        self._consumer: AIOKafkaConsumer | None = None
        self._fetch_wait_ms = SEQUENCER_FETCH_WAIT_MS
        self._consumed: dict[tuple[str, int], int] = {}
        self.hold_clock = 0.0  # seconds spent caught up: the hold-back's time bound

    async def start(self) -> None:
        # The sequencer is not on the decision path: a longer fetch wait costs at most that
        # much integration delay and stops it polling 20+ partitions every 10 ms (the embedded
        # broker holds every fetch for the full wait, docs/broker.md).
        self._fetch_wait_ms = max(self.settings.fetch_max_wait_ms, SEQUENCER_FETCH_WAIT_MS)
        self._consumer = make_consumer(
            self.settings, self.bootstrap, group_id=None, max_poll_records=self.max_batch,
            fetch_max_wait_ms=self._fetch_wait_ms)
        try:
            await self._consumer.start()
            await self._assign()
        except KafkaError as exc:
            await self.stop()
            raise Unavailable(f"sequencer cannot reach Kafka at {self.bootstrap}: {exc}") from exc

    async def _assign(self) -> None:
        """Own every partition from the offsets stored in the ledger; topics the broker
        lost (:func:`ledger.kafka.offsets.assign_resumed`) are stored as 0 and read again."""
        assert self._consumer is not None
        stored = await self._call(self.sequencer.store.offsets)
        self.stats.tree_size = await self._call(self.sequencer.store.tree_size)
        latest = await self._call(self.sequencer.store.latest_checkpoint)
        self.stats.checkpoint_size = 0 if latest is None else latest[0]

        async def forget(topics: tuple[str, ...]) -> None:
            # Every stored offset of those topics back to 0 (a partition with none is 0).
            reset = {key: 0 for key in stored if key[0] in topics}
            await self._call(self.sequencer.append_records, [], reset)

        await assign_resumed(self._consumer, self.settings, self.bootstrap, self.topics, stored,
                             forget=forget, logger=log, consequence="consuming them again "
                             "from 0; the ledger dedupes by event id")

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def stop(self) -> None:
        await stop_quietly(self._consumer)
        self._consumer = None

    async def close(self) -> None:
        """Stop consuming and close the ledger (on its own thread)."""
        await self.stop()
        await self._call(self.sequencer.close)
        self.executor.shutdown(wait=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; sign the tail on the checkpoint timer."""
        assert self._consumer is not None, "start() first"
        interval = self.settings.checkpoint_interval_s
        paced = PacedConsumer(self._consumer, self._fetch_wait_ms, max(
            SEQUENCER_IDLE_FETCH_WAIT_MS, self.settings.kafka_idle_fetch_max_wait_ms))
        while not stop.is_set():
            # Wake for the checkpoint timer only while the tail is unsigned, and for the
            # hold-back's time bound while events are held (getmany returns on the first
            # records anyway): an idle sequencer loops once a second.
            busy = self.stats.tree_size > self.stats.checkpoint_size or self.stats.held
            started = time.monotonic()
            try:
                batches = await paced.getmany(
                    timeout_ms=int(min(interval, 0.2) * 1000) if busy else IDLE_LOOP_MS,
                    max_records=self.max_batch)
            except KafkaError as exc:
                raise Unavailable(f"sequencer consume failed: {exc}") from exc
            records = [r for part in batches.values() for r in part]
            # A span per traced record, over the append (ledger.kafka.tracecontext).
            spans = consumer_spans("govledger.sequence", records) if records and enabled() else ()
            try:
                await self.ingest(records)
            finally:
                end_spans(spans)
            if await self._caught_up():
                self.hold_clock += time.monotonic() - started
            if self.on_lag is not None:
                await self._report_lag()
            await self.publish_if_due()

    async def ingest(self, records: list[ConsumerRecord[bytes, bytes]]) -> SubmitResult | None:
        """One group commit: admit ``records`` and, while more are already fetched, further
        batches (up to GROUP_MAX_LEAVES released events or GROUP_MAX_DELAY_S after the
        first), plus held events past their time bound; then append them and the consumer
        offsets in one transaction. None if there was nothing to write. Raises Unavailable
        or ProofError (the worker stops; nothing of the group is stored)."""
        assert self._consumer is not None
        released: list[Released] = []
        refused: list[Refusal] = []
        consumed = bool(records)
        started = first_ready = time.monotonic()
        while records:
            for record in records:
                key = (record.topic, record.partition)
                self._consumed[key] = max(self._consumed.get(key, 0), record.offset + 1)
            admitted = await self._call(
                self.sequencer.admit, [r.value or b"" for r in records],
                [(r.topic, r.partition, r.offset) for r in records], self.hold_clock)
            if not released and admitted.released:
                first_ready = time.monotonic()  # the group's first event could go now
            released += admitted.released
            refused += admitted.refused
            if (len(released) >= GROUP_MAX_LEAVES
                    or time.monotonic() - started >= GROUP_MAX_DELAY_S):
                break
            try:
                more = await self._consumer.getmany(timeout_ms=0, max_records=GROUP_TAKE)
            except KafkaError as exc:
                raise Unavailable(f"sequencer consume failed: {exc}") from exc
            records = [r for part in more.values() for r in part]
        released += await self._call(self.sequencer.expire, self.hold_clock)
        if not (consumed or released):
            return None
        result = await self._call(self.sequencer.commit, released, dict(self._consumed),
                                  refused)
        self.stats.longest_group_s = max(self.stats.longest_group_s,
                                         time.monotonic() - first_ready)
        self._account(result)
        return result

    def _account(self, result: SubmitResult) -> None:
        stats = self.stats
        stats.batches += 1
        stats.appended += result.appended
        stats.duplicates += result.duplicates
        stats.refused += len(result.refused)
        stats.late += len(result.late)
        stats.held = len(self.sequencer.holdback)
        stats.tree_size = result.tree_size
        if result.checkpoint is not None:
            stats.checkpoint_size, stats.checkpoint_at = result.tree_size, time.time()
        if result.late:
            first = result.late[0].arrival
            log.warning("sequencer appended %d events without their causes (%s); first: %s "
                        "%s waited for %s", len(result.late), ", ".join(
                            f"{r}={n}" for r, n in sorted(result.late_by_reason().items())),
                        first.record.kind, first.record.event_id[:16],
                        ", ".join(sorted(c.event_id[:16] for c in first.causes)))
        if self.on_batch is not None:
            self.on_batch(result)

    async def _caught_up(self) -> bool:
        """Whether every assigned partition has been read up to its fetched high-water
        mark. The hold-back's time bound runs on :attr:`hold_clock`, which advances only
        while this is so: reading a backlog, a cause is usually still on Kafka behind the
        consumer, not missing, and the event waits for it (the count and byte bounds still
        hold)."""
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            mark = self._consumer.highwater(tp)
            if mark is None or await self._consumer.position(tp) < mark:
                return False
        return True

    async def _report_lag(self) -> None:
        """Per topic: fetch high-water mark minus our position, over its partitions."""
        assert self._consumer is not None
        assert self.on_lag is not None
        lag: dict[str, int] = {}
        for tp in self._consumer.assignment():
            mark = self._consumer.highwater(tp)
            if mark is not None:
                position = await self._consumer.position(tp)
                lag[tp.topic] = lag.get(tp.topic, 0) + max(0, mark - position)
        for topic, value in lag.items():
            self.on_lag(topic, value)

    async def publish_if_due(self) -> None:
        """Sign the unsigned tail once the checkpoint interval has passed."""
        if self.stats.tree_size > self.stats.checkpoint_size and (
                time.time() - self.stats.checkpoint_at >= self.settings.checkpoint_interval_s):
            await self._call(self.sequencer.publish)
            self.stats.checkpoint_size, self.stats.checkpoint_at = (
                self.stats.tree_size, time.time())
