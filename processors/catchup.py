"""Catching up with the processor journal: restore on start, and, in a consumer group, the
entries other workers wrote before each batch.

Every entry's outcome, nonce and rate-limit token is restored at once: replay and rate
limits span partitions. In a group, the *lineage effects* of an allowed entry (a grant, a
revocation, a use: verifying them is most of a restore's cost) wait while its tree's
partition has never been assigned here. :meth:`CatchUp.load_assigned` applies them, in
journal order, before the worker decides anything on that partition, and
:meth:`CatchUp.load_tree` before the engine decides anything in that tree (an input keyed by
something else than its lineage root). A partition once loaded stays loaded. So every
decision sees its tree's whole journaled history, as in a single worker.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Collection, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from ledger.core.streams import TREE_STREAMS, Stream
from ledger.kafka.clients import partition_for
from processors.core.engine import Engine
from processors.core.outcomes import Outcome
from processors.journal import Journal

log = logging.getLogger("govledger.processor")

RESTORE_REPORT_S = 5.0
APPLY_CHUNK = 200  # waiting effects applied between two yields to the event loop
FREEZE_EVERY_RESTORED = 10_000  # journal entries (restart: measured 356 vs 432 us/entry)


def freeze_survivors() -> None:
    """Move every object alive now out of the cyclic garbage collector's sight.

    The decision state (outcomes, grants, nonces) only grows, and a full collection walks all
    of it: measured here, pauses up to 200 ms in the middle of a batch. So, after restore
    and every second or so between batches: collect what is unfrozen (at most a second's
    worth of objects: a few ms) and freeze the survivors. Frozen objects are still freed by
    reference counting when dropped; only a cycle that was alive at a freeze and dies later
    stays, and the decision state holds no cycles.
    """
    gc.collect()
    gc.freeze()


class CatchUp:
    """Applies journal entries to ``engine`` in journal order (module docstring).

    ``group``: a worker of a consumer group, which defers the lineage effects of trees on
    partitions it never owned, and hooks :meth:`load_tree` into the engine.
    """

    def __init__(self, engine: Engine, journal: Journal, *, group: bool) -> None:
        self.engine = engine
        self.journal = journal
        self.applied_seq = 0  # every journal entry up to here is applied
        self._restore_reported = time.monotonic()
        # Input partitions whose trees' lineage effects are applied (None: all, as a single
        # worker always does), the effects waiting by tree key (lineage root), and the
        # partition count the keys map onto (known once the consumer has metadata).
        self.loaded: set[int] | None = set() if group else None
        self.deferred: dict[bytes, list[int]] = {}  # tree key -> journal seqs waiting
        self.tree_partitions: int | None = None
        if group:
            engine.on_tree = self.load_tree

    def run(self) -> int:
        """Apply journal entries written since we last looked (by us or by other workers).
        Returns how many. Raises Unavailable (the journal, or an entry that contradicts
        itself: ``Engine.restore``)."""
        count = 0
        decided = self.engine.state.decided
        for seq, entry in self.journal.entries_unless(self.applied_seq, decided):
            if entry is not None:
                outcome = entry.outcome
                later = self._tree_to_defer(entry.stream, outcome)
                self.engine.restore(entry.stream, entry.raw, entry.arrival, outcome,
                                    effects=later is None)
                if later is not None:
                    self.deferred.setdefault(later, []).append(seq)
                count += 1
                if count % FREEZE_EVERY_RESTORED == 0:
                    freeze_survivors()  # a long restore would otherwise re-walk all of it
                    self._report_restore(count, seq)
            self.applied_seq = seq
        return count

    def _tree_to_defer(self, stream: Stream, outcome: Outcome) -> bytes | None:
        """The tree key whose partition is not loaded here, if ``outcome``'s lineage effects
        should wait; None to apply them now."""
        if self.loaded is None or outcome.allow is not True or stream not in TREE_STREAMS:
            return None
        keys = {output.key for output in outcome.outputs}
        if len(keys) != 1:
            return None  # not one tree: apply at once (never the case for an allowed input)
        key = keys.pop()
        if (self.tree_partitions is not None
                and partition_for(key, self.tree_partitions) in self.loaded):
            return None
        return key

    def load_tree(self, root: str) -> None:
        """The engine's hook before it decides anything in tree ``root``: apply whatever of
        the tree's effects is waiting (an input that came on another partition than its
        tree's, from a producer that did not key it by its lineage root), so no tree is
        ever decided on part of its history."""
        waiting = self.deferred.pop(root.encode(), None)
        if waiting:
            for entry in self.journal.entries_at(waiting):
                self.engine.restore_effects(entry.stream, entry.outcome)

    async def load_assigned(self, consumer: AIOKafkaConsumer, inputs: Collection[str],
                            records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Before deciding ``records`` in a group: apply the waiting lineage effects of every
        partition of the ``inputs`` topics assigned to ``consumer`` (or carrying these
        records) for the first time.

        Trees map to partitions by their key as Kafka's default partitioner does, over the
        input topics' common partition count. If the input topics differ in partition count,
        if it is not known, or if it changes (partitions added: keys move), every effect is
        applied from then on, as without deferral.
        """
        if self.loaded is None:
            return
        counts = {len(consumer.partitions_for_topic(topic) or ()) for topic in inputs}
        if len(counts) != 1 or 0 in counts or (
                self.tree_partitions is not None and counts != {self.tree_partitions}):
            log.warning("input topics' partition counts are unknown, differ or changed "
                        "(%s, was %s): every worker keeps every tree's state from now on",
                        sorted(counts), self.tree_partitions)
            await self.apply_deferred(lambda key: True)
            self.loaded = None
            return
        self.tree_partitions = counts.pop()
        assigned = {tp.partition for tp in consumer.assignment() if tp.topic in inputs}
        new = (assigned | {r.partition for r in records}) - self.loaded
        if not new:
            return
        count = self.tree_partitions
        applied = await self.apply_deferred(lambda key: partition_for(key, count) in new)
        self.loaded |= new
        log.info("input partitions %s assigned here: %d waiting effects of their trees "
                 "applied", sorted(new), applied)

    async def apply_deferred(self, wanted: Callable[[bytes], bool]) -> int:
        """Apply the waiting lineage effects of the trees ``wanted`` selects, read back from
        the journal in journal order (so each tree's in order; trees are independent).

        Yields to the event loop between chunks: taking over partitions of a large journal
        takes ~0.2-0.4 ms per waiting effect, and the group heartbeat must keep running.
        """
        seqs = [seq for key in [k for k in self.deferred if wanted(k)]
                for seq in self.deferred.pop(key)]
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
