"""Governance is consumed ahead of requests (issue 13 item 3), across batches too: a
suspension that reached the worker's consumer together with a backlog of requests is applied
before any of them is decided, not after the batches the consumer happened to hand out
first. Real embedded broker, real SQLite; the inputs are produced before the worker starts,
so its first fetch holds them all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ledger.config import Settings
from ledger.core.envelope import parse_envelope, parse_payload, sign_event
from ledger.core.events import AuthorizationDenied
from ledger.core.governance_events import TenantSuspended
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.topics import Topics
from ledger.keyfiles import load_signer
from ledger.log.governance import OPERATOR_IDENTITY
from tests.factories import ALICE, T0, request
from tests.service_support import collect, make_data_dir, produce, worker_running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
BACKLOG = 1_500


def test_a_suspension_fetched_with_a_backlog_of_requests_is_applied_first(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    data = make_data_dir(tmp_path / "data")
    settings = Settings(data_dir=data.root, topic_prefix=topics.prefix, partitions=4)
    asked = [sign_event(request(nonce=f"ahead-{n:012d}", issued_at=T0), ALICE)
             for n in range(BACKLOG)]
    suspension = sign_event(TenantSuspended(
        signer=OPERATOR_IDENTITY, tenant="acme", nonce="ahead-suspend-0001", issued_at=T0,
        reason="incident"), load_signer(data.operator_key))

    async def scenario() -> list[bytes]:
        # Requests on every partition, then the suspension: all there before the worker runs.
        await produce(broker.bootstrap, topics.requests,
                      [(f"k{n % 16}".encode(), raw) for n, raw in enumerate(asked)])
        await produce(broker.bootstrap, topics.governance, [(b"governance", suspension)])
        async with worker_running(settings, broker.bootstrap):
            return await collect(broker.bootstrap, topics.decisions, BACKLOG + 1, 120)

    decided = asyncio.run(scenario())
    answers = [parse_payload(parse_envelope(raw).payload_type, parse_envelope(raw).payload)
               for raw in decided]
    denials = [a for a in answers if isinstance(a, AuthorizationDenied)]
    reasons = {d.reasons[0].value for d in denials}
    assert len(answers) == BACKLOG + 1  # the suspension's acknowledgement and a decision each
    assert len(denials) == BACKLOG, f"{BACKLOG - len(denials)} decided before the suspension"
    assert reasons == {"TENANT_SUSPENDED"}
