"""``govledger up`` runs the sequencer in a child process of its own (issue 14): what it
measures still reaches the service's /metrics (its stdout lines, relayed), the API follows
the keys the child's ledger holds, and a child that dies stops the service naming it. Real
embedded broker, real SQLite, real child processes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from ledger.config import Settings
from ledger.core.envelope import sign_event_with_id
from ledger.errors import ProofError
from ledger.keyfiles import load_keyring
from ledger.log.ledger_dir import DB_NAME, open_ledger
from ledger.log.sequencer import keyring_verifier
from ledger.server.children import Child, child_env
from tests.factories import ALICE, request
from tests.integration.test_failfast import kill_and_wait_dead
from tests.ledger_support import envelopes, grant
from tests.service_support import Running, make_data_dir, produce

pytestmark = pytest.mark.integration


def test_the_sequencer_process_metrics_reach_the_service(tmp_path: Path) -> None:
    running = Running(tmp_path / "data")
    service = running.service
    try:
        assert service.sequencer_pid is not None and service.processor_pid is not None
        _, request_id = sign_event_with_id(request(nonce="relay-request-0001"), ALICE)
        forged = grant(request_id, request_id, None, 0, "relay-forged-00001", signer=ALICE,
                       identity="agent:alice")  # an agent's grant: the sequencer refuses it
        running.call(produce(service.bootstrap, service.topics.name("decisions"),
                             [(b"k", forged[0])]), 30)
        registry = service.metrics.registry
        deadline = time.monotonic() + 30
        while (registry.get_sample_value("govledger_ledger_refused_total",
                                          {"reason": "IDENTITY_MISMATCH"}) or 0) < 1:
            assert time.monotonic() < deadline, "the refusal never reached /metrics"
            time.sleep(0.05)
        assert (registry.get_sample_value("govledger_ledger_size") or 0) > 0  # the genesis
    finally:
        running.stop()


@pytest.mark.parametrize("component", ["sequencer", "processor"])
def test_a_killed_child_process_stops_the_service_naming_it(tmp_path: Path,
                                                            component: str) -> None:
    running = Running(tmp_path / "data")
    service = running.service
    try:
        pid = service.sequencer_pid if component == "sequencer" else service.processor_pid
        assert pid is not None
        with httpx.Client(base_url=service.api_url, timeout=30) as http:
            assert http.get("/readyz").status_code == 200
            kill_and_wait_dead(pid)
            running.call(service.stop_event.wait(), 15)
        assert service.failed == component
        assert service.failure is not None
        assert f"(pid {pid}) exited with status -9" in service.failure
    finally:
        running.stop()


def test_a_sequencer_child_that_finds_a_tampered_ledger_exits_1_and_the_parent_raises_proof(
        tmp_path: Path) -> None:
    """The child checks the ledger against its last signed checkpoint before anything else;
    a ledger that does not match is its exit status 1, which the parent's start turns back
    into ProofError (`govledger up` exits 1, not 3). (`up` itself reads the ledger before it
    starts the child: tests/e2e/test_up_tampered.py.)"""
    data = make_data_dir(tmp_path / "data")  # with its genesis, as `up` leaves it
    seq = open_ledger(data.root, keyring_verifier(load_keyring(data.keyring)))
    size = seq.submit(envelopes(5)).tree_size
    seq.close()
    conn = sqlite3.connect(data.root / DB_NAME)
    conn.execute("DROP TRIGGER leaves_append_only_update")
    conn.execute("UPDATE leaves SET event_id = zeroblob(32) WHERE idx = ?", (size - 2,))
    conn.commit()
    conn.close()
    # no broker at all: the ledger check comes first
    settings = Settings(data_dir=data.root, kafka_bootstrap="127.0.0.1:9")
    child = Child("sequencer", "ledger.server.sequencer_process", data.root)

    async def start() -> None:
        await child.start(child_env(settings, settings.kafka_bootstrap or ""),
                          stdout=asyncio.subprocess.PIPE)
        try:
            await child.wait_ready(60)
        finally:
            await child.stop(5)
    with pytest.raises(ProofError, match="the sequencer process exited with status 1"):
        asyncio.run(start())
