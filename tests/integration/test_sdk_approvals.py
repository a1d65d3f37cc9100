"""The SDK follows a request that waits for human approval: pending meanwhile, then the
grant once two approvers (signed with the SDK's Approver) approved it; the approval webhook
posts the signed pending answer, retrying a failed delivery."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from ledger.core.approval_events import ApprovalRequired
from ledger.core.envelope import verify_envelope
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


class Receiver(BaseHTTPRequestHandler):
    """Answers 503 to the first POST, 200 after; keeps the bodies it accepted."""

    bodies: ClassVar[list[bytes]] = []
    attempts = 0
    got = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).attempts += 1
        if type(self).attempts == 1:
            self.send_response(503)
        else:
            type(self).bodies.append(body)
            type(self).got.set()
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def test_the_webhook_posts_each_new_pending_request_signed_and_retries(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    data = tmp_path / "data"
    running = Running(data, before_start=lambda: add_people(data), approval_webhook=url)
    try:
        service = running.service
        assert service.keyring is not None
        keyring = service.keyring

        async def ask() -> str:
            async with Client(running.settings, service.bootstrap, keyring) as client:
                return await client.submit(transfer("hook-payer-nonce-001"), PAYER)
        rid = asyncio.run(ask())
        assert Receiver.got.wait(60), "the webhook was never delivered"
        [body] = Receiver.bodies
        verified = verify_envelope(body, keyring, datetime.now(UTC))
        assert "authority" in verified.principal.roles  # the body is the signed answer
        assert isinstance(verified.event, ApprovalRequired)
        assert verified.event.request_id == rid and Receiver.attempts == 2
    finally:
        running.stop()
        server.shutdown()
        server.server_close()
        thread.join(10)
