"""The decision worker: Kafka bytes in -> Engine -> journal -> signed outputs out -> commit.

The loop, per batch of records (``getmany``, partition order preserved):

1. take the arrival time once for the batch (the processor's clock, never the client's);
2. catch up with journal entries other workers wrote (shared ``processor.db``), so a partition
   that moved here after a rebalance is decided with its full history (in a group, the
   lineage effects of trees on partitions this worker never owned wait until it gets one:
   see processors/catchup.py);
3. ``Engine.handle`` each record: pure, never raises ``Rejected``;
4. write inputs and outcomes to the journal in one transaction (durable before anything is
   published or committed);
5. produce every output keyed by its lineage root, await all acknowledgements, advance the
   journal's published watermark;
6. commit the consumed offsets.

When no record arrives, a single worker (not a group member) ends the pending approvals that
can no longer be granted (``Engine.expire``: a deadline passed, also while it was down) and
journals and publishes their denials the same way, in order with the batches.

A crash between any two steps is safe: before 4, Kafka redelivers and the batch is decided
afresh; after 4, the restored engine answers redeliveries with the stored bytes, and on
start :meth:`DecisionWorker.start` re-publishes journal outputs past the watermark.
``Unavailable`` (journal or broker failure) escapes and stops the worker: never a grant,
never a dropped message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError

from ledger.clock import utc_now
from ledger.config import Settings
from ledger.core.streams import INPUT_STREAMS, TREE_STREAMS, Stream
from ledger.errors import ConfigError, Unavailable
from ledger.kafka import tracecontext
from ledger.kafka.clients import (
    make_consumer,
    make_producer,
    publish_keyed,
    stop_quietly,
)
from ledger.kafka.idle import PacedConsumer
from ledger.kafka.offsets import assign_resumed, next_offsets
from ledger.kafka.topics import Topics
from processors.catchup import CatchUp, freeze_survivors
from processors.core.engine import Engine
from processors.core.outcomes import Outcome, Output
from processors.intake import governance_ahead
from processors.journal import Journal
from processors.reconcile import Reconciler
from processors.reconcile_loop import RECONCILE_GRACE_S, ReconcileLoop
from processors.tracing import decide_traced, log_decisions
from processors.tracing import log as decisions_log

log = logging.getLogger("govledger.processor")

GROUP_ID = "govledger-processors"
YIELD_EVERY = 64
MAX_IN_FLIGHT = 4  # decided batches waiting for the committer
FREEZE_EVERY_S = 1.0
Handled = tuple[Stream, datetime, bytes, Outcome]


@dataclass(slots=True)
class WorkerStats:
    batches: int = 0
    decided: int = 0
    redelivered: int = 0
    granted: int = 0
    denied: int = 0
    last_batch_s: float = 0.0
    observers: list[Callable[[Outcome, float], None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Decided:
    """A decided batch waiting for the committer."""

    records: Sequence[ConsumerRecord[bytes, bytes]]
    handled: list[Handled]
    started: float


class DecisionWorker:
    """One decision worker process member of the ``govledger-processors`` group."""

    def __init__(self, settings: Settings, bootstrap: str, topics: Topics, engine: Engine,
                 journal: Journal, *, clock: Callable[[], datetime] = utc_now,
                 max_batch: int = 500, use_group: bool = False,
                 reconciler: Reconciler | None = None,
                 reconcile_grace_s: float = RECONCILE_GRACE_S) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topics = topics
        self.engine = engine
        self.journal = journal
        self.clock = clock
        self.max_batch = max_batch
        self.use_group = use_group
        self.stats = WorkerStats()
        self.catchup = CatchUp(engine, journal, group=use_group)
        self._published: int | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stream_of = {topics.name(s.value): s for s in INPUT_STREAMS}
        self._tree_topics = {topics.name(s.value) for s in TREE_STREAMS}
        self._topic_of = {s: topics.name(s.value) for s in Stream}
        self._writer: ThreadPoolExecutor | None = None  # the journal thread, while running
        # id(output) -> its trace headers, from decision to publication (tracing on only)
        self._trace_headers: dict[int, tracecontext.Headers] = {}
        # The journal against the ledger (processors/reconcile.py), on a thread of its own.
        self.reconcile_loop = ReconcileLoop(reconciler, self._publish,
                                            grace_s=reconcile_grace_s)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild from the ledger what the journal lacks, restore state from the journal,
        journal the policy in force, connect, publish everything past the watermark and
        what the ledger lacks. Raises Unavailable (Kafka, SQLite, a journal that cannot be
        rebuilt) or ConfigError (no ledger)."""
        await self.reconcile_loop.rebuild(self.clock())
        restored = self.catch_up()
        if self.engine.governance.position == 0:
            raise ConfigError("the processor restored no governance (no genesis in the "
                              "ledger or the journal): start it with `govledger up`, which "
                              "writes the genesis on first start")
        log.info("processor restored %d journal entries", restored)
        # The worker holds every journaled outcome in memory (unless the cache overflowed):
        # its misses need no journal lookup. A single worker owns every partition, so that
        # stays true. In a group, catch_up before each batch makes it true again; an input
        # another worker decides meanwhile (a rebalance race) meets the journal's refusal of
        # a second decision (Journal.append), so none is ever published.
        state = self.engine.state
        state.complete = not state.evicted
        freeze_survivors()
        self._producer = make_producer(self.settings, self.bootstrap)
        if self.use_group:
            # Range first, not aiokafka's default round robin: partition p of every input
            # topic goes to the same worker, so a tree's requests, revocations and executions
            # are decided in one place (round robin splits them once a group has 3 workers).
            # Round robin stays on offer so workers of an older release can share the group
            # during an upgrade (the group uses what every member offers).
            self._consumer = make_consumer(
                self.settings, self.bootstrap, *self._stream_of, group_id=GROUP_ID,
                max_poll_records=self.max_batch,
                partition_assignment_strategy=(RangePartitionAssignor,
                                               RoundRobinPartitionAssignor))
        else:
            self._consumer = make_consumer(self.settings, self.bootstrap, group_id=None,
                                           max_poll_records=self.max_batch)
        try:
            await self._producer.start()
            await self._consumer.start()
            since = self.journal.published_seq()
            wiped = not self.use_group and await self._assign_from_journal()
        except KafkaError as exc:
            await self.stop()
            raise Unavailable(f"processor cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        # A wiped broker lost the inputs too: every journaled output is published again (so
        # clients see their decisions), and every journaled input the ledger lacks.
        if wiped:  # inputs first: a decision should not reach the ledger before its request
            await self.reconcile_loop.inputs_after_wipe()
        await self.republish(0 if wiped else since)

    async def _assign_from_journal(self) -> bool:
        """Own every input partition (single-worker mode) from the journal's offsets.

        Returns True when the broker's offsets went backwards (an embedded broker restart
        wipes everything): state is intact in the journal, so consumption restarts at 0 and
        the caller re-publishes every journaled output. The journal, not the broker, is the
        record (DESIGN.md section 9).
        """
        assert self._consumer is not None

        async def forget(topics: tuple[str, ...]) -> None:
            self.journal.reset_offsets(topics)

        resumed = await assign_resumed(
            self._consumer, self.settings, self.bootstrap, list(self._stream_of),
            self.journal.offsets(), forget=forget, logger=log,
            consequence="continuing from the journal", reset_all=True)
        return bool(resumed.wiped)

    def _journal_thread(self) -> ThreadPoolExecutor:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        return self._writer

    async def reconcile(self) -> int:
        """One reconciliation round now (:meth:`ReconcileLoop.round`). Raises Unavailable."""
        return await self.reconcile_loop.round()

    async def stop(self) -> None:
        await self.reconcile_loop.close()
        if self._published is not None:
            try:
                self.journal.mark_published(self._published)
            except Unavailable as exc:  # the next start re-publishes the tail: harmless
                log.warning("could not record the published watermark: %s", exc)
        await stop_quietly(self._consumer, self._producer)
        self._consumer = self._producer = None
        if self._writer is not None:  # let a journal write in progress finish, off the loop
            writer, self._writer = self._writer, None
            await asyncio.get_running_loop().run_in_executor(None, writer.shutdown)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set. Raises Unavailable on broker or journal failure.

        Pipelined: one committer task journals (on the writer thread), publishes and commits
        the decided batches strictly one after the other, while this loop already decides
        the next ones; at most ``MAX_IN_FLIGHT`` decided batches wait for it. If a batch
        fails, the committer stops there, so no later batch is journaled (its offsets would
        skip the failed one) or published, and the failure stops the worker.
        """
        assert self._consumer is not None, "start() first"
        queue: asyncio.Queue[_Decided | None] = asyncio.Queue(maxsize=MAX_IN_FLIGHT)
        committer = asyncio.create_task(self._commit_in_order(queue))
        reconciling = asyncio.create_task(self.reconcile_loop.every(stop))
        paced = PacedConsumer(self._consumer, self.settings.fetch_max_wait_ms,
                              self.settings.kafka_idle_fetch_max_wait_ms)
        next_freeze = time.monotonic() + FREEZE_EVERY_S
        try:
            while not stop.is_set():
                try:
                    batches = await paced.getmany(timeout_ms=200, max_records=self.max_batch)
                except KafkaError as exc:
                    raise Unavailable(f"processor consume failed: {exc}") from exc
                if committer.done():
                    break  # failed: its exception is raised below
                if reconciling.done() and not stop.is_set():
                    reconciling.result()  # raises what stopped it (Unavailable)
                records = [r for part in batches.values() for r in part]
                if records:  # governance first, also what the fetch buffer still holds
                    records = await governance_ahead(
                        self._consumer, self._topic_of[Stream.GOVERNANCE], records,
                        self.max_batch)
                started = time.perf_counter()
                handled = await self._decide(records) if records else self._expired()
                if not handled:
                    continue
                put = asyncio.ensure_future(queue.put(_Decided(records, handled, started)))
                await asyncio.wait({put, committer}, return_when=asyncio.FIRST_COMPLETED)
                if not put.done():
                    put.cancel()
                    break
                if time.monotonic() >= next_freeze:
                    freeze_survivors()
                    next_freeze = time.monotonic() + FREEZE_EVERY_S
        finally:
            reconciling.cancel()
            # Finish what was decided (or surface the committer's failure) before stopping.
            if not committer.done():
                await queue.put(None)
            await committer
            with contextlib.suppress(asyncio.CancelledError):
                await reconciling

    async def _commit_in_order(self, queue: asyncio.Queue[_Decided | None]) -> None:
        """Journal, publish and commit decided batches in order; whatever has queued up
        meanwhile goes in one journal transaction and one publish (group commit)."""
        done = False
        while not done:
            group = [await queue.get()]
            while not queue.empty():
                group.append(queue.get_nowait())
            if group[-1] is None:
                done = True
            batches = [b for b in group if b is not None]
            if batches:
                await self._finish([r for b in batches for r in b.records],
                                   [h for b in batches for h in b.handled], batches[0].started)

    # -- the batch -------------------------------------------------------------------------

    def catch_up(self) -> int:
        """Apply the journal entries written since we last looked, by this worker or by the
        group's others (processors/catchup.py). Returns how many. Raises Unavailable."""
        return self.catchup.run()

    async def process(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Outcome]:
        """Steps 1-6 of the module docstring for one batch, not pipelined."""
        started = time.perf_counter()
        return await self._finish(records, await self._decide(records), started)

    def _expired(self) -> list[Handled]:
        """Pending approvals ended without an input (``Engine.expire``), as journal entries.
        Not in a group: there a tree's worker can change between two batches, and only the
        one deciding the tree may answer for it (its next input ends them)."""
        if self.use_group:
            return []
        now = self.clock()
        return [(Stream.DECISIONS, now, raw, outcome) for raw, outcome in self.engine.expire(now)]

    async def _decide(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Handled]:
        """Steps 1-3: decide every record of the batch at one arrival time."""
        now = self.clock()
        if self.use_group:
            assert self._consumer is not None
            await self.catchup.load_assigned(self._consumer, self._tree_topics, [
                r for r in records if r.topic in self._tree_topics])
            self.catch_up()  # other workers' entries (a single worker has them all)
        handled: list[Handled] = []
        # Governance first: a suspension or a key that arrived with requests governs them.
        records = sorted(records, key=lambda r: self._stream_of[r.topic] is not Stream.GOVERNANCE)
        traced = tracecontext.enabled()
        for n, record in enumerate(records, 1):
            stream = self._stream_of[record.topic]
            raw = record.value if record.value is not None else b""
            if traced:  # the trace context travels on with every output (processors/tracing)
                outcome, headers = decide_traced(self.engine, stream, raw, now, record)
                self._trace_headers.update((id(o), headers) for o in outcome.outputs)
            else:
                outcome = self.engine.handle(stream, raw, now)
            handled.append((stream, now, raw, outcome))
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let the API and the sequencer breathe
        return handled

    async def _finish(self, records: Sequence[ConsumerRecord[bytes, bytes]],
                      handled: list[Handled], started: float) -> list[Outcome]:
        """Steps 4-6: journal (on the writer thread, so the event loop keeps running during
        the fsync), publish, commit."""
        offsets = None if self.use_group else next_offsets(records)
        last = await asyncio.get_running_loop().run_in_executor(
            self._journal_thread(), self.journal.append, handled, offsets, self._published)
        await self._publish([o for *_, outcome in handled for o in outcome.outputs])
        self._published = max(last, self._published or 0)  # written with a later batch
        if self.use_group:
            if records:
                await self._commit(records)
        else:
            self.catchup.applied_seq = max(last, self.catchup.applied_seq)
        outcomes = [outcome for *_, outcome in handled]
        self._count(outcomes, time.perf_counter() - started)
        if decisions_log.isEnabledFor(logging.DEBUG):
            log_decisions(outcomes)
        return outcomes

    async def republish(self, since_seq: int) -> int:
        """Publish every journaled output after ``since_seq`` again (consumers dedupe by id)."""
        outputs = list(self.journal.outputs_since(since_seq))
        if outputs:
            log.info("re-publishing %d journaled outputs past the watermark", len(outputs))
            await self._publish(outputs)
            self.journal.mark_published(self.catchup.applied_seq)
        return len(outputs)

    async def _publish(self, outputs: Sequence[Output]) -> None:
        if not outputs:
            return
        assert self._producer is not None
        headers = None
        if self._trace_headers:
            headers = [self._trace_headers.pop(id(o), None) for o in outputs]
        try:
            await publish_keyed(self._producer, [(self._topic_of[o.stream], o.key, o.value)
                                                 for o in outputs], headers)
        except KafkaError as exc:
            raise Unavailable(f"processor publish failed: {exc}") from exc

    async def _commit(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        assert self._consumer is not None
        offsets = {TopicPartition(t, p): o for (t, p), o in next_offsets(records).items()}
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # The journal already holds the batch: a redelivery is answered idempotently.
            log.warning("offset commit failed (batch will be redelivered): %s", exc)

    def _count(self, outcomes: Sequence[Outcome], seconds: float) -> None:
        stats = self.stats
        stats.batches += 1
        stats.last_batch_s = seconds
        for outcome in outcomes:
            if outcome.replayed:
                stats.redelivered += 1
                continue
            stats.decided += 1
            if outcome.allow is True:
                stats.granted += 1
            elif outcome.allow is False:
                stats.denied += 1
            for observe in stats.observers:
                observe(outcome, seconds)
