"""Fault injection against ``govledger up``: a fixed smoke in the default suite, the long run
behind ``-m slow`` (and by hand: ``python -m tests.faults.inject --trials 20 --seed 23``).

The smoke's first trial is issue 11 item 1 made deterministic: ``up`` is stopped alone (API
and sequencer), 20 requests go straight to the broker, the processor journals and decides
them, then the process group is killed; the memory-only broker dies with it. Before the
issue 11 fixes the worker re-publishes only its journaled *outputs* after a restart, so the
ledger gets the 20 decisions and never the 20 requests: the ``lost`` assertion fails
("journaled, not in the ledger after the settle", trial 1), on every run. That is the bug,
not flakiness: it passes once the worker reconciles its journaled inputs against the
ledger. Do not mark it xfail. The third trial (SIGKILL of ``up`` right after the client read
a burst's decisions) is the same bug caught by timing: it loses requests about one run in
three.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.check import Violation
from tests.faults.inject import Fault, run_campaign
from tests.faults.report import Report, summary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SMOKE = [
    Fault("up", "stop-kill", "ledger-stopped"),
    Fault("processor", "stop-kill", "timed", delay_s=1.0, pause_s=0.5),
    Fault("up", "kill", "after-decisions", bursts=2),
]


def assert_held(report: Report) -> None:
    text = summary(report)
    by: dict[str, list[Violation]] = {}
    for v in report.violations:
        by.setdefault(v.invariant, []).append(v)
    assert not report.restart_failures, text
    assert not by.get("lost"), f"decided events missing from the ledger:\n{text}"
    assert not by.get("duplicated"), text
    assert not by.get("changed"), text
    assert not by.get("wrongful"), text
    assert report.audit_ok, report.audit
    assert report.stop_status == 0, text
    assert all(t.delivered for t in report.trials), "a fault found its target gone"
    assert all(t.decided for t in report.trials), "a trial decided nothing: no load"


def test_crashes_under_load_lose_nothing_and_change_no_decision(tmp_path: Path) -> None:
    report = run_campaign(tmp_path, len(SMOKE), seed=7, plan=SMOKE, say=lambda _: None)
    assert_held(report)


@pytest.mark.slow
def test_random_faults_under_load_keep_every_invariant(tmp_path: Path) -> None:
    report = run_campaign(tmp_path, 20, seed=23, say=lambda _: None)
    assert_held(report)
