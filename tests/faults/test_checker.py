"""The fault checker itself: on a real run without faults it finds nothing, and it names each
broken invariant when the client's record disagrees with the ledger and the journal."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.faults.check import check
from tests.faults.inject import Campaign
from tests.faults.load import POLICY, Sent, payload_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_checker_finds_nothing_on_a_clean_run_and_each_invariant_broken(
        tmp_path: Path) -> None:
    campaign = Campaign(tmp_path, seed=5, say=lambda _: None)
    campaign.load.connect(campaign.up.api)
    campaign.load.burst(8, only_requests=True)
    campaign.load.burst(8)
    campaign.finish()
    sent = campaign.load.sent
    assert campaign.report.violations == [], [v.line() for v in campaign.report.violations]
    granted = next(s for s in sent if s.decisions and
                   payload_of(s.decisions[0])["kind"] == "AuthorizationGranted")
    other = next(s for s in sent if s.decisions and s.event_id != granted.event_id)

    def invariants(*items: Sent) -> set[str]:
        return {v.invariant for v in check(campaign.data, [*sent, *items])}

    assert invariants(dataclasses.replace(granted, forbidden=POLICY)) == {"wrongful"}
    assert invariants(dataclasses.replace(granted, decisions=list(other.decisions))) == {
        "changed"}
    assert invariants(dataclasses.replace(granted, event_id="ab" * 32)) == {"lost"}
