"""The process that exports a replica's spans (started by `span_relay.SpanRelay`): it reads
packed spans from its stdin, rebuilds them as the SDK's ReadableSpan and hands each batch to the
OTLP exporter the OTEL_* variables configure. It answers a flush with its number on stdout once
everything sent before it has been exported, and exits when the pipe closes."""
from __future__ import annotations

import logging
import sys
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from gateway.telemetry.span_relay import FLUSH_ACK, read_frames

_KINDS = {k.value: k for k in SpanKind}


class _ReplicaResource(Resource):
    """The replica's one resource. The encoder groups every span by its resource, hashing it
    each time, and Resource.__hash__ JSON-encodes its attributes: a tenth of this process's
    time. Its attributes never change, so the hash is taken once."""

    def __init__(self, attributes: dict[str, Any], schema_url: str | None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def _attributes(values: dict[str, Any], dropped: int) -> Any:
    # Plain dicts and tuples are what ReadableSpan reads when nothing was dropped (it reports a
    # count only for Bounded*); rebuilding those would check every value again for nothing.
    if not dropped:
        return values
    attributes = BoundedAttributes(maxlen=None, attributes=values, immutable=False)
    attributes.dropped = dropped  # what the replica's span had to drop, reported as such
    return attributes


def _items(items: list[Any], dropped: int) -> Any:
    if not dropped:
        return tuple(items)
    bounded = BoundedList.from_seq(None, items)
    bounded.dropped = dropped
    return bounded


_FLAGS = {f: TraceFlags(f) for f in (0, 1)}


def _flags(value: int) -> TraceFlags:
    flags = _FLAGS.get(value)  # TraceFlags(0) is falsy: no `or` here
    return flags if flags is not None else TraceFlags(value)


def unpack_span(packed: tuple[Any, ...], resource: Resource, scopes: dict[tuple[Any, ...], InstrumentationScope]) -> ReadableSpan:
    (name, trace_id, span_id, flags, trace_state, parent, kind, start, end, status_code, status_text,
     attributes, events, links, scope, dropped) = packed
    trace_flags = _flags(flags)
    state = TraceState.from_header([trace_state]) if trace_state else TraceState()
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=trace_flags, trace_state=state)
    parent_context = None
    if parent is not None:
        parent_context = SpanContext(trace_id, parent[0], is_remote=parent[1], trace_flags=trace_flags)
    scope_name, scope_version, scope_schema, scope_attributes = scope
    key = (scope_name, scope_version, scope_schema, tuple(sorted(scope_attributes.items())) if scope_attributes else ())
    if key not in scopes:
        scopes[key] = InstrumentationScope(scope_name, scope_version, scope_schema, scope_attributes or None)
    dropped_attributes, dropped_events, dropped_links = dropped
    return ReadableSpan(
        name=name, context=context, parent=parent_context, resource=resource,
        attributes=_attributes(attributes, dropped_attributes),
        events=_items([Event(n, attributes=a, timestamp=t) for n, t, a in events], dropped_events),
        links=_items([Link(SpanContext(t, s, is_remote=r, trace_flags=_flags(f)), attributes=a)
                      for t, s, f, r, a in links], dropped_links),
        kind=_KINDS[kind], status=Status(StatusCode(status_code), status_text),
        start_time=start, end_time=end, instrumentation_scope=scopes[key],
    )


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from gateway.telemetry.tracing import otlp_span_exporter

    exporter = otlp_span_exporter()
    resource = Resource.get_empty()
    scopes: dict[tuple[str, str | None], InstrumentationScope] = {}
    try:
        for message in read_frames(sys.stdin.buffer):
            kind = message[0]
            if kind == "resource":
                resource = _ReplicaResource(message[1], message[2] or None)
            elif kind == "spans":
                exporter.export([unpack_span(p, resource, scopes) for p in message[1]])
            elif kind == "flush":
                sys.stdout.buffer.write(FLUSH_ACK.pack(message[1]))
                sys.stdout.buffer.flush()
    finally:
        exporter.shutdown()


if __name__ == "__main__":
    main()
