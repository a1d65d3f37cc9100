"""Freshness: when a request or an execution may still be decided (the time rules of
processors/core/checks.py's docstring) and the replay memory that refuses a nonce used twice
within the time a replay could still pass the time check (``Limits.nonce_retention``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ledger.errors import Reason


@dataclass(frozen=True, slots=True)
class Limits:
    """Time and depth limits; defaults documented in docs/processors.md."""

    max_clock_skew: timedelta = timedelta(seconds=30)
    max_request_age: timedelta = timedelta(minutes=5)
    max_ttl: timedelta = timedelta(days=1)
    max_depth: int = 8

    @property
    def nonce_retention(self) -> timedelta:
        """How long a (signer, nonce) is remembered after its ``issued_at``: past that, a
        replay is refused as EXPIRED by the time check, so no replay can slip through."""
        return self.max_request_age + 2 * self.max_clock_skew

    def nonce_until(self, issued_at: datetime, now: datetime) -> datetime:
        """When a nonce first used at ``now`` by an event issued at ``issued_at`` is free
        again. An ``issued_at`` past the clock skew is refused (NOT_YET_VALID) at ``now``,
        so it counts as ``now + max_clock_skew``: the same retention for every event that
        can be accepted, and no overflow for a timestamp near the year 9999."""
        return min(max(issued_at, now), now + self.max_clock_skew) + self.nonce_retention


@dataclass(slots=True)
class ReplayMemory:
    """(signer, nonce) -> (event id, forget-after). A different event reusing a nonce is a
    replay; the same event id again is a redelivery, answered idempotently elsewhere."""

    seen: dict[tuple[str, str], tuple[str, datetime]] = field(default_factory=dict)
    _oldest: datetime | None = None

    def is_replay(self, signer: str, nonce: str, event_id: str, now: datetime) -> bool:
        entry = self.seen.get((signer, nonce))
        return entry is not None and entry[0] != event_id and now < entry[1]

    def remember(self, signer: str, nonce: str, event_id: str, until: datetime,
                 now: datetime) -> None:
        """The first event to use a nonce keeps it until ``until``. Once that has passed (at
        ``now``), the nonce is free: the next event to use it takes it, even if the expired
        entry was not pruned yet (keeping the stale one would let a third use through)."""
        key = (signer, nonce)
        entry = self.seen.get(key)
        if entry is None or entry[1] <= now:
            self.seen[key] = (event_id, until)
            if self._oldest is None or until < self._oldest:
                self._oldest = until

    def prune(self, now: datetime) -> None:
        """Forget expired entries (amortized: only when the oldest one has expired)."""
        if self._oldest is None or now < self._oldest:
            return
        self.seen = {k: v for k, v in self.seen.items() if v[1] > now}
        self._oldest = min((v[1] for v in self.seen.values()), default=None)


def check_time(issued_at: datetime, not_before: datetime, not_after: datetime,
               now: datetime, limits: Limits) -> Reason | None:
    if issued_at > now + limits.max_clock_skew:
        return Reason.NOT_YET_VALID
    if issued_at < now - limits.max_request_age or not_after <= now:
        return Reason.EXPIRED
    if not_after - not_before > limits.max_ttl:
        return Reason.TTL_TOO_LONG
    if not_before > now + limits.max_ttl:
        return Reason.NOT_YET_VALID
    return None
