"""The SDK against the running stack: sync facade, subscriptions, verified proofs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.core.events import AuthorizationRevoked
from ledger.core.signers import SignerKeys
from ledger.errors import ConfigError, ProofError
from ledger.log.ledger_dir import read_vkey
from ledger.sdk.client import Client, ProofClient
from ledger.sdk.httpsig import SignedRequests
from ledger.sdk.sync_client import SyncClient
from tests.factories import ALICE, request
from tests.service_support import Running

pytestmark = pytest.mark.integration


def test_sync_client_request_revoke_and_verified_proofs(tmp_path: Path) -> None:
    running = Running(tmp_path / "data")
    try:
        service = running.service
        assert service.keyring is not None
        now = datetime.now(UTC).replace(microsecond=0)
        with SyncClient(running.settings, service.bootstrap, service.keyring) as client:
            grant = client.request(request(issued_at=now, nonce="sdk-nonce-000000001"), ALICE)
            assert grant.allow
            assert grant.artifact_id is not None
            applied = client.revoke(AuthorizationRevoked(
                signer="agent:alice", tenant="acme", nonce="sdk-revoke-00000001",
                issued_at=now, artifact_id=grant.artifact_id, root=grant.subject_id), ALICE)
            assert applied.allow
            assert applied.event.revoked == (grant.artifact_id,)  # type: ignore[attr-defined]

        proofs = ProofClient(service.api_url, read_vkey(running.settings.data_dir),
                             signers=SignerKeys(keyring=service.keyring),
                             auth=SignedRequests(ALICE))

        async def fetch() -> None:
            for _ in range(100):  # until the sequencer has logged and signed the grant
                try:
                    bundle = await proofs.lineage(grant.artifact_id or "")
                    break
                except ProofError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the grant never appeared under a checkpoint")
            assert bundle["hops"]  # verified offline inside lineage()
            note = await proofs.checkpoint()
            vkey = read_vkey(running.settings.data_dir)
            assert note.startswith(vkey.split("+")[0] + "\n")
            wrong = ProofClient(service.api_url, vkey.replace("govledger.test", "other.example"),
                                auth=SignedRequests(ALICE))
            with pytest.raises(ProofError):
                await wrong.inclusion(event_id=grant.artifact_id)
            anonymous = ProofClient(service.api_url, vkey)   # the bundle carries the event
            with pytest.raises(ConfigError, match="401"):
                await anonymous.inclusion(event_id=grant.artifact_id)
        asyncio.run(fetch())
    finally:
        running.stop()


def test_subscription_filters(tmp_path: Path) -> None:
    running = Running(tmp_path / "data")
    try:
        service = running.service
        assert service.keyring is not None

        async def watch() -> list[bool]:
            now = datetime.now(UTC).replace(microsecond=0)
            async with Client(running.settings, service.bootstrap, service.keyring) as client:
                seen: list[bool] = []

                async def collect() -> None:
                    async for decision in client.decisions(allow=False):
                        seen.append(decision.allow)
                        return
                task = asyncio.create_task(collect())
                await client.submit(request(issued_at=now, nonce="sub-nonce-00000001"), ALICE)
                await client.submit(request(issued_at=now, nonce="sub-nonce-00000002",
                                            resource="prod/secrets/*"), ALICE)
                await asyncio.wait_for(task, 20)
                return seen
        assert asyncio.run(watch()) == [False]
    finally:
        running.stop()
