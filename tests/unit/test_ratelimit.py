"""Token-bucket rate limiting: burst, refill, clock rules, bounded memory, determinism."""

from __future__ import annotations

import random

import pytest

from ledger.errors import ConfigError
from processors.core.ratelimit import TokenBucketLimiter


def take(limiter: TokenBucketLimiter, identity: str, now: float, n: int) -> list[bool]:
    return [limiter.allow(identity, now) for _ in range(n)]


def test_burst_then_refused() -> None:
    limiter = TokenBucketLimiter(rate=1.0, burst=3)
    assert take(limiter, "agent:a", 100.0, 5) == [True, True, True, False, False]


def test_refill_at_rate() -> None:
    limiter = TokenBucketLimiter(rate=2.0, burst=2)
    assert take(limiter, "agent:a", 0.0, 3) == [True, True, False]
    assert limiter.allow("agent:a", 0.25) is False        # half a token
    assert limiter.allow("agent:a", 0.5) is True          # one token after 0.5 s
    assert limiter.allow("agent:a", 0.5) is False
    assert take(limiter, "agent:a", 100.0, 3) == [True, True, False]   # capped at burst


def test_identities_are_independent() -> None:
    limiter = TokenBucketLimiter(rate=1.0, burst=1)
    assert limiter.allow("agent:a", 0.0)
    assert not limiter.allow("agent:a", 0.0)
    assert limiter.allow("agent:b", 0.0)


def test_time_going_backwards_refills_nothing() -> None:
    limiter = TokenBucketLimiter(rate=1.0, burst=1)
    assert limiter.allow("agent:a", 1000.0)
    assert not limiter.allow("agent:a", 0.0)              # earlier clock: no refill
    assert not limiter.allow("agent:a", 1000.5)           # and the bucket clock did not rewind
    assert limiter.allow("agent:a", 1001.0)


@pytest.mark.parametrize("now", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_time_is_refused(now: float) -> None:
    limiter = TokenBucketLimiter(rate=1.0, burst=5)
    assert limiter.allow("agent:a", now) is False
    assert len(limiter) == 0


@pytest.mark.parametrize(("rate", "burst", "max_ids"), [
    (0.0, 1, 10), (-1.0, 1, 10), (float("nan"), 1, 10), (float("inf"), 1, 10),
    (1.0, 0, 10), (1.0, 1, 0),
])
def test_bad_configuration_is_refused(rate: float, burst: int, max_ids: int) -> None:
    with pytest.raises(ConfigError):
        TokenBucketLimiter(rate=rate, burst=burst, max_identities=max_ids)


def test_idle_buckets_are_evicted_and_memory_is_bounded() -> None:
    limiter = TokenBucketLimiter(rate=1.0, burst=2, max_identities=10)
    for i in range(1000):
        assert limiter.allow(f"agent:{i}", float(i) * 3)  # each earlier bucket is full again
        assert len(limiter) <= 10
    assert len(limiter) <= 2


def test_full_table_refuses_newcomers_but_not_members() -> None:
    limiter = TokenBucketLimiter(rate=1.0, burst=2, max_identities=3)
    for name in ("a", "b", "c"):
        assert limiter.allow(name, 0.0)                   # each bucket now below burst
    assert limiter.allow("d", 0.5) is False               # nobody idle yet: fail closed
    assert limiter.allow("a", 0.5) is True                # members keep their buckets
    assert limiter.allow("d", 10.0) is True               # later, idle buckets make room
    assert len(limiter) <= 3


def test_eviction_never_grants_extra_tokens() -> None:
    """Whatever the table size, any interval [t_i, t_j] between two grants to one identity
    holds at most burst + rate * (t_j - t_i) grants (the token-bucket bound)."""
    rng = random.Random(7)
    rate, burst = 0.5, 3
    limiter = TokenBucketLimiter(rate=rate, burst=burst, max_identities=4)
    granted: dict[str, list[float]] = {}
    now = 0.0
    for _ in range(3000):
        now += rng.choice([0.0, 0.01, 0.1, 1.0, 5.0])
        who = f"agent:{rng.randrange(12)}"
        if limiter.allow(who, now):
            granted.setdefault(who, []).append(now)
    assert sum(len(times) for times in granted.values()) > 100
    for times in granted.values():
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= burst + rate * (times[j] - start) + 1e-9


def test_same_sequence_same_answers() -> None:
    rng = random.Random(1)
    calls = [(f"agent:{rng.randrange(50)}", rng.uniform(0, 100)) for _ in range(3000)]
    calls.sort(key=lambda c: c[1])
    runs = []
    for _ in range(2):
        limiter = TokenBucketLimiter(rate=0.2, burst=2, max_identities=20)
        runs.append([limiter.allow(who, now) for who, now in calls])
    assert runs[0] == runs[1]
    assert True in runs[0] and False in runs[0]
