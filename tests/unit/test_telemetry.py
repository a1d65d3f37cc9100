"""Log formats (ledger/telemetry.py): JSON lines with the fields a call adds and the current
trace ids; the decision log line of the processor (processors/tracing.py)."""

from __future__ import annotations

import io
import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from ledger.core.streams import Stream
from ledger.errors import Reason
from ledger.telemetry import log_handler, tracing_configured
from processors.core.outcomes import Outcome, Output
from processors.tracing import log_decisions


def json_lines(logger: logging.Logger, emit: object) -> list[dict[str, object]]:
    stream = io.StringIO()
    handler = log_handler("json")
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        emit()  # type: ignore[operator]
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_log_line_has_time_level_logger_message_and_extra_fields() -> None:
    logger = logging.getLogger("govledger.test.json")
    [line] = json_lines(logger, lambda: logger.info("hello %s", "world",
                                                    extra={"request_id": "r1"}))
    assert line["message"] == "hello world"
    assert line["level"] == "INFO" and line["logger"] == "govledger.test.json"
    assert line["request_id"] == "r1" and "time" in line
    assert "trace_id" not in line  # no span: no ids


def test_json_log_line_inside_a_span_names_the_trace() -> None:
    tracer = TracerProvider().get_tracer("test")
    logger = logging.getLogger("govledger.test.json.trace")

    def emit() -> None:
        with tracer.start_as_current_span("work") as span:
            emit.trace_id = format(span.get_span_context().trace_id, "032x")  # type: ignore[attr-defined]
            logger.warning("inside")
    [line] = json_lines(logger, emit)
    assert line["trace_id"] == emit.trace_id  # type: ignore[attr-defined]
    assert len(str(line["span_id"])) == 16


def test_decision_lines_carry_request_id_reason_and_lineage_root() -> None:
    logger = logging.getLogger("govledger.processor.decisions")
    denied = Outcome("req-1", (Output(Stream.DECISIONS, b"root-1", b"{}"),), allow=False,
                     reasons=(Reason.POLICY_DENY,))
    echo = Outcome("req-2", (), allow=True, replayed=True)  # a redelivery: not a decision
    lines = json_lines(logger, lambda: log_decisions([denied, echo]))
    assert [(x["request_id"], x["decision"], x["reason"], x["lineage_root"]) for x in lines] \
        == [("req-1", "deny", "POLICY_DENY", "root-1")]


def test_tracing_is_configured_only_by_an_otlp_endpoint() -> None:
    assert not tracing_configured({})
    assert not tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    assert tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})


def test_log_level_flag_applies_to_json_logs_too() -> None:
    from pythonjsonlogger.json import JsonFormatter

    from ledger.cli.options import LogLevel, configure_logging, set_log_level
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        root.handlers.clear()
        set_log_level(LogLevel.WARNING)
        configure_logging(LogLevel.INFO, log_format="json")
        assert root.level == logging.WARNING
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        set_log_level(None)
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]

