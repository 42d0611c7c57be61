"""Spans leave through a child process: encoding them as OTLP protobuf and posting them costs a
router about as much CPU again as recording them, and a thread of its own still holds the
replica's one GIL (bench/README.md, tracing). The replica only packs each ended span into plain
tuples; a thread sends them in batches down a pipe, and `gateway.telemetry.span_export_child`
rebuilds them and exports them with the SDK's own exporter.

It keeps BatchSpanProcessor's promises and reads its variables: at most OTEL_BSP_MAX_QUEUE_SIZE
spans wait (more are dropped and counted, never blocking a request), batches of
OTEL_BSP_MAX_EXPORT_BATCH_SIZE leave at least every OTEL_BSP_SCHEDULE_DELAY ms. Frames are
`marshal`led: plain values only, so the child never loads code or objects from the pipe."""
from __future__ import annotations

import collections
import logging
import marshal
import os
import select
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

log = logging.getLogger("gateway.tracing")

FRAME_HEADER = struct.Struct("<I")
# How long a flush or a stop waits for the child to say it has exported what it was sent.
ACK_WAIT_S = 10.0


def pack_span(span: ReadableSpan) -> tuple[Any, ...]:
    """The span as plain values (what `span_export_child.unpack_span` rebuilds)."""
    ctx, parent = span.context, span.parent
    status = span.status
    scope = span.instrumentation_scope
    return (
        span.name, ctx.trace_id, ctx.span_id, int(ctx.trace_flags), ctx.trace_state.to_header(),
        (parent.span_id, parent.is_remote) if parent is not None else None,
        span.kind.value, span.start_time, span.end_time,
        status.status_code.value, status.description,
        dict(span.attributes or {}),
        tuple((e.name, e.timestamp, dict(e.attributes or {})) for e in span.events),
        tuple((link.context.trace_id, link.context.span_id, int(link.context.trace_flags), dict(link.attributes or {}))
              for link in span.links),
        (scope.name, scope.version) if scope is not None else ("gateway", None),
        span.dropped_attributes,
    )


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: give a positive whole number")
    return value


class BatchSettings:
    """OTEL_BSP_* as the SDK's BatchSpanProcessor reads them (same defaults)."""

    def __init__(self) -> None:
        self.max_queue = _int_env("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self.batch = min(_int_env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self.max_queue)
        self.delay_s = _int_env("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000


class SpanRelay(SpanProcessor):
    def __init__(self, resource_attributes: dict[str, Any], schema_url: str, settings: BatchSettings) -> None:
        self.settings = settings
        self.dropped = 0
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = threading.Event()
        self._pipe_lock = threading.RLock()
        self._stopping = False
        # Its own session: a Ctrl-C to the gateway's process group must not kill it before it has
        # exported what the replica flushes on the way out; it exits when the pipe closes.
        self._child = subprocess.Popen(
            [sys.executable, "-m", "gateway.telemetry.span_export_child"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
        )
        self._send(("resource", resource_attributes, schema_url))
        self._thread = threading.Thread(target=self._run, name="span-relay", daemon=True)
        self._thread.start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self._stopping or not span.context.trace_flags.sampled:
            return
        if len(self._queue) >= self.settings.max_queue:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("trace export queue full (OTEL_BSP_MAX_QUEUE_SIZE=%d): dropping spans", self.settings.max_queue)
            return
        self._queue.append(pack_span(span))
        if len(self._queue) >= self.settings.batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.settings.delay_s)
            self._wake.clear()
            try:
                self._send_queued()
            except OSError:
                log.warning("the trace exporter process is gone; spans are no longer exported")
                return

    def _send_queued(self) -> None:
        # Under the lock, so that a flush's marker follows every span taken before it.
        with self._pipe_lock:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self.settings.batch, len(self._queue)))]
                self._send(("spans", batch))

    def _send(self, message: tuple[Any, ...]) -> None:
        data = marshal.dumps(message)
        with self._pipe_lock:
            stdin = self._child.stdin
            assert stdin is not None
            stdin.write(FRAME_HEADER.pack(len(data)) + data)
            stdin.flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send what waits and wait until the child has exported it."""
        try:
            with self._pipe_lock:
                self._send_queued()
                self._send(("flush",))
        except OSError:
            return False
        stdout = self._child.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], min(timeout_millis / 1000, ACK_WAIT_S))
        return bool(ready) and stdout.read(1) == b"."

    def shutdown(self) -> None:
        if self._stopping:
            return
        self.force_flush()
        self._stopping = True
        self._wake.set()
        try:
            assert self._child.stdin is not None
            self._child.stdin.close()
        except OSError:
            pass
        try:
            self._child.wait(ACK_WAIT_S)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        if self.dropped:
            log.warning("%d spans were dropped: the trace export queue was full", self.dropped)


def read_frames(stream: Any) -> Iterator[tuple[Any, ...]]:
    """Frames from the pipe until it closes (the child's side)."""
    while True:
        header = stream.read(FRAME_HEADER.size)
        if len(header) < FRAME_HEADER.size:
            return
        (size,) = FRAME_HEADER.unpack(header)
        yield marshal.loads(stream.read(size))
