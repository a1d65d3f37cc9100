"""W3C trace context (``traceparent``, ``tracestate``) in Kafka record headers, carried by
hand with the OpenTelemetry propagation API (docs/production.md "Tracing").

One trace follows a request: the SDK's ``govledger.submit`` span (or the API's HTTP span
around it) -> headers of the ``gov.requests`` record -> the processor's ``govledger.decide``
span -> headers of the decision it publishes -> the sequencer's ``govledger.sequence`` span.

Why by hand: opentelemetry-instrumentation-aiokafka (0.66b1, which installs with the pinned
aiokafka) wraps only ``send``, ``getone`` and ``getmany``. The processor publishes with
``send_batch`` (ledger.kafka.clients.publish_keyed), which it does not see, and its consumer
spans cannot parent a decision made for a whole ``getmany`` batch.

Cost when tracing is off: the shell asks :func:`enabled` (one attribute read) or, in the
SDK, :func:`active` (plus one context-variable read) before any trace work; no header is
added, no span made. ``ledger.telemetry.configure_tracing`` turns it on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

Headers = list[tuple[str, bytes]]
TRACER = trace.get_tracer("govledger")
_FIELDS = ("traceparent", "tracestate")


class _State:
    on = False


def enable(on: bool = True) -> None:
    """Turn govledger's own spans on (ledger.telemetry does, once a provider is set)."""
    _State.on = on


def enabled() -> bool:
    """Whether this process exports traces (govledger configured them)."""
    return _State.on


def active() -> bool:
    """Whether there is trace work to do: govledger's tracing is on, or the caller (an SDK
    user with an OpenTelemetry setup of their own) is inside a recording span."""
    return _State.on or trace.get_current_span().is_recording()


def inject_headers(context: Context | None = None) -> Headers:
    """The trace context (default: the current one) as Kafka headers; empty without one."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return [(name, value.encode("ascii")) for name, value in carrier.items()
            if name in _FIELDS]


def extract_context(headers: Iterable[tuple[str, bytes]] | None) -> Context:
    """The trace context a record carries (the first value of each field); an empty
    context when it carries none or one that does not parse (the propagator ignores it)."""
    carrier: dict[str, str] = {}
    for name, value in headers or ():
        if name in _FIELDS and name not in carrier and isinstance(value, bytes):
            carrier[name] = value.decode("ascii", "replace")
    return propagate.extract(carrier)


def consumer_spans(name: str, records: Sequence[object]) -> list[Span]:
    """One started span per record that carries a trace context, each a child of it (the
    caller ends them with :func:`end_spans`)."""
    spans = []
    for record in records:
        headers = getattr(record, "headers", None)
        if headers and any(key == "traceparent" for key, _ in headers):
            spans.append(TRACER.start_span(name, context=extract_context(headers),
                                           kind=SpanKind.CONSUMER,
                                           attributes={"messaging.destination.name":
                                                       str(getattr(record, "topic", ""))}))
    return spans


def end_spans(spans: Iterable[Span]) -> None:
    for span in spans:
        span.end()
