"""Fail fast (issue 11): a dead embedded broker stops the service, and until it has stopped
every endpoint that needs the broker answers 503 at once (never 404 PENDING, never a 30 s
wait for a produce that cannot succeed). Real broker, real SQLite, the service in-process so
the test controls the moment of the kill."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from ledger.core.envelope import sign_event
from ledger.sdk.httpsig import SignedRequests
from tests.factories import ALICE, request
from tests.service_support import Running

pytestmark = pytest.mark.integration


def kill_and_wait_dead(pid: int) -> None:
    """SIGKILL ``pid`` and return once it is dead, leaving the reaping to its parent."""
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # the broker watcher reaped it: dead too
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def test_a_killed_broker_gets_503_from_every_broker_endpoint_then_stops_the_service(
        tmp_path: Path) -> None:
    running = Running(tmp_path / "data")
    service = running.service
    try:
        assert service.broker is not None and service.broker.pid is not None
        envelope = sign_event(request(issued_at=datetime.now(UTC).replace(microsecond=0),
                                      nonce="failfast-nonce-0001"), ALICE)
        with httpx.Client(auth=SignedRequests(ALICE), base_url=service.api_url,
                          timeout=60) as http, \
                ThreadPoolExecutor(1) as pool:
            assert http.get("/readyz").status_code == 200
            # A long wait in flight (or not yet: both must end in 503 soon after the kill).
            waiting = pool.submit(http.get, f"/v1/decisions/{secrets.token_hex(32)}",
                                  params={"wait": 25})
            kill_and_wait_dead(service.broker.pid)
            killed = time.monotonic()

            lookup = http.get(f"/v1/decisions/{secrets.token_hex(32)}", params={"wait": 5})
            assert lookup.status_code == 503, lookup.text
            assert lookup.json()["reason"] == "UNAVAILABLE"
            posted = http.post("/v1/events", content=envelope,
                               headers={"content-type": "application/json"})
            assert posted.status_code == 503, posted.text
            ready = http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["broker"] is False
            waited = waiting.result(timeout=60)
            assert waited.status_code == 503, waited.text
            assert time.monotonic() - killed < 10  # not the 25 s wait, not a 30 s produce

        running.call(service.stop_event.wait(), 10)  # the broker watcher stops the service
        assert service.failed == "broker"
        assert service.failure is not None and "exited with status -9" in service.failure
    finally:
        started = time.monotonic()
        running.stop()
    assert time.monotonic() - started < 15


def test_a_failed_decision_consumer_stops_the_service_and_decisions_answer_503(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer error aiokafka does not retry ends the API's decision reader: the service
    stops (exit 3 from ``up``) instead of answering 503 forever while looking alive."""
    running = Running(tmp_path / "data")
    service = running.service
    try:
        assert service.client is not None and service.client._consumer is not None

        async def broken_fetch(**_: object) -> dict[object, object]:
            raise TopicAuthorizationFailedError("gov.decisions")
        monkeypatch.setattr(service.client._consumer, "getmany", broken_fetch)
        running.call(service.stop_event.wait(), 10)
        assert service.failed == "decisions"
        assert service.failure is not None and "TopicAuthorizationFailed" in service.failure
        with httpx.Client(auth=SignedRequests(ALICE), base_url=service.api_url, timeout=30) as http:
            lookup = http.get(f"/v1/decisions/{secrets.token_hex(32)}", params={"wait": 5})
        assert lookup.status_code == 503, lookup.text
    finally:
        running.stop()


def test_a_broker_frozen_then_killed_under_load_still_stops_the_service_promptly(
        tmp_path: Path) -> None:
    """SIGSTOP the broker while a submit is in flight, then SIGKILL it: the API's producer
    holds an unacknowledged send, and its flush held the exit for Kafka's 30 s request
    timeout. After a failure every stop step is bounded (found by tests/faults)."""
    running = Running(tmp_path / "data")
    service = running.service
    try:
        assert service.broker is not None and service.broker.pid is not None
        envelope = sign_event(request(issued_at=datetime.now(UTC).replace(microsecond=0),
                                      nonce="failfast-nonce-0002"), ALICE)
        os.kill(service.broker.pid, signal.SIGSTOP)
        with httpx.Client(auth=SignedRequests(ALICE), base_url=service.api_url,
                          timeout=60) as http, \
                ThreadPoolExecutor(1) as pool:
            posting = pool.submit(http.post, "/v1/events", content=envelope,
                                  headers={"content-type": "application/json"})
            time.sleep(0.5)  # not a wait for a result: the post may or may not be in flight
            kill_and_wait_dead(service.broker.pid)
            running.call(service.stop_event.wait(), 10)
            assert posting.result(timeout=60).status_code == 503
    finally:
        started = time.monotonic()
        running.stop()
    assert time.monotonic() - started < 10
    assert service.failed == "broker"
