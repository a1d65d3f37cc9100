"""The worker's side of reconciliation (processors/reconcile.py): run the Reconciler off the
event loop, every ``RECONCILE_EVERY_S``, and publish again what the ledger lacks once the
``ledgered`` watermark has been stuck for a grace period (at once after a broker wipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

from ledger.core.streams import INPUT_STREAMS
from processors.core.outcomes import Output
from processors.reconcile import Reconciler

log = logging.getLogger("govledger.processor")

RECONCILE_EVERY_S = 2.0  # how often the journal is checked against the ledger
RECONCILE_ROUND = 20_000  # journal entries per check at most
RECONCILE_GRACE_S = 30.0  # a watermark stuck this long: publish what the ledger lacks again
T = TypeVar("T")


class ReconcileLoop:
    """Runs ``reconciler`` (None: nothing to reconcile) for one worker, which ``publish``es."""

    def __init__(self, reconciler: Reconciler | None,
                 publish: Callable[[Sequence[Output]], Awaitable[None]], *,
                 grace_s: float = RECONCILE_GRACE_S) -> None:
        self.reconciler = reconciler
        self.publish = publish
        self.grace_s = grace_s
        self._thread: ThreadPoolExecutor | None = None
        self._stuck: tuple[int, float] = (-1, 0.0)  # (ledgered watermark, since when)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        """Run a Reconciler method on its own thread (its SQLite connections live there)."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def rebuild(self, now: datetime) -> None:
        """Journal again the decisions the ledger holds and the journal lacks (before the
        engine restores). Raises Unavailable or ConfigError."""
        if self.reconciler is None:
            return
        rebuilt = await self._call(self.reconciler.rebuild, now)
        if rebuilt:
            log.warning("processor journal: %d decisions rebuilt from the ledger", rebuilt)

    async def round(self) -> int:
        """Check journal entries past the ``ledgered`` watermark against the ledger (one
        round), move the watermark, and publish again what the ledger lacks once the
        watermark has not moved for ``grace_s``: the sequencer lags by well under a second
        when it runs, so an event still missing then was lost on the way (a broker that
        forgot it, a sequencer that skipped it). Returns how many events were published
        again. Raises Unavailable."""
        if self.reconciler is None or not await self._call(self.reconciler.lead):
            return 0
        found = await self._call(self.reconciler.unledgered, RECONCILE_ROUND)
        await self._call(self.reconciler.mark_ledgered, found.ledgered_upto)
        now = time.monotonic()
        if found.ledgered_upto != self._stuck[0] or not found.missing:
            self._stuck = (found.ledgered_upto, now)
        if not found.missing or now - self._stuck[1] < self.grace_s:
            return 0
        log.warning("the ledger lacks %d events of the processor journal (after entry %d): "
                    "publishing them again", len(found.missing), found.ledgered_upto)
        await self.publish(found.missing)
        self._stuck = (found.ledgered_upto, now)
        return len(found.missing)

    async def inputs_after_wipe(self) -> int:
        """After a broker wipe: publish again every journaled input the ledger lacks, the
        whole tail past the watermark, a round at a time (bounded memory); the worker
        publishes the outputs again itself. Returns how many. Raises Unavailable."""
        if self.reconciler is None or not await self._call(self.reconciler.lead):
            return 0
        published, after = 0, None
        while True:
            found = await self._call(self.reconciler.unledgered, RECONCILE_ROUND, after)
            inputs = [o for o in found.missing if o.stream in INPUT_STREAMS]
            await self.publish(inputs)
            published += len(inputs)
            if after is None:
                await self._call(self.reconciler.mark_ledgered, found.ledgered_upto)
            if found.scanned < RECONCILE_ROUND:
                break
            after = found.last_seq
        if published:
            log.warning("the broker was wiped: %d journaled inputs the ledger lacks "
                        "published again", published)
        return published

    async def every(self, stop: asyncio.Event) -> None:
        """A round every ``RECONCILE_EVERY_S`` until ``stop`` is set. Raises Unavailable."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RECONCILE_EVERY_S)
            if not stop.is_set():
                await self.round()

    async def close(self) -> None:
        """Close the reconciler's connections on their thread, then the thread."""
        if self._thread is None:
            return
        thread, self._thread = self._thread, None
        if self.reconciler is not None:
            await asyncio.get_running_loop().run_in_executor(thread, self.reconciler.close)
        await asyncio.get_running_loop().run_in_executor(None, thread.shutdown)
