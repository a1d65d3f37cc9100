"""Traces and logs of a govledger process (docs/production.md "Tracing" and "Logs").

Tracing is exported only when configured: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set in the environment. Then this process gets a
TracerProvider with a batching OTLP/HTTP exporter (the standard ``OTEL_*`` variables apply:
headers, timeout, ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``), govledger's own spans are on
(ledger.kafka.tracecontext) and the API is instrumented with
opentelemetry-instrumentation-fastapi. Unset: nothing is installed or imported beyond the
OpenTelemetry API, and the hot paths skip every trace step on one boolean.

Logs: ``GOVLEDGER_LOG_FORMAT=json`` writes one JSON object per line (python-json-logger) with
``time``, ``level``, ``logger``, ``message``, the fields a call adds (``request_id``,
``decision``, ``reason``, ``lineage_root`` where decisions are logged) and, inside a traced
span, ``trace_id``/``span_id``. ``text`` (the default) keeps the plain format.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace

from ledger.kafka import tracecontext

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace.export import SpanExporter

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def tracing_configured(environ: Mapping[str, str] = os.environ) -> bool:
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


def configure_tracing(service: str, environ: Mapping[str, str] = os.environ,
                      exporter: SpanExporter | None = None) -> bool:
    """Install a TracerProvider when an OTLP endpoint is configured (or, for tests,
    ``exporter`` is given: spans go to it synchronously). Returns whether tracing is on.
    ``service`` names the process unless ``OTEL_SERVICE_NAME`` does."""
    if exporter is None and not tracing_configured(environ):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create(
        {"service.name": environ.get("OTEL_SERVICE_NAME") or service}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracecontext.enable()
    return True


def instrument_api(app: FastAPI) -> None:
    """Server spans for every HTTP request, when tracing is on (W3C context from the
    caller's headers is continued)."""
    if tracecontext.enabled():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")


class _TraceIds(logging.Filter):
    """Add trace_id and span_id of the current span to a record (JSON logs only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


def log_handler(log_format: str) -> logging.Handler:
    """A stderr handler in ``log_format`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
        handler.addFilter(_TraceIds())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    return handler
