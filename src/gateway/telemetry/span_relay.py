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
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

log = logging.getLogger("gateway.tracing")

FRAME_HEADER = struct.Struct("<I")
# The child's answer to a flush: the flush's own number, so a late answer to an earlier flush
# that timed out is not taken for this one's.
FLUSH_ACK = struct.Struct("<Q")
# How long a flush or a stop waits for the child to say it has exported what it was sent.
ACK_WAIT_S = 10.0


def _plain(value: Any) -> Any:
    """An attribute value as marshal carries it and OTLP types it: str, bool, int, float or a
    tuple of them. A str or int subclass (an enum) or a numpy scalar becomes its plain value;
    anything else its str, rather than a frame the child cannot read."""
    kind = type(value)
    if kind in (str, bool, int, float):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        value = value.item()
        if type(value) in (str, bool, int, float):
            return value
    if isinstance(value, str):
        return str.__str__(value)  # an enum's value, not its name as str() gives it
    for plain in (bool, int, float):
        if isinstance(value, plain):
            return plain(value)
    return str(value)


_PLAIN_TYPES = frozenset((str, bool, int, float))


def _attributes(attributes: Any) -> dict[str, Any]:
    if not attributes:
        return {}
    # The SDK has already checked keys (str) and values; almost always every value is of a
    # plain type already, and one pass of type() checks is much cheaper than _plain on each.
    # A BoundedAttributes' own dict, copied in C (the Mapping protocol is one call per key).
    out = dict(getattr(attributes, "_dict", attributes))
    for value in out.values():
        if type(value) not in _PLAIN_TYPES:
            return {str(k): _plain(v) for k, v in out.items()}
    return out


def _dropped(bounded: Any) -> int:
    return int(getattr(bounded, "dropped", 0) or 0)


class SpanPacker:
    """Packs ended spans as plain values (what `span_export_child.unpack_span` rebuilds), on
    every traced request's path, so it reads the span's own fields rather than its properties
    (which copy them) and packs each instrumentation scope once."""

    def __init__(self) -> None:
        self._scopes: dict[Any, tuple[Any, ...]] = {}

    def _scope(self, scope: Any) -> tuple[Any, ...]:
        packed = self._scopes.get(scope)
        if packed is None:
            packed = (scope.name, scope.version, scope.schema_url, _attributes(scope.attributes)) if scope is not None \
                else ("gateway", None, None, {})
            self._scopes[scope] = packed
        return packed

    def pack(self, span: ReadableSpan) -> tuple[Any, ...]:
        ctx, parent = span.context, span.parent
        status = span.status
        attributes, events, links = span._attributes, span._events, span._links  # noqa: SLF001 (see above)
        trace_state = ctx.trace_state
        return (
            span.name, ctx.trace_id, ctx.span_id, int(ctx.trace_flags), trace_state.to_header() if trace_state else "",
            (parent.span_id, parent.is_remote) if parent is not None else None,
            span.kind.value, span.start_time, span.end_time,
            status.status_code.value, status.description,
            _attributes(attributes),
            tuple((e.name, e.timestamp, _attributes(e.attributes)) for e in events) if events else (),
            tuple((link.context.trace_id, link.context.span_id, int(link.context.trace_flags), link.context.is_remote,
                   _attributes(link.attributes)) for link in links) if links else (),
            self._scope(span.instrumentation_scope),
            (_dropped(attributes), _dropped(events), _dropped(links)),
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
        self._packer = SpanPacker()
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = threading.Event()
        self._pipe_lock = threading.RLock()
        self._stopping = False
        self._flushes = 0
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
        self._queue.append(self._packer.pack(span))
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
            except Exception:  # one unsendable batch must not end tracing for the replica's life
                log.exception("a batch of spans could not be sent to the exporter process; dropped")

    def _send_queued(self, deadline: float | None = None) -> bool:
        """Send what waits; False when the pipe could not be had before `deadline`."""
        # Under the lock, so that a flush's marker follows every span taken before it.
        if not self._pipe_lock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
            return False
        try:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self.settings.batch, len(self._queue)))]
                try:
                    self._send(("spans", batch))
                except (TypeError, ValueError):
                    self.dropped += len(batch)
                    raise
            return True
        finally:
            self._pipe_lock.release()

    def _send(self, message: tuple[Any, ...]) -> None:
        data = marshal.dumps(message)
        with self._pipe_lock:
            stdin = self._child.stdin
            assert stdin is not None
            stdin.write(FRAME_HEADER.pack(len(data)) + data)
            stdin.flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send what waits and wait until the child has exported it, at most `timeout_millis`."""
        deadline = time.monotonic() + min(timeout_millis / 1000, ACK_WAIT_S)
        if not self._pipe_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False  # the sender is stuck on a full pipe: the exporter is behind
        try:
            self._send_queued()
            self._flushes += 1
            number = self._flushes
            self._send(("flush", number))
        except (OSError, TypeError, ValueError):
            return False
        finally:
            self._pipe_lock.release()
        return self._await_ack(number, deadline)

    def _await_ack(self, number: int, deadline: float) -> bool:
        stdout = self._child.stdout
        assert stdout is not None
        fd = stdout.fileno()
        pending = b""
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return False
            chunk = os.read(fd, 4096)
            if not chunk:
                return False  # the child is gone
            pending += chunk
            while len(pending) >= FLUSH_ACK.size:
                (acked,) = FLUSH_ACK.unpack(pending[: FLUSH_ACK.size])
                pending = pending[FLUSH_ACK.size :]
                if acked >= number:
                    return True

    def shutdown(self) -> None:
        if self._stopping:
            return
        self.force_flush()
        self._stopping = True
        self._wake.set()
        self._thread.join(ACK_WAIT_S)
        if self._pipe_lock.acquire(timeout=ACK_WAIT_S):
            try:
                assert self._child.stdin is not None
                self._child.stdin.close()
            except OSError:
                pass
            finally:
                self._pipe_lock.release()
        try:
            self._child.wait(ACK_WAIT_S)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        if self.dropped:
            log.warning("%d spans were dropped: the trace export queue was full or a batch could not be sent",
                        self.dropped)


def read_frames(stream: Any) -> Iterator[tuple[Any, ...]]:
    """Frames from the pipe until it closes (the child's side)."""
    while True:
        header = stream.read(FRAME_HEADER.size)
        if len(header) < FRAME_HEADER.size:
            return
        (size,) = FRAME_HEADER.unpack(header)
        yield marshal.loads(stream.read(size))
