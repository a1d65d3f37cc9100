"""The SDK over the HTTP API (``Client(api=URL)``): the same verified decisions as over Kafka,
against the running service."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.core.events import AuthorizationRevoked
from ledger.errors import Reason, Rejected
from ledger.sdk.httpsig import SignedRequests
from ledger.sdk.sync_client import SyncClient
from tests.factories import ALICE, MALLORY, request
from tests.service_support import Running

pytestmark = pytest.mark.integration


def test_client_over_http_gets_verified_grants_denials_and_revocations(tmp_path: Path) -> None:
    running = Running(tmp_path / "data")
    try:
        service = running.service
        assert service.keyring is not None
        now = datetime.now(UTC).replace(microsecond=0)
        with SyncClient(authority=service.keyring, api=service.api_url,
                        api_auth=SignedRequests(ALICE)) as client:
            grant = client.request(request(issued_at=now, nonce="http-nonce-00000001"), ALICE)
            assert grant.allow and grant.artifact_id is not None
            assert grant.verified.principal.identity == "govledger:authority"
            denied = client.request(request(issued_at=now, nonce="http-nonce-00000002",
                                            resource="prod/secrets/*"), ALICE)
            assert not denied.allow and denied.reasons == (Reason.POLICY_DENY.value,)
            # Submit and fetch apart (two round trips) give the same verified decision.
            second = client.submit(request(issued_at=now, nonce="http-nonce-00000003"), ALICE)
            assert client.decision(second, timeout=30).allow
            applied = client.revoke(AuthorizationRevoked(
                signer="agent:alice", tenant="acme", nonce="http-revoke-0000001",
                issued_at=now, artifact_id=grant.artifact_id, root=grant.subject_id), ALICE)
            assert applied.allow
            with pytest.raises(Rejected) as refused:   # not in the keyring: the API refuses
                client.request(request(issued_at=now, nonce="http-nonce-00000004"), MALLORY)
            assert refused.value.reason is Reason.KEY_UNKNOWN
    finally:
        running.stop()
