"""The sequencer's child process reports its metrics as JSON lines on stdout, which the
service applies to its own /metrics (ledger/server/sequencer_process.py): what the child
writes is what the parent applies, and anything else changes nothing."""

from __future__ import annotations

import asyncio
import io

import pytest

from ledger.server.metrics import Metrics
from ledger.server.sequencer_process import MetricsLines, apply_metrics_line, relay_metrics

TOPICS = frozenset({"gov.requests", "gov.decisions"})


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


def test_what_the_child_writes_the_parent_applies() -> None:
    out = io.StringIO()
    child = MetricsLines(out)
    child.observe_refused({"KEY_UNKNOWN": 2, "not-a-reason": 1})
    child.observe_out_of_order({"cause_never_arrived": 3})
    child.set_ledger(7, 0.25)
    child.set_lag("sequencer", "gov.requests", 3)
    parent = Metrics()
    lines = out.getvalue().encode().splitlines(keepends=True)
    assert len(lines) == 4
    assert all(apply_metrics_line(line, parent, TOPICS) for line in lines)
    assert sample(parent, "govledger_ledger_refused_total", {"reason": "KEY_UNKNOWN"}) == 2
    assert sample(parent, "govledger_ledger_refused_total", {"reason": "OTHER"}) == 1
    assert sample(parent, "govledger_ledger_out_of_order_total",
                  {"reason": "OTHER"}) == 3  # not one of the hold-back's two reasons
    assert sample(parent, "govledger_ledger_size") == 7
    assert sample(parent, "govledger_checkpoint_age_seconds") == 0.25
    assert sample(parent, "govledger_consumer_lag",
                  {"component": "sequencer", "topic": "gov.requests"}) == 3


def test_a_lag_is_sent_when_it_changed() -> None:
    out = io.StringIO()
    child = MetricsLines(out)
    for lag in (3, 3, 3, 0, 0, 5):  # the worker reports on every pass of its loop
        child.set_lag("sequencer", "gov.requests", lag)
    child.set_lag("sequencer", "gov.decisions", 3)
    assert out.getvalue().splitlines() == [
        '{"topic":"gov.requests","lag":3}', '{"topic":"gov.requests","lag":0}',
        '{"topic":"gov.requests","lag":5}', '{"topic":"gov.decisions","lag":3}']


@pytest.mark.parametrize("line", [
    b"not json\n", b"[1]\n", b"{}\n", b"\n",
    b'{"refused": {"X": "1"}}\n', b'{"refused": {"X": -1}}\n', b'{"refused": {"X": true}}\n',
    b'{"late": ["x"]}\n',
    b'{"size": "9", "age_s": 1}\n', b'{"size": -1, "age_s": 1}\n', b'{"size": 9}\n',
    b'{"topic": 1, "lag": 2}\n', b'{"topic": ["gov.requests"], "lag": 2}\n',
    b'{"topic": "other.topic", "lag": 2}\n', b'{"topic": "gov.requests", "lag": "2"}\n',
    # valid JSON the metrics cannot take: numbers past a float, nesting past the parser
    b'{"size": 1' + b"0" * 400 + b', "age_s": 1}\n', b'{"size": 1, "age_s": 1e400}\n',
    b'{"refused": {"X": 1' + b"0" * 400 + b'}}\n', b'{"topic": "gov.requests", "lag": 1'
    + b"0" * 400 + b"}\n", b"[" * 100_000 + b"]" * 100_000 + b"\n",
])
def test_a_line_that_is_not_a_metric_changes_nothing(line: bytes) -> None:
    metrics = Metrics()
    before = metrics.render()
    assert not apply_metrics_line(line, metrics, TOPICS)
    assert metrics.render() == before


def test_the_relay_reads_to_the_end_whatever_the_lines_hold() -> None:
    """A reader that stopped would leave the child blocked on a full pipe: every line is
    read, the valid ones applied, whatever comes before them."""
    async def relay() -> Metrics:
        reader = asyncio.StreamReader(limit=1024)
        for line in (b"[" * 100_000 + b"\n", b'{"size": 1' + b"0" * 400 + b', "age_s": 1}\n',
                     b"x" * 5000 + b"\n", b"not json\n", b'{"size": 42, "age_s": 0.5}\n'):
            reader.feed_data(line)
        reader.feed_eof()
        metrics = Metrics()
        await asyncio.wait_for(relay_metrics(reader, metrics, TOPICS), 10)
        return metrics
    metrics = asyncio.run(relay())
    assert sample(metrics, "govledger_ledger_size") == 42
