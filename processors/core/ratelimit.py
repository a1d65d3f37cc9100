"""Per-identity token-bucket rate limiting (the last request check, DESIGN.md section 3).

Pure and deterministic: time is an argument (seconds as a float, e.g. the processor's arrival
clock), so the same sequence of ``(identity, now)`` calls always gives the same answers, and a
worker that replays its journal rebuilds the same state.

Each identity has a bucket holding up to ``burst`` tokens, refilled at ``rate`` tokens per
second; a request takes one token or is refused (RATE_LIMITED). A new identity starts full.

* Time going backwards (another clock, a replay) refills nothing and never moves a bucket's
  clock back: a request can not earn tokens by lying about time.
* A non-finite ``now`` is refused.
* Memory is bounded by ``max_identities``. A bucket that has refilled to ``burst`` is *idle*:
  forgetting it changes no future answer (a new bucket starts full), so idle buckets are
  evicted, least recently used first. If the table is full of non-idle buckets, a NEW identity
  is refused (fail closed) rather than evicting a bucket that still remembers spending, which
  would hand that identity fresh tokens. Eviction is amortised O(1); only when the table is
  full does it scan every bucket, once per refused newcomer.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from ledger.errors import ConfigError


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last: float


class TokenBucketLimiter:
    """Token buckets keyed by identity. Not thread-safe (one per worker, like its state)."""

    def __init__(self, rate: float, burst: int, max_identities: int = 100_000) -> None:
        """Requires rate > 0 (tokens per second), burst >= 1, max_identities >= 1.

        Raises ConfigError otherwise.
        """
        if not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"rate limit: rate must be a positive number, got {rate!r}")
        if burst < 1 or max_identities < 1:
            raise ConfigError("rate limit: burst and max_identities must be at least 1")
        self.rate = float(rate)
        self.burst = burst
        self.max_identities = max_identities
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        if now > bucket.last:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.last) * self.rate)
            bucket.last = now

    def _idle(self, bucket: _Bucket, now: float) -> bool:
        elapsed = max(0.0, now - bucket.last)
        return bucket.tokens + elapsed * self.rate >= self.burst

    def prune(self, now: float, *, full_scan: bool = False) -> int:
        """Evict idle buckets, least recently used first; return how many were evicted.

        Without ``full_scan`` it stops at the first non-idle bucket (amortised O(1)).
        """
        if full_scan:
            idle = [key for key, bucket in self._buckets.items() if self._idle(bucket, now)]
            for key in idle:
                del self._buckets[key]
            return len(idle)
        evicted = 0
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            if not self._idle(bucket, now):
                break
            del self._buckets[key]
            evicted += 1
        return evicted

    def allow(self, identity: str, now: float) -> bool:
        """Take one token for ``identity`` at time ``now`` (seconds); False means RATE_LIMITED."""
        if not math.isfinite(now):
            return False
        bucket = self._buckets.get(identity)
        if bucket is None:
            self.prune(now)
            if len(self._buckets) >= self.max_identities:
                self.prune(now, full_scan=True)
            if len(self._buckets) >= self.max_identities:
                return False
            bucket = _Bucket(tokens=float(self.burst), last=now)
            self._buckets[identity] = bucket
        else:
            self._buckets.move_to_end(identity)
            self._refill(bucket, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False
