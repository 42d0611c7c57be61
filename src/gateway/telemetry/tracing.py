"""OpenTelemetry tracing, configured only by the standard OTEL_* variables.

OTEL_TRACES_EXPORTER: otlp, console or none (comma-separated). Unset, it is 'otlp' when an OTLP
endpoint variable is set and 'none' otherwise, so a gateway with no backend does not keep
failing exports. OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: http/protobuf (default) or grpc. The
SDK itself reads the endpoint, headers, sampler (OTEL_TRACES_SAMPLER) and batch settings
(OTEL_BSP_*). OTLP export runs in a child process of each replica (span_relay.py), console
output through a BatchSpanProcessor; both drop rather than block when the backend is down.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from gateway.telemetry.otlp_env import env, exporter_list, otlp_protocol
from gateway.telemetry.span_relay import BatchSettings, SpanRelay

_EXPORTERS = ("otlp", "console", "none")
# A traceparent is 55 characters; anything far longer is not one and is not parsed.
MAX_TRACEPARENT_LEN = 512

_provider: TracerProvider | None = None


class TracingConfigError(ValueError):
    pass


def exporter_names() -> list[str]:
    names = exporter_list("OTEL_TRACES_EXPORTER", _EXPORTERS, TracingConfigError)
    if names is None:
        has_endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT") or env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return ["otlp"] if has_endpoint else []
    return [n for n in names if n != "none"]


def otlp_span_exporter() -> SpanExporter:
    if otlp_protocol("traces", TracingConfigError) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def validate_environment() -> None:
    """Fail at start, naming the variable, rather than in a replica later."""
    for name in exporter_names():
        if name == "otlp":
            otlp_span_exporter()
            try:
                BatchSettings()
            except ValueError as err:
                raise TracingConfigError(str(err)) from None


def setup_tracing(component: str) -> TracerProvider:
    """Install this process's tracer provider once; later calls return the same one."""
    global _provider
    if _provider is not None:
        return _provider
    attrs = {"gateway.component": component}
    if not env("OTEL_SERVICE_NAME"):
        attrs["service.name"] = "ab-auto-promotion"
    exporters = exporter_names()
    # Nowhere to send spans: keep the ids (trace context still flows into logs, the decision
    # log and downstream calls) but record nothing. Recording spans nobody exports was ~8% of a
    # router's CPU per request. An explicit OTEL_TRACES_SAMPLER is left to decide.
    sampler = ALWAYS_OFF if not exporters and not env("OTEL_TRACES_SAMPLER") else None
    provider = TracerProvider(resource=Resource.create(attrs), sampler=sampler)
    for name in exporters:
        if name == "otlp":
            resource = provider.resource
            provider.add_span_processor(SpanRelay(dict(resource.attributes), resource.schema_url, BatchSettings()))
        else:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


@functools.cache
def tracer(name: str = "gateway") -> trace.Tracer:
    # Cached: get_tracer builds a new Tracer on every call (a measurable cost per request). A
    # tracer taken before setup_tracing is a proxy that follows the provider set later.
    return trace.get_tracer(name)


# What child_span hands out when there is nothing to record: reusable, it holds no state.
# Yields a span that takes attributes and records nothing, for `with ... as span` callers.
_NO_SPAN = contextlib.nullcontext(trace.INVALID_SPAN)


def child_span(name: str, attributes: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager:
    """A span under the current one, made current; or nothing at all when the current span is not
    recorded (tracing off, or the request not sampled), where the parent-based samplers would not
    record this one either. Only an unrecorded span's id is lost, which nothing reads: logs and
    the decision log carry the request's span. Opening a span nobody records still cost ~25 us
    (ids, sampler, context attach), on the request path."""
    if not trace.get_current_span().is_recording():
        return _NO_SPAN
    return tracer().start_as_current_span(name, attributes=attributes)


def carried_span(name: str, carrier: Mapping[str, str] | None, kind: SpanKind = SpanKind.INTERNAL) -> contextlib.AbstractContextManager:
    """A span under the request's span carried across a Serve call; nothing when that span is
    not recorded (its traceparent's sampled flag off, or no traceparent: a caller outside any
    request), for the same ~25 us as child_span."""
    if not carrier:
        return _NO_SPAN
    traceparent = carrier.get("traceparent")
    if traceparent is not None:
        sampled = _sampled_flag(traceparent)
    else:  # another propagator's headers (OTEL_PROPAGATORS=b3, jaeger): ask it
        sampled = trace.get_current_span(context_from_carrier(carrier)).get_span_context().trace_flags.sampled
    if not sampled:
        return _NO_SPAN
    return tracer().start_as_current_span(name, context=context_from_carrier(carrier), kind=kind)


def _sampled_flag(traceparent: str) -> bool:
    try:
        return bool(int(traceparent[-2:], 16) & 1)  # W3C trace-flags: bit 0 is "sampled"
    except ValueError:
        return True  # not ours to judge: the propagator decides, as before


def incoming_context(headers: Mapping[str, str]):
    """The caller's trace context when its traceparent is sane; else a fresh root."""
    traceparent = headers.get("traceparent")
    if traceparent is None or len(traceparent) > MAX_TRACEPARENT_LEN:
        return None
    carrier = {"traceparent": traceparent}
    state = headers.get("tracestate")
    if state is not None and len(state) <= MAX_TRACEPARENT_LEN:
        carrier["tracestate"] = state
    # The W3C propagator itself ignores a malformed traceparent.
    return propagate.extract(carrier)


def current_carrier() -> dict[str, str]:
    """The current span's context as W3C headers, to carry across a Ray Serve call."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from_carrier(carrier: Mapping[str, str] | None):
    return propagate.extract(dict(carrier or {}))
