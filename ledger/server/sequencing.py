"""The sequencer's side of the service: the worker that appends every event to the ledger,
verifying it under the keys in force (the governance follower it feeds) and reporting to the
metrics (in the service's process, or in its own: ledger/server/sequencer_process.py); and,
for a process that runs no sequencer (the API of ``govledger up``, whose sequencer is a
child, or the API role alone), the follower fed from the ledger another process writes, so
the keys in force stay live there too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from ledger.config import Settings
from ledger.kafka.topics import Topics
from ledger.log.governance import GovernanceFollower, governance_verifier
from ledger.log.ledger_dir import open_ledger
from ledger.log.sequencer import Sequencer, SubmitResult
from ledger.log.store import LedgerStore
from ledger.log.worker import SequencerWorker

log = logging.getLogger("govledger.service")

# How often a process without the sequencer reads the ledger's keys: a key revoked live is
# refused by its API within about this long (the processor refuses it in decisions at once).
GOVERNANCE_FOLLOW_S = 0.25


class SequencerMetrics(Protocol):
    """What the sequencer reports (ledger.server.metrics.Metrics, or the child's
    ledger.server.sequencer_process.MetricsLines)."""

    def observe_refused(self, by_reason: Mapping[str, int]) -> None: ...
    def observe_out_of_order(self, by_reason: Mapping[str, int]) -> None: ...
    def set_ledger(self, size: int, checkpoint_age_s: float) -> None: ...
    def set_lag(self, component: str, topic: str, lag: int) -> None: ...


async def open_sequencer(settings: Settings, bootstrap: str, topics: Topics,
                         governance: GovernanceFollower, key_file: Path,
                         metrics: SequencerMetrics) -> SequencerWorker:
    """The sequencer worker over ``settings.data_dir``: each event verified under the keys
    ``governance`` holds (and fed to it), refusals, out-of-order appends, the ledger's size,
    checkpoint age and lag reported to ``metrics``. Raises ProofError (the ledger does not
    verify against its checkpoint), ConfigError or Unavailable."""
    def opener() -> Sequencer:
        return open_ledger(settings.data_dir, governance_verifier(governance),
                           checkpoint_interval=settings.checkpoint_interval_s,
                           key_file=key_file)
    signed_at = [time.monotonic()]

    def on_batch(result: SubmitResult) -> None:
        if result.refused:  # one line per batch, not per event: a flood stays readable
            by_reason = result.refused_by_reason()
            metrics.observe_refused(by_reason)
            log.warning("sequencer refused %d of a batch of %d: %s", len(result.refused),
                        len(result.refused) + result.appended + result.duplicates,
                        ", ".join(f"{r}={n}" for r, n in sorted(by_reason.items())))
        if result.late:  # the worker logs them, one line per commit
            metrics.observe_out_of_order(result.late_by_reason())
        if result.checkpoint is not None:
            signed_at[0] = time.monotonic()
        metrics.set_ledger(result.tree_size, time.monotonic() - signed_at[0])

    def on_lag(topic: str, lag: int) -> None:
        metrics.set_lag("sequencer", topic, lag)
    return await SequencerWorker.open(settings, bootstrap, topics, opener,
                                      on_batch=on_batch, on_lag=on_lag)


async def follow_governance(follower: GovernanceFollower, ledger_db: Path,
                            stop: asyncio.Event) -> None:
    """Until ``stop``: feed ``follower`` the ledger's new leaves every
    ``GOVERNANCE_FOLLOW_S``, so a key registered or revoked live authenticates or is refused
    within about that long. The keyring changes in place under its holders (the API's auth
    and backend). Raises ProofError or Unavailable: the service then stops rather than serve
    stale keys."""
    with LedgerStore(ledger_db) as store:  # one reader: each read sees the last commit (WAL)
        while not stop.is_set():
            # On the loop, not a thread: the keyring must not change under a request that
            # is reading it. Only the leaves since the last read: a few, cheap.
            follower.feed_ledger(store, follower.fed_upto)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), GOVERNANCE_FOLLOW_S)
