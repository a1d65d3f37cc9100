"""Rebuild the monitor's windows from the ledger (the system of record) before following the
topics, so a restart neither forgets state nor raises an alert twice.

The embedded broker cannot restore faust changelog tables (DESIGN.md sections 6 and 9), so
the rules' tables are not faust Tables: they are folded again from ``ledger.db`` (read-only)
at start, from the first leaf issued at or after the oldest open window.

1. :func:`wait_for_ledger`: wait until the sequencer has logged everything the previous
   monitor consumed (the monitor group's committed offsets) and every alert it published
   (the alerts topic's high-water mark); otherwise an event consumed, committed and not yet
   sequenced would be in neither the ledger nor the topic's unread part.
2. :func:`replay`: the alert ids already logged first (so the evidence folded after does not
   raise them again), then every leaf from the oldest needed one, after one horizon more of
   context (grants and allowances, not judged again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from aiokafka.errors import KafkaError

from ledger.config import Settings
from ledger.core.envelope import parse_envelope, parse_payload
from ledger.core.kinds import AUTHORITY_KINDS
from ledger.errors import Rejected, Unavailable
from ledger.kafka.clients import make_consumer, stop_quietly
from ledger.kafka.offsets import probe_highwaters, topic_partitions
from ledger.log.reports import read_alerts
from ledger.log.store import LedgerStore
from processors.core.monitor_rules import Alert, oldest_needed
from processors.monitor.watcher import Watcher

SEARCH_SPAN = 64


async def consumed_offsets(settings: Settings, bootstrap: str, group: str,
                           watched: Sequence[str], alerts_topic: str
                           ) -> dict[tuple[str, int], int]:
    """What the ledger must hold before a replay is complete: the monitor group's committed
    offsets on ``watched`` and the alerts topic's high-water marks. Raises Unavailable.

    The committed offsets are read by a consumer of the group that assigns the partitions
    itself (no join, no rebalance of the running group): the admin client's OffsetFetch
    answer from the embedded broker does not decode (aiokafka 0.12, measured).
    """
    partitions = await topic_partitions(settings, bootstrap, list(watched))
    reader = make_consumer(settings, bootstrap, group_id=group)
    wanted: dict[tuple[str, int], int] = {}
    try:
        await reader.start()
        reader.assign(partitions)
        for tp in partitions:
            offset = await reader.committed(tp)
            if offset is not None and offset > 0:
                wanted[(tp.topic, tp.partition)] = offset
    except (KafkaError, OSError) as exc:
        raise Unavailable(f"cannot read the offsets of group {group}: {exc!r}") from exc
    finally:
        await stop_quietly(reader)
    marks = await probe_highwaters(settings, bootstrap,
                                   await topic_partitions(settings, bootstrap, [alerts_topic]))
    wanted.update({(tp.topic, tp.partition): mark for tp, mark in marks.items() if mark > 0})
    return wanted


async def wait_for_ledger(ledger_db: Path, wanted: dict[tuple[str, int], int],
                          timeout_s: float) -> None:
    """Wait until the sequencer's stored offsets reach ``wanted``. Raises Unavailable after
    ``timeout_s`` (no sequencer running, or it is stuck): a replay then would miss events."""
    deadline = time.monotonic() + timeout_s
    while True:
        with LedgerStore(ledger_db) as store:
            logged = store.offsets()
        behind = {tp: off for tp, off in wanted.items() if logged.get(tp, 0) < off}
        if not behind:
            return
        if time.monotonic() > deadline:
            raise Unavailable(f"the ledger has not caught up with what the monitor consumed "
                              f"within {timeout_s} s (is the sequencer running?): {behind}")
        await asyncio.sleep(0.2)


def _authority_time(store: LedgerStore, index: int, size: int) -> datetime | None:
    """The issue time of the first authority-signed leaf at or after ``index`` (within
    ``SEARCH_SPAN`` leaves). Only the authority's clock is used: an agent's ``issued_at`` is
    its own claim, and a false one must not move the replay's start."""
    for at in range(index, min(index + SEARCH_SPAN, size)):
        leaf = store.leaf(at)
        if leaf.kind not in AUTHORITY_KINDS:
            continue
        try:
            parsed = parse_envelope(leaf.leaf)
            return parse_payload(parsed.payload_type, parsed.payload).issued_at
        except Rejected:
            continue
    return None


def first_needed(store: LedgerStore, since: datetime) -> int:
    """The first leaf index whose authority time is at or after ``since`` (binary search;
    the authority signs in arrival order, and the rules' grace and horizon absorb the
    rest). Where no authority time is found the search keeps the earlier half."""
    lo, hi = 0, int(store.tree_size())
    size = hi
    while lo < hi:
        mid = (lo + hi) // 2
        at = _authority_time(store, mid, size)
        if at is not None and at < since:
            lo = mid + 1
        else:
            hi = mid
    return lo


def replay(watcher: Watcher, ledger_db: Path, now: datetime) -> tuple[int, list[bytes]]:
    """Fold the ledger's leaves into ``watcher`` (see the module docstring). Returns how many
    leaves were folded and the envelopes of alerts to publish (none already logged).
    Raises Unavailable or ConfigError (no ledger)."""
    out: list[tuple[Alert, bytes]] = []
    with LedgerStore(ledger_db) as store:
        size = store.tree_size()
        for _, _, alert in read_alerts(store):
            watcher.state.raised.add(alert.alert_id)
        since = oldest_needed(now, watcher.state.config)
        # One horizon more as context: the grants and allowances that reports inside the
        # horizon are judged against; reports and denials there were judged long ago.
        context = first_needed(store, since - watcher.state.config.horizon)
        start = first_needed(store, since)
        folded = 0
        for leaf in store.iter_leaves(context):
            if leaf.index >= size:
                break
            out.extend(watcher.ingest(leaf.leaf, now, judge=leaf.index >= start))
            folded += leaf.index >= start
    return folded, [envelope for _, envelope in out]
