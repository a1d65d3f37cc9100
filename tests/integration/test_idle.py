"""Idle consumers back off (ledger/kafka/idle.py), and a request after a long idle is still
decided: the service's processor and sequencer and the SDK's decision reader all reach their
longest fetch wait, then the first request brings them back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.kafka.idle import IDLE_AFTER_S
from ledger.sdk.client import Client
from tests.factories import ALICE, request
from tests.service_support import Running

pytestmark = pytest.mark.integration

# the quiet period, then doubling up to the cap (10 -> 500 ms) in 200-500 ms rounds
IDLE_S = IDLE_AFTER_S + 5.0


def test_a_request_after_a_long_idle_still_gets_its_decision(tmp_path: Path) -> None:
    running = Running(tmp_path / "data")
    try:
        service = running.service
        assert service.keyring is not None
        now = datetime.now(UTC).replace(microsecond=0)

        async def scenario() -> list[bool]:
            async with Client(running.settings, service.bootstrap, service.keyring) as client:
                allowed = []
                for n in range(3):  # the second and third after a long idle
                    if n:
                        await asyncio.sleep(IDLE_S)
                    request_id = await client.submit(
                        request(issued_at=now, nonce=f"idle-nonce-{n:08d}"), ALICE)
                    allowed.append((await client.decision(request_id, timeout=15)).allow)
                return allowed

        assert asyncio.run(scenario()) == [True, True, True]
    finally:
        running.stop()
