"""What runs inside the child processes of bench/serving.py, one role each (`serving.py --role
NAME --spec FILE`): the gateway (LocalGateway, redeployed with other replica counts or another
placement when the orchestrator writes a command file), bare Ray Serve (a plain ingress
deployment calling a model deployment) and the OTLP/HTTP trace sink. Each writes its ready file
and runs until SIGTERM or until the orchestrator is gone; the orchestrator's side is in
bench/_systems.py.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from _systems import EXPERIMENT, _write_ready


# =============================================================================================
# Child roles: each system runs in a child process started by the orchestrator.
# =============================================================================================


def _wait_for_stop(poll=None) -> None:
    """Block until SIGTERM/SIGINT, or until the orchestrator that started us is gone; call
    `poll()` now and then meanwhile."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()
    while not stop.wait(0.25):
        if os.getppid() != parent:
            break
        if poll is not None:
            poll()


def role_gateway(spec: dict) -> None:
    from gateway.cli.local import LocalGateway, quiet_ray_environment
    from gateway.settings import load_settings

    quiet_ray_environment()
    settings = load_settings(policy=spec["policy"], state_dir=spec["state_dir"], http_port=spec["port"])
    # The ingress environment before ray.serve is imported here (LocalGateway sets it too, but
    # this process imports the app first to set replica counts).
    from gateway.serving.ingress import apply_serve_environment

    apply_serve_environment(settings.ingress, settings.http_host, settings.state_dir.resolve())
    import gateway.serving.app as gapp

    # Variant replica counts (the scaling section): build_application binds the module's
    # VariantModel deployment, so options set on it here carry into the application. Router
    # replicas and the placement are Settings (GATEWAY_ROUTER_REPLICAS, GATEWAY_VARIANT_PLACEMENT).
    base_variant = gapp.VariantModel

    def set_variant_replicas(variant: int) -> None:
        gapp.VariantModel = base_variant.options(num_replicas=variant) if variant != 1 else base_variant

    settings = settings.model_copy(update={"router_replicas": spec.get("router_replicas", 1)})
    set_variant_replicas(spec.get("variant_replicas", 1))
    gw = LocalGateway(settings, log_to_driver=False)
    cmd_file = Path(spec["ready_file"] + ".cmd")

    def poll() -> None:
        """Redeploy with other replica counts when the orchestrator asks (serve.run on the
        running Serve instance: no new Ray, no new Redis)."""
        if not cmd_file.exists():
            return
        cmd = json.loads(cmd_file.read_text())
        cmd_file.unlink()
        from ray import serve

        try:
            router, variant = cmd["router_replicas"], cmd["variant_replicas"]
            set_variant_replicas(variant)
            placed = settings.model_copy(update={"variant_placement": cmd["placement"], "router_replicas": router})
            app = gapp.build_application(placed, gw.redis_url)
            serve.run(app, name=gapp.APP_NAME, route_prefix="/", blocking=False)
            deadline = time.monotonic() + 180
            while (states := _replica_states(serve, gapp.APP_NAME)) and time.monotonic() < deadline:
                # The Router and the variants ("<experiment>--<variant>") at their new counts;
                # any other deployment of the app just settled (all replicas RUNNING).
                want = {
                    d: {"RUNNING": router if d == "Router" else variant if "--" in d else sum(n.values())}
                    for d, n in states.items()
                }
                if states == want:
                    break
                time.sleep(0.5)
            ack = {"id": cmd["id"], "ok": states == want, "replicas": states,
                   "error": None if states == want else f"replica states {states} != {want}"}
        except Exception as err:  # noqa: BLE001 - reported to the orchestrator
            ack = {"id": cmd["id"], "ok": False, "error": f"{type(err).__name__}: {err}"}
        _write_ready(spec["ready_file"] + ".ack", ack)

    try:
        gw.start()
        _write_ready(spec["ready_file"], {"pid": os.getpid(), "url": gw.url, "redis_url": gw.redis_url})
        _wait_for_stop(poll)
    finally:
        gw.stop()


def _replica_states(serve, app_name: str) -> dict[str, dict[str, int]]:
    """{deployment: {replica state: count}} of a Serve application."""
    app = serve.status().applications[app_name]
    return {
        name: {str(getattr(k, "value", k)): n for k, n in d.replica_states.items() if n}
        for name, d in app.deployments.items()
    }


def _bare_application(artifact: dict, features: list[dict]):
    """Bare Ray Serve: a plain ingress deployment calling a model deployment. The classes are
    defined inside this function, so that Ray pickles them by value (as it did when they lived in
    the child's __main__): the replicas need not import bench/."""
    import numpy as np
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    offsets, width = [], 0
    for f in features:
        offsets.append(width)
        width += len(f["values"]) if f["type"] == "categorical" else 1

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200)
    class BareModel:
        def __init__(self, path: str, sha256: str):
            from gateway.learning import artifacts

            self.artifacts = artifacts
            self.model = artifacts.load_model(path, expected_sha256=sha256)

        def predict(self, matrix):
            labels, scores = self.artifacts.predict(self.model, matrix)
            return {"predictions": labels.tolist(), "scores": None if scores is None else scores.tolist()}

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200)
    class BareIngress:
        def __init__(self, model):
            self.model = model

        async def __call__(self, request: Request):
            body = await request.json()
            columns = {t["name"]: t["data"] for t in body["inputs"]}
            n = len(columns[features[0]["name"]])
            matrix = np.zeros((n, width))
            for f, off in zip(features, offsets):
                data = columns[f["name"]]
                if f["type"] == "categorical":
                    for i, v in enumerate(data):
                        matrix[i, off + f["values"].index(v)] = 1.0
                else:
                    matrix[:, off] = data
            result = await self.model.predict.remote(matrix)
            labels = result["predictions"]
            return JSONResponse(
                {
                    "model_name": EXPERIMENT,
                    "outputs": [{"name": "predict", "datatype": "INT64", "shape": [len(labels)], "data": labels}],
                }
            )

    return BareIngress.bind(BareModel.bind(artifact["path"], artifact["sha256"]))


def role_bare(spec: dict) -> None:
    import logging

    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(
            address="local",
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        serve.start(http_options={"host": "127.0.0.1", "port": spec["port"]})
        serve.run(_bare_application(spec["artifact"], spec["features"]), name="bare", route_prefix="/", blocking=False)
        _write_ready(spec["ready_file"], {"pid": os.getpid(), "url": f"http://127.0.0.1:{spec['port']}"})
        _wait_for_stop()
    finally:
        if ray.is_initialized():
            try:
                serve.shutdown()
            finally:
                ray.shutdown()


def role_sink(spec: dict) -> None:
    """An OTLP/HTTP trace sink: accepts POST /v1/traces, counts spans; GET /stats reports."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    counts = {"exports": 0, "spans": 0, "bytes": 0}
    lock = threading.Lock()
    reply = ExportTraceServiceResponse().SerializeToString()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                import gzip

                body = gzip.decompress(body)
            req = ExportTraceServiceRequest.FromString(body)
            n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
            with lock:
                counts["exports"] += 1
                counts["spans"] += n
                counts["bytes"] += len(body)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def do_GET(self):
            with lock:
                out = json.dumps(counts).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", spec["port"]), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _write_ready(spec["ready_file"], {"pid": os.getpid(), "url": f"http://127.0.0.1:{spec['port']}"})
        _wait_for_stop()
    finally:
        server.shutdown()


ROLES = {"gateway": role_gateway, "bare": role_bare, "sink": role_sink}
