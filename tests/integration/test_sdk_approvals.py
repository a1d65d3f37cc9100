"""The SDK follows a request that waits for human approval: pending meanwhile, then the
grant once two approvers (signed with the SDK's Approver) approved it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.core.keys import principal_document
from ledger.datadir import DataDir
from ledger.errors import Unavailable
from ledger.sdk.approvals import Approver
from ledger.sdk.client import Client
from tests.e2e.test_approvals_live import ANN, BEN, PAYER, PEOPLE, transfer
from tests.service_support import Running

pytestmark = pytest.mark.integration


def add_people(data: Path) -> None:
    keyring = DataDir(data).keyring
    doc = json.loads(keyring.read_text())
    doc["principals"] += [dict(principal_document(p)) for p in PEOPLE]
    keyring.write_text(json.dumps(doc, indent=2))


def test_the_client_says_pending_then_follows_to_the_grant(tmp_path: Path) -> None:
    data = tmp_path / "data"
    running = Running(data, before_start=lambda: add_people(data))
    try:
        service = running.service
        assert service.keyring is not None

        async def flow() -> None:
            async with Client(running.settings, service.bootstrap, service.keyring) as client:
                rid = await client.submit(transfer("sdk-payer-nonce-0001"), PAYER)
                with pytest.raises(Unavailable, match="waiting for 2 approvals by "
                                                      "payments-approver"):
                    await client.decision(rid, timeout=2)
                asked = client.pending(rid)
                assert asked is not None and asked.artifact.scope.actions == ("transfer",)
                now = datetime.now(UTC)
                for who, key in (("human:ann", ANN), ("human:ben", BEN)):
                    approver = Approver(who, "acme", key, clock=lambda: now)
                    await client.send_raw("requests", approver.approve(rid, rid), rid)
                granted = await client.decision(rid, timeout=30)
                assert granted.allow and client.pending(rid) is None
        asyncio.run(flow())
    finally:
        running.stop()
