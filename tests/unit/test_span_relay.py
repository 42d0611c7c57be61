"""Spans exported through the relay's child process arrive as the SDK made them: ids, parent,
attributes, events, links, status, times, scope and resource; a full queue drops and counts
instead of blocking; the child exits with the relay; bad OTEL_BSP_* values fail at start."""
from __future__ import annotations

import enum
import time

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from gateway.telemetry.span_relay import BatchSettings, SpanRelay
from gateway.telemetry.tracing import TracingConfigError, validate_environment
from tests.integration.otlp_collector import OtlpCollector

REMOTE_PARENT = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True,
                            trace_flags=TraceFlags(1))


@pytest.fixture
def collector(monkeypatch):
    c = OtlpCollector().start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", c.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    yield c
    c.stop()


def relayed_provider(settings: BatchSettings) -> tuple[TracerProvider, SpanRelay]:
    provider = TracerProvider(resource=Resource.create({"service.name": "relay-test", "gateway.component": "router"}))
    relay = SpanRelay(dict(provider.resource.attributes), provider.resource.schema_url, settings)
    provider.add_span_processor(relay)
    return provider, relay


def test_spans_arrive_as_they_were_made(collector, monkeypatch):
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # only the flush sends them
    provider, relay = relayed_provider(BatchSettings())
    tracer = provider.get_tracer("gateway", "1.2")
    parent_ctx = trace.set_span_in_context(NonRecordingSpan(REMOTE_PARENT))
    linked = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    local = SpanContext(0xABC, 0x123, is_remote=False, trace_flags=TraceFlags(1))
    with tracer.start_as_current_span("POST /v1/x", context=parent_ctx, kind=SpanKind.SERVER,
                                      links=[Link(linked, {"why": "reward"}), Link(local)]) as server:
        server.set_attributes({"http.route": "/v1/x", "gateway.propensity": 0.25, "n": 3, "ok": True,
                               "tags": ("a", "b")})
        with tracer.start_as_current_span("child") as child:
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "store down"))
    assert relay.force_flush()
    spans = {s["name"]: s for s in collector.spans}
    assert set(spans) == {"POST /v1/x", "child"}
    server_out, child_out = spans["POST /v1/x"], spans["child"]
    assert server_out["trace_id"] == f"{REMOTE_PARENT.trace_id:032x}"
    assert server_out["parent_span_id"] == f"{REMOTE_PARENT.span_id:016x}"
    assert server_out["span_id"] == f"{server.get_span_context().span_id:016x}"
    assert server_out["kind"] == SpanKind.SERVER.value + 1  # OTLP counts kinds from UNSPECIFIED = 0
    assert server_out["attributes"]["http.route"] == "/v1/x"
    assert server_out["attributes"]["gateway.propensity"] == 0.25
    assert server_out["attributes"]["n"] == 3 and server_out["attributes"]["ok"] is True
    assert server_out["links"] == [(f"{0xABC:032x}", f"{0xDEF:016x}"), (f"{0xABC:032x}", f"{0x123:016x}")]
    assert server_out["times"] == (server.start_time, server.end_time)
    assert server_out["scope"] == "gateway" and server_out["scope_version"] == "1.2"
    # OTLP's link flags: "is remote" known (0x100) and remote (0x200), as the SDK encodes them.
    assert server_out["link_flags"] == [0x100 | 0x200, 0x100]
    assert server_out["resource"]["service.name"] == "relay-test"
    assert server_out["resource"]["gateway.component"] == "router"
    assert child_out["parent_span_id"] == server_out["span_id"]
    assert child_out["events"] == [("retry", {"attempt": 2})]
    assert child_out["status"] == (2, "store down")  # STATUS_CODE_ERROR
    provider.shutdown()


def test_what_a_span_had_to_drop_is_reported(collector, monkeypatch):
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "2")
    provider, relay = relayed_provider(BatchSettings())
    with provider.get_tracer("gateway").start_as_current_span("crowded") as span:
        span.set_attributes({"a": 1, "b": 2, "c": 3, "d": 4})
    assert relay.force_flush()
    assert collector.spans[0]["dropped"] == (2, 0, 0)
    provider.shutdown()


class Colour(str, enum.Enum):
    RED = "red"


def test_an_attribute_of_an_unusual_type_is_exported_plainly_and_tracing_goes_on(collector):
    provider, relay = relayed_provider(BatchSettings())
    tracer = provider.get_tracer("gateway")
    with tracer.start_as_current_span("odd") as span:
        span.set_attributes({"colour": Colour.RED, "share": np.float64(0.25)})
    with tracer.start_as_current_span("after"):
        pass
    assert relay.force_flush()
    spans = {s["name"]: s for s in collector.spans}
    assert spans["odd"]["attributes"]["colour"] == "red"
    assert spans["odd"]["attributes"]["share"] == 0.25
    assert "after" in spans and relay._thread.is_alive()
    provider.shutdown()


def test_a_late_answer_to_an_earlier_flush_does_not_end_a_later_one(collector):
    provider, relay = relayed_provider(BatchSettings())
    relay._send(("flush", 5))  # as if flush 5 had timed out before its answer came
    assert relay._await_ack(6, time.monotonic() + 1.0) is False
    provider.shutdown()


def test_a_full_queue_drops_and_counts_without_blocking(collector, monkeypatch):
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "3")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    provider, relay = relayed_provider(BatchSettings())
    tracer = provider.get_tracer("gateway")
    # Holding the pipe keeps the sending thread from draining the queue meanwhile.
    with relay._pipe_lock:
        for i in range(5):
            with tracer.start_as_current_span(f"s{i}"):
                pass
    assert relay.dropped == 2
    assert relay.force_flush()
    assert sorted(s["name"] for s in collector.spans) == ["s0", "s1", "s2"]
    provider.shutdown()


def test_the_exporter_process_ends_with_the_relay(collector):
    provider, relay = relayed_provider(BatchSettings())
    with provider.get_tracer("gateway").start_as_current_span("last"):
        pass
    provider.shutdown()
    assert relay._child.poll() == 0
    assert [s["name"] for s in collector.spans] == ["last"]  # the stop flushed it


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_a_bad_batch_setting_fails_at_start_naming_it(monkeypatch, value):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", value)
    with pytest.raises(TracingConfigError, match="OTEL_BSP_MAX_QUEUE_SIZE"):
        validate_environment()
