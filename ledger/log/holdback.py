"""The sequencer's hold-back: an event that arrives before its causes waits for them.

The rule of what an event refers to is pure (ledger/core/causes.py); this is the waiting
room, in memory, bounded three ways:

* ``max_wait_s``: an event whose causes have not arrived after that long is released anyway,
  with the reason ``cause-missing`` (a forged or lost reference, a cause refused by the
  sequencer). It is sequenced, counted and logged; the audit will name the order it breaks
  if the cause arrives later;
* ``max_events`` and ``max_bytes``: past either, the oldest held event is released with the
  reason ``hold-full``.

A released event releases its waiters in turn, causes first. Nothing here is durable on
purpose: a held event is still on Kafka, and :meth:`Holdback.floor` tells the sequencer the
lowest offset held per partition, which it stores instead of the consumed position, so a
restart reads every held event again (the ledger skips those already appended by event id).
Not thread-safe: one sequencer thread owns it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from ledger.core.causes import Cause, Role, provides
from ledger.log.records import LeafRecord

MAX_WAIT_S: Final = 2.0
MAX_EVENTS: Final = 10_000
MAX_BYTES: Final = 32 << 20
RECENT: Final = 200_000
"""Causes provided by the latest released events, answered without asking the store."""

CAUSE_MISSING: Final = "cause-missing"
HOLD_FULL: Final = "hold-full"

Partition = tuple[str, int]


@dataclass(slots=True, eq=False)
class Arrival:
    """One verified event, where it came from (``partition`` None: not from Kafka), and
    the causes it still waits for."""

    record: LeafRecord
    causes: tuple[Cause, ...]
    partition: Partition | None = None
    offset: int = 0
    since: float = 0.0
    missing: set[Cause] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Released:
    """An event to append, in this order; ``late`` is why it goes without its causes."""

    arrival: Arrival
    late: str | None = None


Present = Callable[[Sequence[Cause]], set[Cause]]
"""Which of these causes are leaves already (the store's lookup index)."""


class Holdback:
    """Events waiting for their causes. Raises nothing itself; ``present`` may raise
    Unavailable (SQLite), which leaves the hold-back as it was before the call."""

    def __init__(self, *, max_wait_s: float = MAX_WAIT_S, max_events: int = MAX_EVENTS,
                 max_bytes: int = MAX_BYTES) -> None:
        self.max_wait_s, self.max_events, self.max_bytes = max_wait_s, max_events, max_bytes
        self._held: OrderedDict[int, Arrival] = OrderedDict()  # by id(arrival), oldest first
        self._held_ids: dict[str, Arrival] = {}
        self._waiting: dict[Cause, list[Arrival]] = {}
        self._floors: dict[Partition, dict[int, int]] = {}  # offset -> events held there
        self._recent: OrderedDict[Cause, None] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._held)

    def floor(self, partition: Partition) -> int | None:
        """The lowest offset of ``partition`` still held, or None."""
        offsets = self._floors.get(partition)
        return min(offsets) if offsets else None

    def admit(self, arrivals: Sequence[Arrival], present: Present) -> list[Released]:
        """Take a batch of arrivals, in arrival order. Returns what may be appended now, in
        order: events whose causes are leaves or released before them, then the waiters
        they release, then (past a bound) the oldest held events."""
        fresh = [a for a in arrivals if a.record.event_id not in self._held_ids]
        recent = self._recent
        asked = {c for a in fresh for c in a.causes if c not in recent}
        stored = present(sorted(asked)) if asked else set()
        if asked - stored:  # some will wait, unless they are leaves themselves (redelivery)
            stored |= present(sorted({Cause(a.record.event_id, Role.EVENT) for a in fresh
                                      if not stored.issuperset(a.causes)}))
        out: list[Released] = []
        for arrival in fresh:
            if arrival.record.event_id in self._held_ids:  # twice in one batch
                continue
            if arrival.causes and Cause(arrival.record.event_id, Role.EVENT) not in stored:
                arrival.missing = {c for c in arrival.causes
                                   if c not in stored and c not in recent}
            if arrival.missing:
                self._hold(arrival)
            else:
                self._release(arrival, None, out)
        self._enforce_bounds(out)
        return out

    def expire(self, now: float) -> list[Released]:
        """Release every event held longer than ``max_wait_s`` (reason ``cause-missing``)."""
        out: list[Released] = []
        while self._held:
            oldest = next(iter(self._held.values()))
            if now - oldest.since < self.max_wait_s:
                break
            self._unhold(oldest)
            self._release(oldest, CAUSE_MISSING, out)
        return out

    def oldest_since(self) -> float | None:
        """When the oldest held event arrived (None: nothing held)."""
        return next(iter(self._held.values())).since if self._held else None

    # -- internals ---------------------------------------------------------------------------

    def _hold(self, arrival: Arrival) -> None:
        self._held[id(arrival)] = arrival
        self._held_ids[arrival.record.event_id] = arrival
        self.bytes += len(arrival.record.leaf)
        for cause in arrival.missing:
            self._waiting.setdefault(cause, []).append(arrival)
        if arrival.partition is not None:
            offsets = self._floors.setdefault(arrival.partition, {})
            offsets[arrival.offset] = offsets.get(arrival.offset, 0) + 1

    def _unhold(self, arrival: Arrival) -> None:
        del self._held[id(arrival)]
        del self._held_ids[arrival.record.event_id]
        self.bytes -= len(arrival.record.leaf)
        for cause in arrival.missing:
            waiters = self._waiting.get(cause)
            if waiters is not None:
                waiters.remove(arrival)
                if not waiters:
                    del self._waiting[cause]
        arrival.missing = set()
        if arrival.partition is not None:
            offsets = self._floors[arrival.partition]
            offsets[arrival.offset] -= 1
            if not offsets[arrival.offset]:
                del offsets[arrival.offset]
            if not offsets:
                del self._floors[arrival.partition]

    def _release(self, first: Arrival, late: str | None, out: list[Released]) -> None:
        """Release ``first`` and, depth first, every waiter it completes."""
        stack = [(first, late)]
        while stack:
            arrival, why = stack.pop()
            out.append(Released(arrival, why))
            record = arrival.record
            for cause in provides(record.event_id, record.kind, record.parent_ref):
                self._remember(cause)
                for waiter in self._waiting.pop(cause, ()):
                    waiter.missing.discard(cause)
                    if not waiter.missing:
                        self._unhold(waiter)
                        stack.append((waiter, None))

    def _remember(self, cause: Cause) -> None:
        self._recent[cause] = None
        self._recent.move_to_end(cause)
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    def _enforce_bounds(self, out: list[Released]) -> None:
        while self._held and (len(self._held) > self.max_events or self.bytes > self.max_bytes):
            oldest = next(iter(self._held.values()))
            self._unhold(oldest)
            self._release(oldest, HOLD_FULL, out)

    def held(self) -> Iterable[Arrival]:
        """The held events, oldest first (for tests and the log line of a stop)."""
        return tuple(self._held.values())
