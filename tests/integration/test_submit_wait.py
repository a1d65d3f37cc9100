"""``POST /v1/events?wait=S``: submit and wait for the decision in one request (issue 14,
item 2), on the running service (embedded broker, real ledger)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ledger.core.envelope import sign_event
from tests.factories import ALICE, request
from tests.service_support import Running

pytestmark = pytest.mark.integration


def test_submit_can_wait_for_the_decision_in_the_same_request(tmp_path: Path) -> None:
    running = Running(tmp_path / "data")
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        granted = sign_event(request(issued_at=now, nonce="submit-wait-nonce-1"), ALICE)
        forbidden = sign_event(request(issued_at=now, nonce="submit-wait-nonce-2",
                                       resource="prod/secrets/*"), ALICE)
        later = sign_event(request(issued_at=now, nonce="submit-wait-nonce-3"), ALICE)
        with httpx.Client(base_url=running.service.api_url, timeout=30) as http:
            answer = http.post("/v1/events", content=granted, params={"wait": 20})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["kind"] == "AuthorizationRequested"
            assert body["decision"]["allow"] is True
            assert body["decision"]["kind"] == "AuthorizationGranted"
            # the same decision as GET /v1/decisions returns, byte for byte
            again = http.get(f"/v1/decisions/{body['event_id']}").json()
            assert again == body["decision"]

            denied = http.post("/v1/events", content=forbidden, params={"wait": 20}).json()
            assert (denied["decision"]["allow"], denied["decision"]["reasons"]) == (
                False, ["POLICY_DENY"])

            accepted = http.post("/v1/events", content=later)  # no wait: as before
            assert accepted.status_code == 202
            assert "decision" not in accepted.json()
            assert http.post("/v1/events", content=later,
                             params={"wait": 31}).status_code == 422  # over the cap
    finally:
        running.stop()
