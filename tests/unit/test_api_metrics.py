"""ledger/server/metrics.py: names, bounded labels, and what is (not) observed."""

from __future__ import annotations

import math

import pytest

from ledger.server.metrics import DECISION_BUCKETS, Metrics, reason_label


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.mark.parametrize(("reasons", "label"), [
    ([], "none"), (["POLICY_DENY", "REPLAY"], "POLICY_DENY"), (["whatever; DROP"], "OTHER")])
def test_reason_label_is_the_first_known_reason_code(reasons: list[str], label: str) -> None:
    assert reason_label(reasons) == label


def test_decisions_are_counted_once_each_by_first_reason() -> None:
    metrics = Metrics()
    metrics.observe_decision("deny", ["POLICY_DENY", "RATE_LIMITED"], 0.003)
    metrics.observe_decision("deny", ["POLICY_DENY"], None)
    metrics.observe_decision("allow", [], 0.5)
    assert value(metrics, "govledger_decisions_total", outcome="deny",
                 reason="POLICY_DENY") == 2
    assert value(metrics, "govledger_decisions_total", outcome="deny",
                 reason="RATE_LIMITED") is None
    assert value(metrics, "govledger_decisions_total", outcome="allow", reason="none") == 1
    assert value(metrics, "govledger_decision_latency_seconds_count") == 2
    assert value(metrics, "govledger_decision_latency_seconds_bucket", le="0.005") == 1


def test_latency_buckets_span_1ms_to_10s() -> None:
    assert (DECISION_BUCKETS[0], DECISION_BUCKETS[-1]) == (0.001, 10.0)
    assert list(DECISION_BUCKETS) == sorted(DECISION_BUCKETS)


@pytest.mark.parametrize("bad", [-0.001, math.nan, math.inf])
def test_skewed_or_broken_durations_are_not_observed(bad: float) -> None:
    metrics = Metrics()
    metrics.observe_decision("allow", [], bad)
    metrics.observe_integration(bad)
    assert value(metrics, "govledger_decision_latency_seconds_count") == 0
    assert value(metrics, "govledger_sequencer_integration_seconds_count") == 0
    assert value(metrics, "govledger_decisions_total", outcome="allow", reason="none") == 1


def test_integration_and_lag() -> None:
    metrics = Metrics()
    metrics.observe_integration(1.5)
    metrics.set_lag("sequencer", "gov.requests", 42)
    metrics.set_lag("sequencer", "gov.decisions", -3)
    assert value(metrics, "govledger_sequencer_integration_seconds_sum") == 1.5
    assert value(metrics, "govledger_consumer_lag", component="sequencer",
                 topic="gov.requests") == 42
    assert value(metrics, "govledger_consumer_lag", component="sequencer",
                 topic="gov.decisions") == 0


def test_checkpoint_age_from_the_store_counts_from_when_its_size_was_first_seen() -> None:
    clock = FakeClock()
    metrics = Metrics(clock)
    metrics.observe_store(7, 5)
    clock.now += 30
    metrics.observe_store(9, 5)
    assert value(metrics, "govledger_checkpoint_age_seconds") == 30
    assert value(metrics, "govledger_ledger_size") == 9
    clock.now += 10
    metrics.observe_store(9, 9)
    assert value(metrics, "govledger_checkpoint_age_seconds") == 0
    assert value(metrics, "govledger_checkpoint_size") == 9


def test_the_sequencer_numbers_win_over_the_store_reading() -> None:
    clock = FakeClock()
    metrics = Metrics(clock)
    metrics.set_ledger(20, 0.25)
    clock.now += 100
    metrics.observe_store(15, 12)
    assert value(metrics, "govledger_ledger_size") == 20
    assert value(metrics, "govledger_checkpoint_age_seconds") == 0.25
    assert value(metrics, "govledger_checkpoint_size") == 12


def test_render_is_prometheus_text_with_every_metric_family() -> None:
    text = Metrics().render().decode()
    for name in ("govledger_decisions_total", "govledger_decision_latency_seconds",
                 "govledger_http_requests_total", "govledger_http_request_seconds",
                 "govledger_ledger_size", "govledger_checkpoint_age_seconds",
                 "govledger_consumer_lag", "govledger_sequencer_integration_seconds"):
        assert f"# TYPE {name} " in text, name


def test_ledger_refusals_are_counted_by_bounded_reason() -> None:
    metrics = Metrics()
    metrics.observe_refused({"IDENTITY_MISMATCH": 2, "MALFORMED": 1})
    metrics.observe_refused({"IDENTITY_MISMATCH": 1, "anything else": 4})
    assert value(metrics, "govledger_ledger_refused_total", reason="IDENTITY_MISMATCH") == 3
    assert value(metrics, "govledger_ledger_refused_total", reason="MALFORMED") == 1
    assert value(metrics, "govledger_ledger_refused_total", reason="OTHER") == 4


def test_events_appended_without_their_causes_are_counted_by_bounded_reason() -> None:
    metrics = Metrics()
    metrics.observe_out_of_order({"cause-missing": 2, "hold-full": 1})
    metrics.observe_out_of_order({"cause-missing": 1, "made up": 5})
    total = "govledger_ledger_out_of_order_total"
    assert value(metrics, total, reason="cause-missing") == 3
    assert value(metrics, total, reason="hold-full") == 1
    assert value(metrics, total, reason="OTHER") == 5
