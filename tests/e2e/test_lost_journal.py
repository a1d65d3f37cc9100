"""Issue 11, case 3, through ``govledger up``: stop the service, delete ``processor.db``, start
again. The processor rebuilds its state from the ledger before it decides anything, so a
new body signed with an already used nonce is REPLAY (it was granted), and the original
request resent gets its original grant, byte for byte (it was denied REPLAY): never two
decisions for one request id."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ledger.core.envelope import sign_event
from ledger.log.store import LedgerStore
from ledger.sdk.httpsig import SignedRequests
from tests.e2e.test_up import request_id
from tests.factories import ALICE, request
from tests.service_support import ServiceProcess, make_data_dir

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def submit_and_wait(api: str, envelope: bytes) -> dict[str, object]:
    with httpx.Client(auth=SignedRequests(ALICE), base_url=api, timeout=30) as http:
        posted = http.post("/v1/events", content=envelope,
                           headers={"content-type": "application/json"})
        assert posted.status_code == 202, posted.text
        decided = http.get(f"/v1/decisions/{request_id(envelope)}", params={"wait": 20})
        assert decided.status_code == 200, decided.text
        answer: dict[str, object] = decided.json()
        return answer


def wait_until_logged(ledger: Path, ids: list[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with LedgerStore(ledger) as store:
            if store.contains(ids) == set(ids):
                return
        time.sleep(0.1)
    raise AssertionError(f"the ledger did not log {ids} in {timeout_s} s")


def test_a_deleted_journal_is_rebuilt_from_the_ledger(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_data_dir(data)
    now = datetime.now(UTC).replace(microsecond=0)
    original = sign_event(request(nonce="lost-journal-nonce-1", issued_at=now), ALICE)
    twin = sign_event(request(nonce="lost-journal-nonce-1", issued_at=now,
                              resource="db/customers/*"), ALICE)

    up = ServiceProcess(data)
    try:
        granted = submit_and_wait(up.api, original)
        assert granted["allow"] is True, granted
        wait_until_logged(data / "ledger.db", [request_id(original), str(granted["event_id"])])
    finally:
        assert up.terminate() == 0, up.output()
    for name in ("processor.db", "processor.db-wal", "processor.db-shm"):
        (data / name).unlink(missing_ok=True)

    up = ServiceProcess(data)
    try:
        reused = submit_and_wait(up.api, twin)
        again = submit_and_wait(up.api, original)
    finally:
        assert up.terminate() == 0, up.output()
    assert (reused["allow"], reused["reasons"]) == (False, ["REPLAY"]), reused
    assert again["envelope"] == granted["envelope"]
    assert "rebuilding them from the ledger" in up.output()
