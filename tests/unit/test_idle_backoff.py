"""The idle backoff's state machine (ledger/kafka/idle.py): longer fetch waits only after a
quiet period, the base wait again at once on data or on a wake."""

from __future__ import annotations

from aiokafka.consumer.fetcher import Fetcher

from ledger.kafka.idle import IdleBackoff


def quiet_rounds(backoff: IdleBackoff, start: float, rounds: int, step: float = 0.2
                 ) -> list[int]:
    return [backoff.observe(False, start + step * (i + 1)) for i in range(rounds)]


def test_a_busy_consumer_keeps_the_base_wait() -> None:
    backoff = IdleBackoff(base_ms=10, cap_ms=200, quiet_s=1.0)
    assert {backoff.observe(True, t / 10) for t in range(100)} == {10}


def test_empty_rounds_inside_the_quiet_period_keep_the_base_wait() -> None:
    backoff = IdleBackoff(base_ms=10, cap_ms=200, quiet_s=1.0)
    backoff.observe(True, 0.0)
    assert quiet_rounds(backoff, 0.0, 4) == [10, 10, 10, 10]  # up to 0.8 s


def test_after_the_quiet_period_the_wait_doubles_up_to_the_cap() -> None:
    backoff = IdleBackoff(base_ms=10, cap_ms=200, quiet_s=1.0)
    backoff.observe(True, 0.0)
    assert quiet_rounds(backoff, 0.0, 12) == [10, 10, 10, 10, 20, 40, 80, 160, 200, 200,
                                              200, 200]


def test_the_first_records_bring_the_base_wait_back_at_once() -> None:
    backoff = IdleBackoff(base_ms=10, cap_ms=200, quiet_s=1.0)
    backoff.observe(True, 0.0)
    quiet_rounds(backoff, 0.0, 20)
    assert backoff.wait_ms == 200
    assert backoff.observe(True, 4.2) == 10
    assert backoff.observe(False, 4.4) == 10  # and the quiet period starts again


def test_a_wake_brings_the_base_wait_back_at_once() -> None:
    backoff = IdleBackoff(base_ms=10, cap_ms=200, quiet_s=1.0)
    backoff.observe(True, 0.0)
    quiet_rounds(backoff, 0.0, 20)
    assert backoff.wake(4.1) == 10
    assert backoff.observe(False, 4.3) == 10


def test_a_base_wait_above_the_cap_never_changes() -> None:
    """Apache Kafka: 500 ms base (it answers a waiting fetch on data), nothing to back off."""
    backoff = IdleBackoff(base_ms=500, cap_ms=200, quiet_s=1.0)
    backoff.observe(True, 0.0)
    assert set(quiet_rounds(backoff, 0.0, 20)) == {500}


def test_aiokafka_still_builds_each_fetch_from_the_attribute_set_fetch_wait_writes() -> None:
    """set_fetch_wait writes Fetcher._fetch_max_wait_ms (no public setter); an aiokafka
    upgrade that renames it must fail here, not silently stop the backoff."""
    assert "_fetch_max_wait_ms" in Fetcher.__init__.__code__.co_names
    assert "_fetch_max_wait_ms" in Fetcher._get_actions_per_node.__code__.co_names
