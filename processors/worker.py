"""The decision worker: Kafka bytes in -> Engine -> journal -> signed outputs out -> commit.

The loop, per batch of records (``getmany``, partition order preserved):

1. take the arrival time once for the batch (the processor's clock, never the client's);
2. catch up with journal entries other workers wrote (shared ``processor.db``), so a partition
   that moved here after a rebalance is decided with its full history (in a group, the
   lineage effects of trees on partitions this worker never owned wait until it gets one:
   see :meth:`DecisionWorker.catch_up`);
3. ``Engine.handle`` each record: pure, never raises ``Rejected``;
4. write inputs and outcomes to the journal in one transaction (durable before anything is
   published or committed);
5. produce every output keyed by its lineage root, await all acknowledgements, advance the
   journal's published watermark;
6. commit the consumed offsets.

A crash between any two steps is safe: before 4, Kafka redelivers and the batch is decided
afresh; after 4, the restored engine answers redeliveries with the stored bytes, and on
start :meth:`DecisionWorker.start` re-publishes journal outputs past the watermark.
``Unavailable`` (journal or broker failure) escapes and stops the worker: never a grant,
never a dropped message.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError

from ledger.config import Settings
from ledger.errors import Unavailable
from ledger.kafka.clients import (
    make_consumer,
    make_producer,
    partition_for,
    publish_keyed,
    stop_quietly,
)
from ledger.kafka.offsets import assign_resumed, next_offsets
from ledger.kafka.topics import Topics
from ledger.sdk.client import utc_now
from processors.core.engine import Engine, Outcome, Output, Stream
from processors.journal import Journal
from processors.policy import PolicyBundle
from processors.reconcile import Reconciler

log = logging.getLogger("govledger.processor")

GROUP_ID = "govledger-processors"
YIELD_EVERY = 64
MAX_IN_FLIGHT = 4  # decided batches waiting for the committer
FREEZE_EVERY_S = 1.0
RESTORE_REPORT_S = 5.0
APPLY_CHUNK = 200  # waiting effects applied between two yields to the event loop
FREEZE_EVERY_RESTORED = 10_000  # journal entries (restart: measured 356 vs 432 us/entry)
RECONCILE_EVERY_S = 2.0  # how often the journal is checked against the ledger
RECONCILE_ROUND = 20_000  # journal entries per check at most
RECONCILE_GRACE_S = 30.0  # a watermark stuck this long: publish what the ledger lacks again
INPUT_STREAMS = (Stream.REQUESTS, Stream.REVOCATIONS, Stream.EXECUTIONS)
Handled = tuple[Stream, datetime, bytes, Outcome]
T = TypeVar("T")


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


def _freeze_survivors() -> None:
    """Move every object alive now out of the cyclic garbage collector's sight.

    The decision state (outcomes, grants, nonces) only grows, and a full collection walks all
    of it: measured here, pauses up to 200 ms in the middle of a batch. So, after restore
    and every ``FREEZE_EVERY_S`` between batches: collect what is unfrozen (at most a
    second's worth of objects: a few ms) and freeze the survivors. Frozen objects are still
    freed by reference counting when dropped; only a cycle that was alive at a freeze and
    dies later stays, and the decision state holds no cycles.
    """
    gc.collect()
    gc.freeze()


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
        self._applied_seq = 0
        self._restore_reported = time.monotonic()
        self._published: int | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stream_of = {topics.name(s.value): s for s in INPUT_STREAMS}
        self._topic_of = {s: topics.name(s.value) for s in Stream}
        self._writer: ThreadPoolExecutor | None = None  # the journal thread, while running
        # The journal against the ledger (processors/reconcile.py), on a thread of its own.
        self.reconciler = reconciler
        self.reconcile_grace_s = reconcile_grace_s
        self._reconcile_thread: ThreadPoolExecutor | None = None
        self._stuck: tuple[int, float] = (-1, 0.0)  # (ledgered watermark, since when)
        # Group mode: input partitions whose trees' lineage effects are applied (None: all,
        # as a single worker always does), the effects waiting by tree key (lineage root),
        # and the partition count the keys map onto (known once the consumer has metadata).
        self._loaded: set[int] | None = set() if use_group else None
        self._deferred: dict[bytes, list[int]] = {}  # tree key -> journal seqs waiting
        self._tree_partitions: int | None = None
        if use_group:
            engine.on_tree = self._load_tree

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild from the ledger what the journal lacks, restore state from the journal,
        journal the policy in force, connect, publish everything past the watermark and
        what the ledger lacks. Raises Unavailable (Kafka, SQLite, a journal that cannot be
        rebuilt) or ConfigError (no ledger)."""
        if self.reconciler is not None:
            rebuilt = await self._reconciling(self.reconciler.rebuild, self.clock())
            if rebuilt:
                log.warning("processor journal: %d decisions rebuilt from the ledger", rebuilt)
        restored = self.catch_up()
        log.info("processor restored %d journal entries", restored)
        # The worker holds every journaled outcome in memory (unless the cache overflowed):
        # its misses need no journal lookup. A single worker owns every partition, so that
        # stays true. In a group, catch_up before each batch makes it true again; an input
        # another worker decides meanwhile (a rebalance race) meets the journal's refusal of
        # a second decision (Journal.append), so none is ever published.
        state = self.engine.state
        state.complete = not state.evicted
        _freeze_survivors()
        self.journal_policy()
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
        await self.republish(0 if wiped else since)
        if wiped:
            await self.reconcile(limit=None, force=True, inputs_only=True)

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

    def journal_policy(self) -> None:
        """Journal a signed PolicyPublished for the policy in force, once per digest, so every
        decision's policy_digest points at a logged policy version."""
        policy = self.engine.policy
        subject = hashlib.sha256(f"policy-published\n{policy.digest}".encode()).hexdigest()
        if self.journal.recall(subject) is not None:
            return
        files = dict(policy.files()) if isinstance(policy, PolicyBundle) else {}
        ids = tuple(policy.policy_ids) if isinstance(policy, PolicyBundle) else ()
        output = self.engine.publish_policy(ids, files, self.clock())
        self.journal.append([(Stream.DECISIONS, self.clock(), output.value,
                              Outcome(subject, (output,)))], first_wins=True)
        log.info("policy %s journaled for publication", policy.digest)

    def _journal_thread(self) -> ThreadPoolExecutor:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        return self._writer

    async def _reconciling(self, fn: Callable[..., T], *args: object) -> T:
        """Run a Reconciler method on its own thread (its SQLite connections live there)."""
        if self._reconcile_thread is None:
            self._reconcile_thread = ThreadPoolExecutor(max_workers=1,
                                                        thread_name_prefix="reconcile")
        return await asyncio.get_running_loop().run_in_executor(self._reconcile_thread, fn,
                                                                *args)

    async def reconcile(self, *, limit: int | None = RECONCILE_ROUND, force: bool = False,
                        inputs_only: bool = False) -> int:
        """Check journal entries past the ``ledgered`` watermark against the ledger, move the
        watermark, and publish again what the ledger lacks (only inputs with
        ``inputs_only``): at once with ``force`` (a wiped broker), else once the watermark
        has not moved for ``reconcile_grace_s`` (the sequencer lags by well under a second
        when it runs; an event still missing then was lost on the way, e.g. a sequencer that
        stopped while its broker forgot). Returns how many events were published again.
        Raises Unavailable."""
        if self.reconciler is None or not await self._reconciling(self.reconciler.lead):
            return 0
        found = await self._reconciling(self.reconciler.unledgered, limit)
        await self._reconciling(self.reconciler.mark_ledgered, found.ledgered_upto)
        now = time.monotonic()
        if found.ledgered_upto != self._stuck[0] or not found.missing:
            self._stuck = (found.ledgered_upto, now)
        missing = [o for o in found.missing if not inputs_only or o.stream in INPUT_STREAMS]
        if not missing or not (force or now - self._stuck[1] >= self.reconcile_grace_s):
            return 0
        log.warning("the ledger lacks %d events of the processor journal (after entry %d): "
                    "publishing them again", len(missing), found.ledgered_upto)
        await self._publish(missing)
        self._stuck = (found.ledgered_upto, now)
        return len(missing)

    async def _reconcile_every(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RECONCILE_EVERY_S)
            if not stop.is_set():
                await self.reconcile()

    async def stop(self) -> None:
        if self._reconcile_thread is not None:
            thread, self._reconcile_thread = self._reconcile_thread, None
            if self.reconciler is not None:
                await asyncio.get_running_loop().run_in_executor(thread, self.reconciler.close)
            await asyncio.get_running_loop().run_in_executor(None, thread.shutdown)
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
        reconciling = asyncio.create_task(self._reconcile_every(stop))
        next_freeze = time.monotonic() + FREEZE_EVERY_S
        try:
            while not stop.is_set():
                try:
                    batches = await self._consumer.getmany(timeout_ms=200,
                                                           max_records=self.max_batch)
                except KafkaError as exc:
                    raise Unavailable(f"processor consume failed: {exc}") from exc
                if committer.done():
                    break  # failed: its exception is raised below
                if reconciling.done() and not stop.is_set():
                    reconciling.result()  # raises what stopped it (Unavailable)
                records = [r for part in batches.values() for r in part]
                if not records:
                    continue
                started = time.perf_counter()
                handled = await self._decide(records)
                put = asyncio.ensure_future(queue.put(_Decided(records, handled, started)))
                await asyncio.wait({put, committer}, return_when=asyncio.FIRST_COMPLETED)
                if not put.done():
                    put.cancel()
                    break
                if time.monotonic() >= next_freeze:
                    _freeze_survivors()
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
        """Apply journal entries written since we last looked (by us or by other workers).

        Every entry's outcome, nonce and rate-limit token is restored at once: replay and
        rate limits span partitions. In a group, the *lineage effects* of an allowed entry
        (a grant, a revocation, a use: verifying them is most of a restore's cost) wait while
        its tree's partition has never been assigned here. :meth:`_load_assigned` applies
        them, in journal order, before this worker decides anything on that partition, and
        :meth:`_load_tree` before the engine decides anything in that tree (an input keyed
        by something else than its lineage root). A partition once loaded stays loaded. So
        every decision sees its tree's whole journaled history, as in a single worker.
        """
        count = 0
        decided = self.engine.state.decided
        for seq, entry in self.journal.entries_unless(self._applied_seq, decided):
            if entry is not None:
                outcome = entry.outcome
                later = self._tree_to_defer(entry.stream, outcome)
                self.engine.restore(entry.stream, entry.raw, entry.arrival, outcome,
                                    effects=later is None)
                if later is not None:
                    self._deferred.setdefault(later, []).append(seq)
                count += 1
                if count % FREEZE_EVERY_RESTORED == 0:
                    _freeze_survivors()  # a long restore would otherwise re-walk all of it
                    self._report_restore(count, seq)
            self._applied_seq = seq
        return count

    def _tree_to_defer(self, stream: Stream, outcome: Outcome) -> bytes | None:
        """The tree key whose partition is not loaded here, if ``outcome``'s lineage effects
        should wait; None to apply them now."""
        if self._loaded is None or outcome.allow is not True or stream not in INPUT_STREAMS:
            return None
        keys = {output.key for output in outcome.outputs}
        if len(keys) != 1:
            return None  # not one tree: apply at once (never the case for an allowed input)
        key = keys.pop()
        if (self._tree_partitions is not None
                and partition_for(key, self._tree_partitions) in self._loaded):
            return None
        return key

    def _load_tree(self, root: str) -> None:
        """The engine's hook before it decides anything in tree ``root``: apply whatever of
        the tree's effects is waiting (an input that came on another partition than its
        tree's, from a producer that did not key it by its lineage root), so no tree is
        ever decided on part of its history."""
        waiting = self._deferred.pop(root.encode(), None)
        if waiting:
            for entry in self.journal.entries_at(waiting):
                self.engine.restore_effects(entry.stream, entry.outcome)

    async def _load_assigned(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Before deciding ``records`` in a group: apply the waiting lineage effects of every
        partition assigned here (or carrying these records) for the first time.

        Trees map to partitions by their key as Kafka's default partitioner does, over the
        input topics' common partition count. If the input topics differ in partition count,
        if it is not known, or if it changes (partitions added: keys move), every effect is
        applied from then on, as without deferral.
        """
        if self._loaded is None:
            return
        assert self._consumer is not None
        counts = {len(self._consumer.partitions_for_topic(topic) or ())
                  for topic in self._stream_of}
        if len(counts) != 1 or 0 in counts or (
                self._tree_partitions is not None and counts != {self._tree_partitions}):
            log.warning("input topics' partition counts are unknown, differ or changed "
                        "(%s, was %s): every worker keeps every tree's state from now on",
                        sorted(counts), self._tree_partitions)
            await self._apply_deferred(lambda key: True)
            self._loaded = None
            return
        self._tree_partitions = counts.pop()
        assigned = {tp.partition for tp in self._consumer.assignment()
                    if tp.topic in self._stream_of}
        new = (assigned | {r.partition for r in records}) - self._loaded
        if not new:
            return
        count = self._tree_partitions
        applied = await self._apply_deferred(lambda key: partition_for(key, count) in new)
        self._loaded |= new
        log.info("input partitions %s assigned here: %d waiting effects of their trees "
                 "applied", sorted(new), applied)

    async def _apply_deferred(self, wanted: Callable[[bytes], bool]) -> int:
        """Apply the waiting lineage effects of the trees ``wanted`` selects, read back from
        the journal in journal order (so each tree's in order; trees are independent).

        Yields to the event loop between chunks: taking over partitions of a large journal
        takes ~0.2-0.4 ms per waiting effect, and the group heartbeat must keep running.
        """
        seqs = [seq for key in [k for k in self._deferred if wanted(k)]
                for seq in self._deferred.pop(key)]
        for n, entry in enumerate(self.journal.entries_at(seqs), 1):
            self.engine.restore_effects(entry.stream, entry.outcome)
            if n % APPLY_CHUNK == 0:
                await asyncio.sleep(0)
        return len(seqs)

    def _report_restore(self, count: int, seq: int) -> None:
        """Progress of a long restore (a journal of 1M decisions takes minutes), at most
        every ``RESTORE_REPORT_S``."""
        now = time.monotonic()
        if now - self._restore_reported < RESTORE_REPORT_S:
            return
        self._restore_reported = now
        log.info("restoring the processor journal: %d entries applied, at entry %d of %d",
                 count, seq, self.journal.last_seq())

    async def process(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Outcome]:
        """Steps 1-6 of the module docstring for one batch, not pipelined."""
        started = time.perf_counter()
        return await self._finish(records, await self._decide(records), started)

    async def _decide(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Handled]:
        """Steps 1-3: decide every record of the batch at one arrival time."""
        now = self.clock()
        if self.use_group:
            await self._load_assigned(records)
            self.catch_up()  # other workers' entries (a single worker has them all)
        handled: list[Handled] = []
        for n, record in enumerate(records, 1):
            stream = self._stream_of[record.topic]
            raw = record.value if record.value is not None else b""
            handled.append((stream, now, raw, self.engine.handle(stream, raw, now)))
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
            await self._commit(records)
        else:
            self._applied_seq = max(last, self._applied_seq)
        outcomes = [outcome for *_, outcome in handled]
        self._count(outcomes, time.perf_counter() - started)
        return outcomes

    async def republish(self, since_seq: int) -> int:
        """Publish every journaled output after ``since_seq`` again (consumers dedupe by id)."""
        outputs = list(self.journal.outputs_since(since_seq))
        if outputs:
            log.info("re-publishing %d journaled outputs past the watermark", len(outputs))
            await self._publish(outputs)
            self.journal.mark_published(self._applied_seq)
        return len(outputs)

    async def _publish(self, outputs: Sequence[Output]) -> None:
        if not outputs:
            return
        assert self._producer is not None
        try:
            await publish_keyed(self._producer, [(self._topic_of[o.stream], o.key, o.value)
                                                 for o in outputs])
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
