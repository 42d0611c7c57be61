"""A minimal OTLP/HTTP trace receiver for tests: the gateway exports real OTLP protobuf to it
over loopback, and tests read the decoded spans back."""
from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                req = ExportTraceServiceRequest.FromString(body)
                collector._add(req)
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
