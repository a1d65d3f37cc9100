"""The monitor's rebuild from a real ledger.db: where the replay starts (by the authority's
clock, never an agent's claim) and no alert the ledger already holds is raised again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ledger.log.ledger_dir import open_ledger
from ledger.log.sequencer import keyring_verifier
from ledger.log.store import LedgerStore
from processors.core.monitor_rules import RuleConfig
from processors.monitor.replay import first_needed, replay
from processors.monitor.watcher import Watcher
from tests.factories import ALICE, AUTHORITY, ring_of, seeded_signer
from tests.ledger_support import make_ledger
from tests.monitor_scenarios import Scenario

pytestmark = pytest.mark.integration

RUNNER = seeded_signer("runner")
RING = ring_of((ALICE, "agent:alice", "acme", frozenset({"requester"})),
               (RUNNER, "runner:1", "acme", frozenset({"executor"})),
               (AUTHORITY, "govledger:authority", "*", frozenset({"authority"})))
CONFIG = RuleConfig(report_grace=timedelta(seconds=1), horizon=timedelta(hours=1))
NOW = datetime.now(UTC).replace(microsecond=0)


def ledger_of(tmp_path: Path, *scenarios: Scenario) -> Path:
    data = make_ledger(tmp_path)
    sequencer = open_ledger(data, keyring_verifier(RING))
    try:
        for s in scenarios:
            result = sequencer.submit([envelope for _, envelope, _, _ in s.published])
            assert not result.refused
    finally:
        sequencer.close()
    return data / "ledger.db"


def scenario(start: datetime) -> Scenario:
    return Scenario(AUTHORITY, "govledger:authority", ALICE, RUNNER, start=start)


def test_the_replay_starts_at_the_first_leaf_the_authority_signed_inside_the_horizon(
        tmp_path: Path) -> None:
    old = scenario(NOW - timedelta(minutes=90))  # within the context horizon
    for _ in range(20):
        old.honest()
    liar = scenario(NOW + timedelta(days=1))  # an agent's request claiming a future time
    liar.granted()
    liar.published = liar.published[:1]
    recent = scenario(NOW)
    recent.unallowed()
    db = ledger_of(tmp_path, old, liar, recent)
    with LedgerStore(db) as store:
        start = first_needed(store, NOW - CONFIG.horizon)
    # right after the old flows' last authority leaf (their last allowance): only that
    # flow's report, the liar's request and the recent flow are replayed
    assert start == len(old.published) - 1
    watcher = Watcher(RING, AUTHORITY, "govledger:authority", CONFIG)
    folded, _ = replay(watcher, db, NOW)
    assert folded == 2 + len(recent.published)
    assert [a.rule for a, _ in watcher.tick(NOW + timedelta(seconds=2))] == \
        ["execution-without-allowance"]


def test_an_alert_already_in_the_ledger_is_not_raised_again_after_a_replay(
        tmp_path: Path) -> None:
    s = scenario(NOW)
    s.unallowed()
    first = Watcher(RING, AUTHORITY, "govledger:authority", CONFIG)
    for _, envelope, _, _ in s.published:
        first.ingest(envelope, NOW)
    [(_, alert_envelope)] = first.tick(NOW + timedelta(seconds=2))
    logged = scenario(NOW)
    logged.published = [("alerts", alert_envelope, "", s.published[0][3])]
    db = ledger_of(tmp_path, s, logged)
    again = Watcher(RING, AUTHORITY, "govledger:authority", CONFIG)
    replay(again, db, NOW)
    assert again.tick(NOW + timedelta(seconds=2)) == []
