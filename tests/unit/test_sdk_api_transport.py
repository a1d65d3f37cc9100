"""``Client(api=URL)`` trusts the API for delivery only: every decision it returns is verified
(authority key, authority role, about this very request) as over Kafka. The API here is a
fake that answers what a compromised or broken API could."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from ledger.core.envelope import event_id, payload_bytes, sign_event_with_id
from ledger.core.events import AuthorizationDenied
from ledger.core.keys import Signer
from ledger.errors import ConfigError, Reason, Rejected, Unavailable
from ledger.sdk.client import Client
from tests.factories import ALICE, AUTHORITY, MALLORY, default_ring, request

NOW = datetime.now(UTC).replace(microsecond=0)
REQUEST = request(issued_at=NOW, nonce="fake-api-nonce-0001")
REQUEST_ID = event_id(payload_bytes(REQUEST))


def denial(about: str, signer: Signer = AUTHORITY, identity: str = "govledger:authority",
           ) -> bytes:
    envelope, _ = sign_event_with_id(AuthorizationDenied(
        signer=identity, tenant="acme", nonce="fake-api-deny-0001", issued_at=NOW,
        request_id=about, reasons=(Reason.POLICY_DENY,)), signer)
    return envelope


def answering(status: int, body: dict[str, object]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(http_request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=json.dumps(body).encode(),
                              headers={"content-type": "application/json"})
    return handler


def decided(envelope: bytes) -> dict[str, object]:
    return {"event_id": REQUEST_ID, "kind": "AuthorizationRequested", "topic": "gov.requests",
            "decision": {"envelope": envelope.decode(), "event_id": "0" * 64,
                         "kind": "AuthorizationDenied", "allow": False, "reasons": []}}


def ask(handler: Callable[[httpx.Request], httpx.Response], timeout: float = 5.0) -> object:
    async def run() -> object:
        client = Client(authority=default_ring(), api="http://api.test")
        await client.start()
        assert client._api is not None
        client._api._http = httpx.AsyncClient(base_url="http://api.test",
                                              transport=httpx.MockTransport(handler))
        try:
            return await client.request(REQUEST, ALICE, timeout=timeout)
        finally:
            await client.stop()
    return asyncio.run(run())


def test_a_verified_decision_about_the_request_is_returned() -> None:
    decision = ask(answering(200, decided(denial(REQUEST_ID))))
    assert decision.subject_id == REQUEST_ID and not decision.allow  # type: ignore[attr-defined]


@pytest.mark.parametrize(("envelope", "reason"), [
    (denial("f" * 64), Reason.IDENTITY_MISMATCH),                          # another request
    (denial(REQUEST_ID, ALICE, "agent:alice"), Reason.IDENTITY_MISMATCH),   # not the authority
    (denial(REQUEST_ID, MALLORY), Reason.KEY_UNKNOWN),                     # unknown key
    (denial(REQUEST_ID).replace(b'"sig":"', b'"sig":"A'), None),            # corrupted
])
def test_a_decision_that_does_not_verify_raises_and_is_never_returned(
        envelope: bytes, reason: Reason | None) -> None:
    with pytest.raises(Rejected) as info:
        ask(answering(200, decided(envelope)))
    assert reason is None or info.value.reason is reason


def test_pending_until_the_timeout_is_unavailable_never_a_decision() -> None:
    def handler(http_request: httpx.Request) -> httpx.Response:
        if http_request.method == "POST":
            return answering(202, {"event_id": REQUEST_ID, "kind": "AuthorizationRequested",
                                   "topic": "gov.requests"})(http_request)
        return answering(404, {"reason": "PENDING", "detail": "not yet"})(http_request)
    with pytest.raises(Unavailable, match="no decision"):
        ask(handler, timeout=0.2)


def test_refusals_and_outages_keep_their_meaning() -> None:
    with pytest.raises(Rejected) as info:
        ask(answering(422, {"reason": "KEY_UNKNOWN", "detail": "who?"}))
    assert info.value.reason is Reason.KEY_UNKNOWN
    with pytest.raises(Unavailable):
        ask(answering(503, {"reason": "UNAVAILABLE", "detail": "broker down"}))
    with pytest.raises(Unavailable):
        ask(answering(500, {"reason": "INTERNAL", "detail": "?"}))
    with pytest.raises(Rejected, match="another event id"):
        ask(answering(202, {"event_id": "e" * 64, "kind": "x", "topic": "y"}))


def test_a_client_needs_a_transport_and_the_authority_keys() -> None:
    with pytest.raises(ConfigError, match="authority"):
        Client(api="http://api.test")
    with pytest.raises(ConfigError, match="api=URL"):
        Client(authority=default_ring())
