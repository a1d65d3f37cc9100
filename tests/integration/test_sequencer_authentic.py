"""The sequencer judges events by signature and kind, never by its own clock: on the real
embedded broker, with the service's sequencer wiring (metrics, log line per refused batch)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ledger.config import Settings
from ledger.core.envelope import sign_event_with_id
from ledger.core.keys import Principal, principal_document
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.topics import Topics
from ledger.keyfiles import load_signer
from ledger.log.store import LedgerStore
from ledger.server.service import Service
from tests.factories import ALICE, T0, request, seeded_signer
from tests.ledger_support import grant
from tests.service_support import AGENTS, make_data_dir, produce

pytestmark = pytest.mark.integration

BRIEF = seeded_signer("brief-key")


def refused(service: Service, reason: str) -> float:
    value = service.metrics.registry.get_sample_value("govledger_ledger_refused_total",
                                                      {"reason": reason})
    return value or 0.0


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def published(data: Path, event_id: str) -> bool:
    """The event is a leaf under the latest signed checkpoint."""
    with LedgerStore(data / "ledger.db") as store:
        leaf, latest = store.find(event_id), store.latest_checkpoint()
        return leaf is not None and latest is not None and leaf.index < latest[0]


def logged(data: Path, event_id: str) -> bool:
    with LedgerStore(data / "ledger.db") as store:
        return store.find(event_id) is not None


def sequencer_only(data: Path, broker: EmbeddedBroker, topics: Topics,
                   clock: Callable[[], datetime] | None = None) -> Service:
    settings = Settings(data_dir=data, kafka_bootstrap=broker.bootstrap,
                        topic_prefix=topics.prefix, partitions=4, checkpoint_interval_s=0.1)
    if clock is None:
        return Service(settings, components=("sequencer",))
    return Service(settings, components=("sequencer",), clock=clock)


def test_authority_kinds_are_logged_only_under_the_authority_key(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics,
        caplog: pytest.LogCaptureFixture) -> None:
    data = make_data_dir(tmp_path / "data").root
    authority = load_signer(data / "keys" / "authority.key")
    _, request_id = sign_event_with_id(request(nonce="denied-request-0001"), ALICE)
    # The agent grants its own request with its own key (a well-formed, validly signed
    # envelope whose kind only the authority may sign), and the authority key signs a request.
    forged = grant(request_id, request_id, None, 0, "forged-grant-00001", signer=ALICE,
                   identity="agent:alice")
    by_authority = sign_event_with_id(request(signer="govledger:authority",
                                              nonce="authority-asks-001"), authority)
    genuine = grant(request_id, request_id, None, 0, "genuine-grant-0001", signer=authority)
    after = sign_event_with_id(request(nonce="genuine-request-01"), ALICE)
    caplog.set_level(logging.WARNING, logger="govledger.service")

    async def scenario() -> Service:
        service = sequencer_only(data, broker, topics)
        await service.start()
        try:
            # One key, one partition per topic: each refused event is consumed before the
            # genuine event produced after it.
            await produce(broker.bootstrap, topics.name("decisions"),
                          [(b"k", forged[0]), (b"k", genuine[0])])
            await produce(broker.bootstrap, topics.name("requests"),
                          [(b"k", by_authority[0]), (b"k", after[0])])
            await wait_for(lambda: published(data, genuine[1]) and published(data, after[1]),
                           "the genuine events")
        finally:
            await service.stop()
        return service

    service = asyncio.run(scenario())
    assert not logged(data, forged[1])
    assert not logged(data, by_authority[1])
    assert refused(service, "IDENTITY_MISMATCH") == 2
    lines = [r.getMessage() for r in caplog.records if "sequencer refused" in r.getMessage()]
    assert lines and all("IDENTITY_MISMATCH=" in line for line in lines)
    assert len(lines) <= 2  # one line per refused batch, not per event


def test_a_request_is_logged_after_its_key_expired(
        tmp_path: Path, broker: EmbeddedBroker, topics: Topics) -> None:
    """The processor decided while the key was in force; the sequencer consumes after
    ``not_after`` (its clock says so): the evidence is logged all the same."""
    window_end = T0 + timedelta(hours=1)
    principal = Principal("agent:brief", "acme", BRIEF.public_key, frozenset({"requester"}),
                          not_before=T0 - timedelta(hours=1), not_after=window_end)
    data = make_data_dir(tmp_path / "data", [*AGENTS, principal]).root
    keyring = json.loads((data / "keyring.json").read_text())
    assert principal_document(principal) in keyring["principals"]
    envelope, request_id = sign_event_with_id(
        request(signer="agent:brief", nonce="expired-key-000001", issued_at=T0), BRIEF)
    after = sign_event_with_id(request(nonce="valid-key-0000001"), ALICE)

    async def scenario() -> Service:
        service = sequencer_only(data, broker, topics,
                                 clock=lambda: window_end + timedelta(minutes=5))
        await service.start()
        try:
            await produce(broker.bootstrap, topics.name("requests"),
                          [(b"k", envelope), (b"k", after[0])])
            await wait_for(lambda: logged(data, after[1]), "the request produced after it")
        finally:
            await service.stop()
        return service

    service = asyncio.run(scenario())
    assert logged(data, request_id)
    assert refused(service, "KEY_REVOKED") == 0
