"""JSON log lines carry the trace and span of the work they describe."""
from __future__ import annotations

import io
import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from gateway.telemetry.logs import JsonFormatter


def _logger(stream: io.StringIO) -> logging.Logger:
    logger = logging.getLogger("gateway.test-logs")
    logger.handlers.clear()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def test_a_line_inside_a_span_carries_its_trace_and_span_ids():
    stream = io.StringIO()
    logger = _logger(stream)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("work") as span:
        logger.info("variant %s failed", "xgb", extra={"experiment": "churn"})
    line = json.loads(stream.getvalue())
    ctx = span.get_span_context()
    assert line["message"] == "variant xgb failed" and line["level"] == "info"
    assert line["trace_id"] == format(ctx.trace_id, "032x") and line["span_id"] == format(ctx.span_id, "016x")
    assert line["experiment"] == "churn"


def test_a_line_outside_any_span_has_no_trace_ids_and_keeps_exceptions():
    stream = io.StringIO()
    logger = _logger(stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("refresh failed")
    line = json.loads(stream.getvalue())
    assert "trace_id" not in line and "ValueError: boom" in line["exception"]
