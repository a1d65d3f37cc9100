"""``POST /v1/events?wait=S``: submit and wait for the decision in one request (issue 14,
item 2), on the running service (embedded broker, real ledger)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ledger.core.envelope import sign_event
from ledger.keyfiles import load_keyring, load_signer
from ledger.sdk.httpsig import SignedRequests
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
        with httpx.Client(auth=SignedRequests(ALICE), base_url=running.service.api_url,
                          timeout=30) as http:
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


def test_submit_refuses_an_event_signed_by_the_wrong_kind_of_key(tmp_path: Path) -> None:
    """The ledger's admission rule at the door: a request under the authority key is refused
    (422 IDENTITY_MISMATCH), not accepted with an id that never gets a decision."""
    running = Running(tmp_path / "data")
    try:
        keyring = load_keyring(tmp_path / "data" / "keyring.json")
        authority = load_signer(tmp_path / "data" / "keys" / "authority.key")
        principal = keyring.get(authority.key_id)
        misused = sign_event(request(signer=principal.identity, tenant=principal.tenant,
                                     issued_at=datetime.now(UTC).replace(microsecond=0),
                                     nonce="wrong-key-nonce-01"), authority)
        with httpx.Client(auth=SignedRequests(ALICE), base_url=running.service.api_url,
                          timeout=30) as http:
            answer = http.post("/v1/events", content=misused)
        assert answer.status_code == 422, answer.text
        assert answer.json()["reason"] == "IDENTITY_MISMATCH"
    finally:
        running.stop()
