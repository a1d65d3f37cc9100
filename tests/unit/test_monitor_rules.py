"""The monitor's detective rules, pure: events in, alerts out, time an argument."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ledger.core.alert_events import AlertRaised
from ledger.core.envelope import verify_envelope
from ledger.errors import Reason
from processors.core.monitor_rules import (
    AFTER_REVOCATION,
    DENIAL_BURST,
    OUT_OF_SCOPE,
    OUTSIDE_WINDOW,
    SILENT,
    UNALLOWED,
    Alert,
    MonitorState,
    RuleConfig,
)
from processors.monitor.watcher import Watcher
from tests.factories import ALICE, AUTHORITY, ring_of, seeded_signer
from tests.monitor_scenarios import Scenario

RUNNER = seeded_signer("runner")
RING = ring_of((ALICE, "agent:alice", "acme", frozenset({"requester"})),
               (RUNNER, "runner:1", "acme", frozenset({"executor"})),
               (AUTHORITY, "govledger:authority", "*", frozenset({"authority"})))
CONFIG = RuleConfig(report_grace=timedelta(seconds=2), silent_after=timedelta(seconds=30),
                    burst_threshold={"signature": 3}, storm_limit=2)


def scenario() -> Scenario:
    return Scenario(AUTHORITY, "govledger:authority", ALICE, RUNNER)


def judge(s: Scenario, later: timedelta = timedelta(seconds=3),
          state: MonitorState | None = None) -> list[Alert]:
    """Fold everything the scenario published, noticed at its start; tick ``later``."""
    state = state or MonitorState(CONFIG)
    alerts = []
    for _, _, event_id, event in s.published:
        alerts += state.observe(event_id, event, s.start)
    return alerts + state.tick(s.start + later)


def test_honest_execution_raises_nothing() -> None:
    s = scenario()
    s.honest()
    assert judge(s, later=timedelta(minutes=10)) == []


@pytest.mark.parametrize(("play", "rule"), [
    (Scenario.unallowed, UNALLOWED), (Scenario.after_revocation, AFTER_REVOCATION),
    (Scenario.outside_window, OUTSIDE_WINDOW), (Scenario.out_of_scope, OUT_OF_SCOPE)])
def test_each_execution_rule_alerts_with_the_report_as_evidence(play, rule) -> None:  # type: ignore[no-untyped-def]
    s = scenario()
    report = play(s)
    alerts = judge(s)
    assert [a.rule for a in alerts] == [rule]
    assert report in alerts[0].evidence
    assert alerts[0].subject == "runner:1"


def test_a_report_is_judged_only_after_its_grace() -> None:
    s = scenario()
    s.unallowed()
    assert judge(s, later=timedelta(seconds=1)) == []


def test_an_allowance_arriving_after_the_report_but_within_the_grace_is_no_alert() -> None:
    s = scenario()
    s.honest()
    s.published.sort(key=lambda item: item[3].KIND != "ExecutionCompleted")  # report first
    assert judge(s) == []


def test_a_report_against_another_artifact_than_its_allowance_alerts() -> None:
    s = scenario()
    root, artifact = s.granted()
    _, other = s.granted()
    s.execute(root, artifact)
    done = s.published.pop()
    event = done[3].model_copy(update={"artifact_id": other})
    s.emit("executions", event, RUNNER)
    assert [a.rule for a in judge(s)] == [UNALLOWED]


def test_an_allowance_without_a_report_alerts_after_the_bound_only() -> None:
    s = scenario()
    allowed = s.silent()
    # allowed one second after the start: silent from 31 s
    assert judge(s, later=timedelta(seconds=30)) == []
    alerts = judge(s, later=timedelta(seconds=31))
    assert [(a.rule, a.evidence) for a in alerts] == [(SILENT, (allowed,))]


def test_a_denial_burst_alerts_once_per_principal_and_tenant_at_the_threshold() -> None:
    s = scenario()
    s.burst(2)
    assert judge(s) == []
    s.burst(3)  # 5 in all: one alert per dimension, at the third
    alerts = judge(s)
    assert sorted((a.rule, str(a.subject)) for a in alerts) == [
        (DENIAL_BURST, "None"), (DENIAL_BURST, "agent:alice")]
    by_subject = {a.subject: a for a in alerts}
    assert len(by_subject["agent:alice"].evidence) == 3
    assert by_subject["agent:alice"].propose_suspension is True
    assert by_subject["agent:alice"].window is not None


def test_denials_of_another_class_do_not_count_toward_a_burst() -> None:
    s = scenario()
    for reason in (Reason.SIGNATURE_INVALID, Reason.SIGNATURE_INVALID, Reason.POLICY_DENY,
                   Reason.REPLAY):
        s.denied(reason)
    assert judge(s) == []


def test_the_same_events_folded_again_raise_no_second_alert() -> None:
    s = scenario()
    s.unallowed()
    state = MonitorState(CONFIG)
    first = judge(s, state=state)
    assert len(first) == 1
    assert judge(s, later=timedelta(seconds=10), state=state) == []


def test_a_rebuilt_state_raises_the_same_alert_id_and_time() -> None:
    s = scenario()
    s.unallowed()
    first, again = judge(s), judge(s, later=timedelta(seconds=9))
    assert [(a.alert_id, a.at, a.evidence) for a in first] == \
        [(a.alert_id, a.at, a.evidence) for a in again]


def test_an_alert_already_logged_is_not_raised_again() -> None:
    s = scenario()
    s.unallowed()
    alert = judge(s)[0]
    state = MonitorState(CONFIG)
    state.raised.add(alert.alert_id)  # what the ledger replay does with logged alerts
    assert judge(s, state=state) == []


def test_an_alert_storm_is_limited_per_rule_and_subject() -> None:
    s = scenario()
    for _ in range(5):
        s.unallowed()
    state = MonitorState(CONFIG)
    assert len(judge(s, state=state)) == 2
    assert state.suppressed[UNALLOWED] == 3


def test_old_facts_are_forgotten_after_the_horizon() -> None:
    s = scenario()
    s.honest()
    state = MonitorState(RuleConfig(horizon=timedelta(hours=1)))
    judge(s, state=state)
    assert state.seen
    state.tick(s.start + timedelta(hours=2))
    assert not state.seen and not state.grants and not state.allowed


def test_the_watcher_signs_alerts_with_a_deterministic_envelope() -> None:
    s = scenario()
    s.unallowed()
    watcher = Watcher(RING, AUTHORITY, "govledger:authority", CONFIG)
    for _, envelope, _, _ in s.published:
        assert watcher.ingest(envelope, s.start) == []
    [(alert, envelope)] = watcher.tick(s.start + timedelta(seconds=3))
    again = Watcher(RING, AUTHORITY, "govledger:authority", CONFIG)
    for _, raw, _, _ in s.published:
        again.ingest(raw, s.start)
    assert again.tick(s.start + timedelta(seconds=9))[0][1] == envelope
    verified = verify_envelope(envelope, RING, None)
    assert isinstance(verified.event, AlertRaised)
    assert verified.event.alert_id == alert.alert_id
    assert verified.event.proposed_suspension == "runner:1"


def test_forged_evidence_is_counted_and_never_alerted_on() -> None:
    s = Scenario(AUTHORITY, "govledger:authority", ALICE, seeded_signer("mallory"))
    s.unallowed()  # the "runner" key is not in the ring: every report is unverifiable
    watcher = Watcher(RING, AUTHORITY, "govledger:authority", CONFIG)
    for _, envelope, _, _ in s.published:
        watcher.ingest(envelope, s.start)
    watcher.ingest(b"{not an envelope", s.start)
    assert watcher.tick(s.start + timedelta(minutes=10)) == []
    refused = {sample.labels["reason"]: sample.value
               for sample in watcher.metrics.unverified.collect()[0].samples
               if sample.name.endswith("_total")}
    assert refused == {"KEY_UNKNOWN": 2.0, "MALFORMED": 1.0}


def test_context_folded_without_judging_raises_nothing() -> None:
    """A replay's leaves before the horizon: their reports were judged when new."""
    s = scenario()
    s.unallowed()
    s.burst(3)
    state = MonitorState(CONFIG)
    for _, _, event_id, event in s.published:
        state.observe(event_id, event, s.start, judge=False)
    assert state.tick(s.start + timedelta(minutes=10)) == []
    assert state.seen  # but folded: grants and allowances are there to judge later reports
