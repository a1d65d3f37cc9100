"""The decision side's traces and decision log lines (docs/production.md "Tracing", "Logs").

:func:`decide_traced` runs one decision inside a ``govledger.decide`` span whose parent is
the trace context the request's record carries (ledger.kafka.tracecontext), and returns the
headers that carry the decision span on to what it publishes: the sequencer's span then
joins the same trace. The worker calls it only while tracing is on.

:func:`log_decisions` writes one DEBUG line per decision with ``request_id``, ``decision``,
``reason`` (the determining reason code) and ``lineage_root`` as fields (JSON logs show them
as keys); the worker calls it only when DEBUG is on, so INFO costs one level check a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from aiokafka import ConsumerRecord
from opentelemetry.trace import SpanKind

from ledger.core.streams import Stream
from ledger.kafka.tracecontext import TRACER, Headers, extract_context, inject_headers
from processors.core.engine import Engine
from processors.core.outcomes import Outcome

log = logging.getLogger("govledger.processor.decisions")


def decide_traced(engine: Engine, stream: Stream, raw: bytes, now: datetime,
                  record: ConsumerRecord[bytes, bytes]) -> tuple[Outcome, Headers]:
    """``engine.handle`` in a span continuing the record's trace; returns the outcome and
    the headers for its outputs. Raises what ``engine.handle`` raises."""
    with TRACER.start_as_current_span(
            "govledger.decide", context=extract_context(record.headers),
            kind=SpanKind.CONSUMER,
            attributes={"messaging.destination.name": record.topic,
                        "messaging.kafka.offset": record.offset,
                        "govledger.stream": stream.value}) as span:
        outcome = engine.handle(stream, raw, now)
        span.set_attribute("govledger.subject", outcome.subject)
        if outcome.allow is not None:
            span.set_attribute("govledger.decision", "allow" if outcome.allow else "deny")
        if outcome.reasons:
            span.set_attribute("govledger.reason", str(outcome.reasons[0]))
        return outcome, inject_headers()


def log_decisions(outcomes: Iterable[Outcome]) -> None:
    """One DEBUG line per decision made (redeliveries and non-decisions are skipped)."""
    for outcome in outcomes:
        if outcome.replayed or outcome.allow is None:
            continue
        decision = "allow" if outcome.allow else "deny"
        reason = str(outcome.reasons[0]) if outcome.reasons else "none"
        root = outcome.outputs[0].key.decode("utf-8", "replace") if outcome.outputs else ""
        log.debug("%s %s (%s), lineage root %s", decision, outcome.subject, reason, root,
                  extra={"request_id": outcome.subject, "decision": decision,
                         "reason": reason, "lineage_root": root})
