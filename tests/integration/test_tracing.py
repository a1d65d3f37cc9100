"""One trace per request, from the SDK (or an HTTP caller) through Kafka to the decision and
the sequencer: the whole service in this process (processor in-process, embedded broker),
spans collected by an in-memory exporter (ledger.telemetry.configure_tracing's test hook)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ledger.config import Settings
from ledger.core.envelope import sign_event_with_id
from ledger.kafka import tracecontext
from ledger.sdk.client import Client
from ledger.sdk.httpsig import SignedRequests
from ledger.server.service import Service
from ledger.telemetry import configure_tracing
from tests.factories import ALICE, request
from tests.service_support import make_data_dir

pytestmark = pytest.mark.integration

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this module (a process has one global tracer provider: set once)."""
    spans = InMemorySpanExporter()
    assert configure_tracing("govledger-test", environ={}, exporter=spans)
    try:
        yield spans
    finally:
        tracecontext.enable(False)


def in_trace(spans: InMemorySpanExporter, trace_id: int) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        if span.context is not None and span.context.trace_id == trace_id:
            found.setdefault(span.name, []).append(span)
    return found


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def running(data: Path) -> Service:
    make_data_dir(data)
    service = Service(Settings(data_dir=data, api_port=0, checkpoint_interval_s=0.1,
                               processor_own_process=False, sequencer_own_process=False))
    await service.start()
    return service


def test_sdk_submit_decision_and_ledger_share_one_trace(
        tmp_path: Path, exporter: InMemorySpanExporter,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="govledger.processor.decisions")

    async def scenario() -> tuple[int, str]:
        service = await running(tmp_path / "data")
        try:
            assert service.keyring is not None
            async with Client(service.settings, service.bootstrap, service.keyring) as client:
                now = datetime.now(UTC).replace(microsecond=0)
                rid = await client.submit(request(issued_at=now, nonce="trace-nonce-000001"),
                                          ALICE)
                await client.decision(rid, timeout=20)
            submit = next(s for s in exporter.get_finished_spans()
                          if s.name == "govledger.submit"
                          and s.attributes is not None
                          and str(s.attributes["messaging.destination.name"]).endswith(
                              "requests"))
            assert submit.context is not None
            trace_id = submit.context.trace_id
            await until(lambda: len(in_trace(exporter, trace_id).get(
                "govledger.sequence", [])) >= 2, "the sequencer's spans in the request's trace")
            return trace_id, rid
        finally:
            await service.stop()

    trace_id, rid = asyncio.run(scenario())
    spans = in_trace(exporter, trace_id)
    submit, decide = spans["govledger.submit"][0], spans["govledger.decide"][0]
    assert decide.parent is not None and submit.context is not None
    assert decide.parent.span_id == submit.context.span_id  # across Kafka, by its headers
    assert decide.attributes is not None and decide.attributes["govledger.subject"] == rid
    assert decide.attributes["govledger.decision"] in ("allow", "deny")
    # The sequencer logs the request's record and the decision's, each in the same trace.
    parents = {s.parent.span_id for s in spans["govledger.sequence"] if s.parent is not None}
    assert decide.context is not None
    assert {submit.context.span_id, decide.context.span_id} <= parents
    # The worker's decision log line carries the fields JSON logs show as keys.
    line = next(r for r in caplog.records if getattr(r, "request_id", None) == rid)
    assert line.__dict__["decision"] in ("allow", "deny")
    assert line.__dict__["lineage_root"] == rid and line.__dict__["reason"]


def test_http_callers_trace_continues_through_the_api_to_the_decision(
        tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    envelope, rid = sign_event_with_id(
        request(issued_at=datetime.now(UTC).replace(microsecond=0),
                nonce="trace-nonce-000002"), ALICE)

    async def scenario() -> int:
        service = await running(tmp_path / "data")
        try:
            # POST ?wait answers with the decision: a read, so the caller signs it
            async with httpx.AsyncClient(base_url=service.api_url, timeout=30,
                                         auth=SignedRequests(ALICE)) as http:
                answer = await http.post(
                    "/v1/events", params={"wait": 20}, content=envelope,
                    headers={"content-type": "application/json",
                             "traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"})
            return answer.status_code
        finally:
            await service.stop()

    assert asyncio.run(scenario()) == 200
    spans = in_trace(exporter, int(CALLER_TRACE, 16))
    assert {"govledger.submit", "govledger.decide"} <= spans.keys()
    assert any(s.attributes is not None and s.attributes.get("govledger.subject") == rid
               for s in spans["govledger.decide"])
    assert any(s.kind.name == "SERVER" for group in spans.values() for s in group)


def test_without_tracing_no_header_and_no_span_is_made() -> None:
    """Off (the default when no OTLP endpoint is configured): the shell's guard says so,
    and nothing is injected."""
    assert configure_tracing("govledger-test", environ={}) is False
    was = tracecontext.enabled()
    tracecontext.enable(False)
    try:
        assert not tracecontext.active()
        assert tracecontext.inject_headers() == []
    finally:
        tracecontext.enable(was)
