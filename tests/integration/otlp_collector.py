"""A minimal OTLP/HTTP receiver for tests, of traces (/v1/traces) and metrics (/v1/metrics): the
gateway exports real OTLP protobuf to it over loopback, and tests read the decoded spans and
metric points back."""
from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class OtlpCollector:
    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.metric_points: list[dict] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/metrics":
                    collector._add_metrics(ExportMetricsServiceRequest.FromString(body))
                    out = ExportMetricsServiceResponse().SerializeToString()
                else:
                    collector._add(ExportTraceServiceRequest.FromString(body))
                    out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    @property
    def metrics_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/metrics"

    def _add_metrics(self, req: ExportMetricsServiceRequest) -> None:
        """One row per data point: the metric's name, kind and unit, the point's attributes
        and its value (a histogram's count and sum)."""
        with self._lock:
            for rm in req.resource_metrics:
                resource = {a.key: _value(a.value) for a in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        for p in getattr(m, kind).data_points:
                            row = {"name": m.name, "kind": kind, "unit": m.unit, "resource": resource,
                                   "attributes": {a.key: _value(a.value) for a in p.attributes}}
                            if kind == "histogram":
                                row.update(count=p.count, sum=p.sum)
                            else:
                                row["value"] = getattr(p, p.WhichOneof("value"))
                            self.metric_points.append(row)

    def wait_for_metrics(self, predicate, timeout_s: float = 20.0) -> list[dict]:
        """Metric points matching `predicate`, once `predicate` over the points holds."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                points = list(self.metric_points)
            if predicate(points) or time.monotonic() > deadline:
                return points
            time.sleep(0.2)

    def _add(self, req: ExportTraceServiceRequest) -> None:
        with self._lock:
            for rs in req.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append(
                            {
                                "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(),
                                "parent_span_id": s.parent_span_id.hex() or None,
                                "name": s.name,
                                "kind": s.kind,
                                "attributes": {a.key: _value(a.value) for a in s.attributes},
                                "links": [(l.trace_id.hex(), l.span_id.hex()) for l in s.links],
                                "events": [(e.name, {a.key: _value(a.value) for a in e.attributes}) for e in s.events],
                                "status": (s.status.code, s.status.message),
                                "times": (s.start_time_unix_nano, s.end_time_unix_nano),
                                "scope": ss.scope.name,
                                "scope_version": ss.scope.version,
                                "dropped": (s.dropped_attributes_count, s.dropped_events_count, s.dropped_links_count),
                                "link_flags": [l.flags for l in s.links],
                                "resource": resource,
                            }
                        )

    def wait_for(self, predicate, timeout_s: float = 20.0) -> list[dict]:
        """Spans matching `predicate`, once `predicate` over the list holds."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                found = [s for s in self.spans if predicate(s)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def wait_for_trace(self, trace_id: str, names: set[str], timeout_s: float = 20.0) -> dict[str, dict]:
        """The spans of one trace by name, once all of `names` have arrived (spans come from
        several processes, each exporting on its own schedule)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                found = {s["name"]: s for s in self.spans if s["trace_id"] == trace_id}
            if names <= set(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def start(self) -> OtlpCollector:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
