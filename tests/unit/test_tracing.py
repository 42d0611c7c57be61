"""Unit tests for gateway.telemetry.tracing: W3C context in and across the Ray Serve hop, and
the OTEL_* configuration checks.

The global tracer provider can be set only once per process, so these tests never touch it:
spans come from a private SDK provider (`provider.get_tracer`). The functions under test only
use the global propagator and the current context, which work with any SDK provider's spans.
"""
from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from gateway.telemetry import tracing
from gateway.telemetry.tracing import (
    MAX_TRACEPARENT_LEN,
    TracingConfigError,
    child_span,
    context_from_carrier,
    current_carrier,
    exporter_names,
    incoming_context,
    validate_environment,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"

OTEL_VARS = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_PROPAGATORS",
)


@pytest.fixture(scope="module")
def provider_and_exporter():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def spans(provider_and_exporter):
    """A tracer on the private provider, and a function returning the finished spans by name."""
    provider, exporter = provider_and_exporter
    exporter.clear()

    def finished():
        return {s.name: s for s in exporter.get_finished_spans()}

    yield provider.get_tracer("test"), finished
    exporter.clear()


@pytest.fixture
def clean_env(monkeypatch):
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _hex(span_id: int, width: int) -> str:
    return format(span_id, f"0{width}x")


def _assert_root(span) -> None:
    assert span.parent is None
    assert _hex(span.context.trace_id, 32) != TRACE_ID


# --------------------------------------------------------------------------- child spans


def test_child_span_of_a_recorded_span_is_recorded_under_it(spans, monkeypatch):
    tracer, finished = spans
    monkeypatch.setattr(tracing, "tracer", lambda name="gateway": tracer)
    with tracer.start_as_current_span("predict") as outer:
        with child_span("redis.read", {"db.system": "redis"}) as inner:
            assert trace.get_current_span() is inner
    span = finished()["redis.read"]
    assert span.parent.span_id == outer.get_span_context().span_id
    assert span.attributes["db.system"] == "redis"


def test_child_span_of_an_unsampled_span_opens_nothing_and_keeps_the_parents_context(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr(tracing, "tracer", lambda name="gateway": tracer)
    with tracer.start_as_current_span("predict") as outer:
        with child_span("redis.read", {"db.system": "redis"}):
            # What logs and the decision log take from here: still the request's span.
            assert trace.get_current_span() is outer
    with child_span("redis.read"):  # outside any span
        assert not trace.get_current_span().get_span_context().is_valid
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


# --------------------------------------------------------------------------- incoming context


def test_no_span_is_active_outside_the_tests():
    # The root-trace tests below rely on no ambient span.
    assert not trace.get_current_span().get_span_context().is_valid


def test_valid_traceparent_makes_the_new_span_a_child(spans):
    tracer, finished = spans
    with tracer.start_as_current_span("predict", context=incoming_context({"traceparent": TRACEPARENT})):
        pass
    span = finished()["predict"]
    assert _hex(span.context.trace_id, 32) == TRACE_ID
    assert span.parent is not None and span.parent.is_remote
    assert _hex(span.parent.span_id, 16) == SPAN_ID


def test_tracestate_is_carried_with_the_traceparent(spans):
    tracer, finished = spans
    ctx = incoming_context({"traceparent": TRACEPARENT, "tracestate": "vendor=abc"})
    with tracer.start_as_current_span("predict", context=ctx):
        pass
    span = finished()["predict"]
    assert _hex(span.context.trace_id, 32) == TRACE_ID
    assert span.context.trace_state.get("vendor") == "abc"


def test_oversized_tracestate_is_dropped_but_the_parent_kept(spans):
    tracer, finished = spans
    ctx = incoming_context({"traceparent": TRACEPARENT, "tracestate": "v=" + "a" * 600})
    with tracer.start_as_current_span("predict", context=ctx):
        pass
    span = finished()["predict"]
    assert _hex(span.parent.span_id, 16) == SPAN_ID
    assert span.context.trace_state.get("v") is None


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "",
        f"00-{TRACE_ID}-{SPAN_ID}",  # missing flags
        f"00-{'0' * 32}-{SPAN_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE_ID}-{SPAN_ID}-01",  # forbidden version
        f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",  # upper-case hex
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",  # version 00 has exactly four fields
    ],
)
def test_malformed_traceparent_starts_a_new_root_trace(spans, traceparent):
    tracer, finished = spans
    with tracer.start_as_current_span("predict", context=incoming_context({"traceparent": traceparent})):
        pass
    _assert_root(finished()["predict"])


def test_missing_traceparent_starts_a_new_root_trace(spans):
    tracer, finished = spans
    with tracer.start_as_current_span("predict", context=incoming_context({"tracestate": "a=b"})):
        pass
    _assert_root(finished()["predict"])


def _future_version_traceparent(length: int) -> str:
    # A later traceparent version may carry extra fields, which the W3C propagator accepts; so
    # only the gateway's own length limit can refuse a long one.
    head = f"cc-{TRACE_ID}-{SPAN_ID}-01-"
    return head + "a" * (length - len(head))


def test_long_but_allowed_traceparent_is_still_used(spans):
    tracer, finished = spans
    tp = _future_version_traceparent(MAX_TRACEPARENT_LEN)
    with tracer.start_as_current_span("predict", context=incoming_context({"traceparent": tp})):
        pass
    assert _hex(finished()["predict"].parent.span_id, 16) == SPAN_ID


@pytest.mark.parametrize("length", [MAX_TRACEPARENT_LEN + 1, 513, 10_000])
def test_oversized_traceparent_is_ignored(spans, length):
    assert MAX_TRACEPARENT_LEN == 512
    tracer, finished = spans
    tp = _future_version_traceparent(length)
    assert len(tp) == length
    with tracer.start_as_current_span("predict", context=incoming_context({"traceparent": tp})):
        pass
    _assert_root(finished()["predict"])


# --------------------------------------------------------------------------- across the Ray Serve hop


def test_carrier_crosses_the_serve_hop_as_a_child(spans):
    tracer, finished = spans
    with tracer.start_as_current_span("proxy") as proxy:
        carrier = current_carrier()
    assert set(carrier) >= {"traceparent"}
    # It travels inside a Ray Serve call argument: plain strings only.
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in carrier.items())
    # "Remote" side: a replica with no ambient context, only the carrier that travelled.
    assert not trace.get_current_span().get_span_context().is_valid
    with tracer.start_as_current_span("replica", context=context_from_carrier(carrier)):
        pass
    remote = finished()["replica"]
    assert remote.context.trace_id == proxy.context.trace_id
    assert remote.parent.span_id == proxy.context.span_id


def test_full_chain_client_to_proxy_to_replica_is_one_trace(spans):
    tracer, finished = spans
    with tracer.start_as_current_span("proxy", context=incoming_context({"traceparent": TRACEPARENT})):
        carrier = current_carrier()
    with tracer.start_as_current_span("replica", context=context_from_carrier(carrier)):
        pass
    got = finished()
    assert _hex(got["proxy"].parent.span_id, 16) == SPAN_ID
    assert got["replica"].parent.span_id == got["proxy"].context.span_id
    assert {_hex(s.context.trace_id, 32) for s in got.values()} == {TRACE_ID}


def test_carrier_outside_any_span_is_empty():
    assert current_carrier() == {}


def test_empty_or_missing_carrier_gives_a_root_span(spans):
    tracer, finished = spans
    with tracer.start_as_current_span("a", context=context_from_carrier(None)):
        pass
    with tracer.start_as_current_span("b", context=context_from_carrier({})):
        pass
    got = finished()
    assert got["a"].parent is None and got["b"].parent is None
    assert got["a"].context.trace_id != got["b"].context.trace_id


def test_carried_span_of_a_sampled_request_is_its_child(spans, monkeypatch):
    tracer, finished = spans
    monkeypatch.setattr(tracing, "tracer", lambda name="gateway": tracer)
    with tracer.start_as_current_span("request") as request:
        carrier = current_carrier()
    with tracing.carried_span("variant.predict", carrier) as span:
        span.set_attributes({"gateway.rows": 1})
    got = finished()["variant.predict"]
    assert got.parent.span_id == request.context.span_id and got.attributes["gateway.rows"] == 1


@pytest.mark.parametrize("carrier", [{"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-00"}, {}, None])
def test_carried_span_of_an_unsampled_or_no_request_records_nothing(spans, monkeypatch, carrier):
    # The variant's span costs ~25 us even when nobody records it: an unsampled request (flag
    # 00) would not have it recorded by a parent-based sampler, and a call outside any request
    # (a tool, in process) has no trace to join.
    tracer, finished = spans
    monkeypatch.setattr(tracing, "tracer", lambda name="gateway": tracer)
    with tracing.carried_span("variant.predict", carrier) as span:
        span.set_attributes({"gateway.rows": 1})  # callers set attributes either way
    assert "variant.predict" not in finished()


# --------------------------------------------------------------------------- configuration


def test_unset_exporter_without_endpoint_is_no_exporter(clean_env):
    assert exporter_names() == []


@pytest.mark.parametrize("var", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
def test_unset_exporter_with_an_endpoint_is_otlp(clean_env, var):
    clean_env.setenv(var, "http://collector:4318")
    assert exporter_names() == ["otlp"]


def test_blank_endpoint_counts_as_unset(clean_env):
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")
    assert exporter_names() == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("console,none", ["console"]),
        ("none", []),
        ("otlp", ["otlp"]),
        (" OTLP , Console ", ["otlp", "console"]),
    ],
)
def test_exporter_list_is_parsed(clean_env, value, expected):
    clean_env.setenv("OTEL_TRACES_EXPORTER", value)
    assert exporter_names() == expected


def test_explicit_none_wins_over_an_endpoint(clean_env):
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    clean_env.setenv("OTEL_TRACES_EXPORTER", "none")
    assert exporter_names() == []


@pytest.mark.parametrize("value", ["jaeger", "console,zipkin", "otlp;console"])
def test_unknown_exporter_names_the_variable(clean_env, value):
    clean_env.setenv("OTEL_TRACES_EXPORTER", value)
    with pytest.raises(TracingConfigError) as info:
        exporter_names()
    assert "OTEL_TRACES_EXPORTER" in str(info.value)
    with pytest.raises(TracingConfigError):
        validate_environment()


@pytest.mark.parametrize("var", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"])
def test_unknown_otlp_protocol_names_the_variable(clean_env, var):
    clean_env.setenv("OTEL_TRACES_EXPORTER", "otlp")
    clean_env.setenv(var, "http/json")
    with pytest.raises(TracingConfigError) as info:
        validate_environment()
    assert var in str(info.value)
    assert "http/json" in str(info.value)


def test_traces_protocol_overrides_the_general_one(clean_env):
    clean_env.setenv("OTEL_TRACES_EXPORTER", "otlp")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "bogus")
    clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    validate_environment()


def test_protocol_is_not_checked_when_otlp_is_not_used(clean_env):
    clean_env.setenv("OTEL_TRACES_EXPORTER", "console")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "bogus")
    validate_environment()


def test_tracing_config_error_is_a_value_error():
    # `gateway serve` reports a ValueError from LocalGateway.start() (which calls
    # validate_environment) as a clean error instead of a traceback.
    assert issubclass(tracing.TracingConfigError, ValueError)
