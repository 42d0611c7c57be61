#!/usr/bin/env python
"""Serving benchmark: the gateway against bare Ray Serve and MLServer, on one model and one row.

Usage::

    python bench/serving.py [--json PATH] [--only SECTIONS] [--warmup S] [--measure S]
                            [--profile DIR] [--no-readme] [--cache-dir DIR]

Every system is started here, one after the other (never two at once on a 2-core machine), each
in its own process group and its own Ray instance, and stopped again (also on error). Load comes
from another process: wrk (Debian's `wrk`, installed with apt-get when missing and possible)
with bench/serving_post.lua, or bench/_load.py when wrk cannot be had; the batch-reward load is
always bench/_load.py (each body is different). Every load point runs a warm-up that is
dropped (--warmup, 3 s) and then the measured run (--measure, 8 s).

The model: the churn policy of tests/policies/churn.yaml reduced to its logistic-regression
variant (trained by the gateway's own bootstrap recipe into a work directory), so that the
gateway, bare Ray Serve and MLServer serve the same scikit-learn pipeline on the same row.

Sections (--only takes a comma-separated subset; the default runs all of them):

gateway   The gateway in its default configuration (LocalGateway: embedded Redis, Ray, Serve
          in throughput-optimised mode with HAProxy on the port forwarding to the Router
          replica's direct ingress, the variant's model inside the Router replica (placement
          `router`), tracing off). POST
          /v2/models/churn/infer (OIP, one tensor per feature) at 1 and 16 connections. Redis
          work per predict: `INFO commandstats` (every command, those inside scripts included)
          around the 16-connection run, minus the background rate (posterior refresh every
          100 ms, dashboard series every 2 s) measured while idle, over the predictions recorded
          meanwhile (the variants' `:req` counters); round trips: MONITOR separates the commands
          clients send from those scripts run, over a short extra run against an idle window of
          the same length. Then the batch reward endpoint (POST /v1/rewards, 1,000 items a
          request, 4 connections, for predictions recorded beforehand through the store's own
          `record_prediction` calls and tokens signed with the gateway's key), then the store's
          update path (ExperimentStore.apply_rewards in batches of 1,000, one client) against
          `redis-benchmark` sending the same EVALSHA the store sends, on the same embedded Redis
          (random keys from a keyspace 10x the calls, so ~95% take the accepted path).
traced    The same gateway with OTLP/HTTP trace export to a local sink (a tiny HTTP server
          that accepts POST /v1/traces and counts the spans): p50 at 1 connection against the
          untraced gateway's.
bare      Bare Ray Serve: an ingress deployment (a plain `__call__`, decoding the same OIP body)
          calling a model deployment that loads the same skops artifact with
          gateway.learning.artifacts.load_model; same replica counts, num_cpus=0 and
          max_ongoing_requests=200 as the gateway's deployments, and the same Serve environment
          as the gateway's default (gateway.serving.ingress.serve_environment). Measured through
          the gateway's ingress path (HAProxy) and, beside it, through the ingress replica's
          own HTTP port (direct ingress, the fastest path Serve offers).
mlserver  MLServer 1.7.1 with mlserver-sklearn, in its own venv under --cache-dir (created when
          missing), serving the same pipeline saved with joblib, OIP REST; the body is the
          encoded [1, 6] FP64 row (its sklearn runtime takes the model's input matrix).
scaling   The gateway redeployed (serve.run on its running Serve instance) with 2 Router
          replicas; then with placement `deployment` (the variant in a deployment of its own:
          the bare chain's shape) at 1 and 16 connections, and with 2 replicas of the variant;
          then 1/1 with the default placement again. 1/1 is the `gateway` section's figure.
memory    The gateway with a 4-variant policy (logistic regression, XGBoost, histogram
          gradient boosting, a second logistic regression; all trained by the bootstrap
          recipe): RSS (and PSS) summed over every process of the system (the driver, Ray's
          processes and workers, redis-server) after a 16-connection run.

Every load point also records the CPU time each kind of process spent per request (psutil),
which a shared machine distorts far less than latency. --profile DIR additionally records
py-spy (raw collapsed stacks) of the Router replica (which, with the default placement, also
runs the model; variant replicas exist only with placement `deployment`) and Serve's proxy
actor during an extra 16-connection run of the default gateway, and of the Router during the reward
run, and prints where their samples go.

The JSON (--json) holds the headline figures (gateway_rps, bare_rps, mlserver_rps,
throughput_ratio_vs_bare, throughput_ratio_vs_mlserver, added_p50_ms, p99_ratio_vs_bare,
redis_roundtrips_per_predict, rewards_per_s, tracing_p50_ratio, rss_mib, ...), every goal with
its verdict, and every raw load point. A full run writes its table into bench/README.md between
<!-- serving:start --> and <!-- serving:end -->.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "serving_post.lua"
LOAD = BENCH / "_load.py"
README = BENCH / "README.md"
BASE_POLICY = ROOT / "tests" / "policies" / "churn.yaml"
START_MARK = "<!-- serving:start -->"
END_MARK = "<!-- serving:end -->"

EXPERIMENT = "churn"
ROW = {"tenure": 14.0, "monthly_charges": 82.5, "support_calls": 3.0, "plan": "pro"}
SECTIONS = ("gateway", "traced", "bare", "mlserver", "scaling", "memory")
MLSERVER_VERSION = "1.7.1"
REWARD_BATCH = 1000

GOALS = {
    "throughput_ratio_vs_bare": (">=", 0.9),
    "added_p50_ms": ("<=", 1.5),
    "p99_ratio_vs_bare": ("<=", 1.2),
    "throughput_ratio_vs_mlserver": (">=", 1.0),
    "redis_roundtrips_per_predict": ("<=", 1.0),
    "rewards_per_s": (">=", 5000.0),
    "store_vs_redis_benchmark": (">=", 0.5),
    "tracing_p50_ratio": ("<=", 1.1),
    "rss_mib": ("<=", 3072.0),
}


def log(msg: str) -> None:
    print(f"[serving {time.strftime('%H:%M:%S')}] {msg}", flush=True)


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


def _write_ready(path: str, info: dict) -> None:
    tmp = path + ".tmp"
    Path(tmp).write_text(json.dumps(info))
    os.replace(tmp, path)


def role_gateway(spec: dict) -> None:
    from gateway.runtime import LocalGateway, quiet_ray_environment
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
    """Bare Ray Serve: a plain ingress deployment calling a model deployment. Defined here (in
    __main__ of the child) so that Ray pickles the classes by value."""
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


# =============================================================================================
# Orchestrator helpers
# =============================================================================================


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(count: int, lo: int = 20000, hi: int = 29000) -> int:
    """A base port with `count` free ports after it on 127.0.0.1 and 0.0.0.0."""
    for _ in range(200):
        base = random.randrange(lo, hi - count)
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("0.0.0.0", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range found")


def http(method: str, url: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, b""


def wait_http(ok, what: str, timeout: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: the process exited ({proc.returncode()}); the end of its log:\n"
                               f"{proc.log_tail()}")
        if ok():
            return
        time.sleep(0.25)
    raise RuntimeError(f"{what}: not ready within {timeout:.0f}s; see {proc.log_path if proc else '-'}")


class Proc:
    """A child process in its own process group. stop(): SIGTERM to the child (a role stops its
    system cleanly), then SIGKILL to the group and to every descendant seen while it ran."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path | None = None):
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen | None = None
        self._seen: dict[int, Any] = {}

    def start(self) -> Proc:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def processes(self) -> list:
        """The child and all its descendants (remembered for stop())."""
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            self._seen.setdefault(p.pid, p)
        return procs

    def wait_ready_file(self, path: Path, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                self.processes()
                return json.loads(path.read_text())
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.returncode()} before it was ready; "
                                   f"the end of its log:\n{self.log_tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: not ready within {timeout:.0f}s; see {self.log_path}")

    def log_tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 60.0) -> None:
        import psutil

        if self.popen is None:
            return
        try:
            if self.alive():
                self.processes()
                with contextlib.suppress(ProcessLookupError):
                    self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    log(f"{self.name}: no clean stop within {timeout:.0f}s; killing it")
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.popen.wait(5)
            for p in self._seen.values():
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    if p.is_running():
                        p.kill()
            self._log.close()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "OTEL_", "RAY_SERVE_")) and k not in ("RAY_ADDRESS", "PYTHONPATH")
    }
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "1"})
    env.update(extra or {})
    return env


def start_role(role: str, name: str, spec: dict, work: Path, env_extra: dict | None = None, timeout: float = 180) -> tuple[Proc, dict]:
    ready = work / f"{name}.ready.json"
    ready.unlink(missing_ok=True)
    spec = {**spec, "ready_file": str(ready)}
    spec_file = work / f"{name}.spec.json"
    spec_file.write_text(json.dumps(spec))
    proc = Proc(name, [sys.executable, str(Path(__file__).resolve()), "--role", role, "--spec", str(spec_file)],
                child_env(env_extra), work / "logs")
    proc.start()
    try:
        info = proc.wait_ready_file(ready, timeout)
    except BaseException:
        proc.stop()
        raise
    return proc, info


# -- load ---------------------------------------------------------------------------------------


class Loader:
    """Runs load points: wrk (warm-up run dropped, then the measured run) or bench/_load.py."""

    def __init__(self, warmup: float, measure: float):
        self.warmup = warmup
        self.measure = measure
        self.wrk = shutil.which("wrk")

    def _wrk(self, url: str, body_file: Path, connections: int, duration: float) -> dict:
        cmd = [self.wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
               "--latency", "-s", str(LUA), url]
        env = {**os.environ, "BENCH_BODY_FILE": str(body_file)}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60, start_new_session=True, check=False)
        m = re.search(r"^BENCH_RESULT (.*)$", out.stdout, re.MULTILINE)
        if not m:
            raise RuntimeError(f"wrk gave no result: {out.stdout[-1000:]} {out.stderr[-1000:]}")
        r = json.loads(m.group(1))
        seconds = r["duration_us"] / 1e6
        bad = r["errors"]["status"]
        other = sum(v for k, v in r["errors"].items() if k != "status")
        lat = r["latency_us"]
        return {
            "tool": "wrk",
            "connections": connections,
            "window_s": round(seconds, 3),
            "requests": r["requests"],
            "non_2xx": bad,
            "socket_errors": other,
            "rps": round((r["requests"] - bad) / seconds, 1),
            "p50_ms": round(lat["50"] / 1e3, 3),
            "p90_ms": round(lat["90"] / 1e3, 3),
            "p99_ms": round(lat["99"] / 1e3, 3),
            "mean_ms": round(lat["mean"] / 1e3, 3),
        }

    def _pyload(self, url: str, body_file: Path, connections: int, warmup: float, duration: float) -> dict:
        cmd = [sys.executable, str(LOAD), url, "--bodies", str(body_file), "--repeat", "--connections",
               str(connections), "--warmup", str(warmup), "--duration", str(duration)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=warmup + duration + 60, start_new_session=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"_load.py failed: {out.stderr[-2000:]}")
        r = json.loads(out.stdout)
        return {
            "tool": "_load.py",
            "connections": connections,
            "window_s": round(r["window_s"], 3),
            "requests": r["requests"],
            "non_2xx": r["requests"] - r["ok"],
            "socket_errors": r["errors"],
            "rps": round(r["rps"], 1),
            "p50_ms": round(r["p50_ms"], 3),
            "p90_ms": round(r["p90_ms"], 3),
            "p99_ms": round(r["p99_ms"], 3),
        }

    def warm(self, url: str, body_file: Path, connections: int) -> None:
        if self.warmup <= 0:
            return
        if self.wrk:
            self._wrk(url, body_file, connections, self.warmup)

    def run(self, url: str, body_file: Path, connections: int, warm: bool = True, proc: Proc | None = None,
            duration: float | None = None, quiet: bool = False) -> dict:
        """One load point; `warm=False` when the caller already ran the warm-up. With `proc`, the
        CPU time each kind of process of that system spent per request is added."""
        if self.wrk:
            if warm:
                self.warm(url, body_file, connections)
            before = cpu_snapshot(proc) if proc else None
            result = self._wrk(url, body_file, connections, duration or self.measure)
        else:
            before = cpu_snapshot(proc) if proc else None
            result = self._pyload(url, body_file, connections, self.warmup if warm else 0.0, duration or self.measure)
        if proc is not None:
            # With _load.py the warm-up is inside the run, so these figures include it.
            result["cpu_ms_per_request"] = cpu_per_request(before, cpu_snapshot(proc), result["requests"])
        result["load_avg_1m"] = round(os.getloadavg()[0], 2)
        if quiet:
            return result
        if result["non_2xx"] or result["socket_errors"]:
            log(f"  warning: {result['non_2xx']} non-2xx answers and {result['socket_errors']} socket errors")
        log(f"  {connections:>2} conn: {result['rps']:8.1f} req/s  p50 {result['p50_ms']:.2f} ms  "
            f"p99 {result['p99_ms']:.2f} ms  ({result['requests']} requests)")
        return result


# -- Redis --------------------------------------------------------------------------------------


def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def redis_counters(client) -> dict[str, float]:
    stats = client.info("commandstats")
    out = {k.removeprefix("cmdstat_"): float(v["calls"]) for k, v in stats.items()}
    s = client.info("stats")
    out["_writes"] = float(s.get("total_writes_processed", 0))
    out["_commands"] = float(s.get("total_commands_processed", 0))
    return out


def counters_delta(a: dict, b: dict) -> dict[str, float]:
    return {k: b.get(k, 0.0) - a.get(k, 0.0) for k in set(a) | set(b)}


def measure_redis_per_predict(
    client, redis_url: str, loader: Loader, url: str, body: Path, idle_s: float, proc: Proc
) -> tuple[dict, dict]:
    """Redis work per prediction, and the 16-connection load point measured meanwhile.

    1. INFO commandstats (every command, those run inside scripts included) before and after
       the measured 16-connection run, less the background rate (posterior refresh every 100 ms,
       dashboard series every 2 s) measured while idle; divided by the predictions recorded in
       that window (the variants' `:req` counters).
    2. Round trips: MONITOR tells the commands clients send from those scripts run; over a
       short extra 16-connection run and an idle window of the same length, client commands per
       prediction (a pipeline's commands share one round trip, so this is an upper bound)."""
    from gateway.store import keys

    arms = keys.arms(EXPERIMENT)
    a = redis_counters(client)
    t0 = time.perf_counter()
    time.sleep(idle_s)
    b = redis_counters(client)
    idle = time.perf_counter() - t0
    bg = {k: v / idle for k, v in counters_delta(a, b).items()}
    loader.warm(url, body, 16)
    req_before = _requests_served(client, arms)
    c = redis_counters(client)
    t1 = time.perf_counter()
    point = loader.run(url, body, 16, warm=False, proc=proc)
    d = redis_counters(client)
    busy = time.perf_counter() - t1
    served = _requests_served(client, arms) - req_before
    delta = counters_delta(c, d)
    per = {}
    for k, v in delta.items():
        # hgetall: the refresh, and this probe; the rest: connection set-up and probes.
        if k in ("info", "hgetall", "client", "hello", "echo", "monitor", "select", "auth") or k.startswith("_"):
            continue
        per[k] = round((v - bg.get(k, 0.0) * busy) / served, 3) if served else None
    # Background commands slow down under load (the refresher shares the router's loop), so the
    # subtraction can overshoot a little: below 0.05 a command is background only.
    calls = {k: v for k, v in sorted(per.items()) if v is not None and v >= 0.05}

    _, _, names = capturing_store()
    time.sleep(1.0)  # let the last run's requests finish
    idle_counts, idle_t, _, _ = monitor_commands(redis_url, names, lambda: time.sleep(idle_s))
    load_counts, load_t, _, n = monitor_commands(
        redis_url, names, lambda: loader.run(url, body, 16, warm=False, duration=idle_s, quiet=True),
        counter=lambda: _requests_served(client, arms),
    )
    client_cmds = {}
    for key in set(idle_counts) | set(load_counts):
        origin, cmd = key
        if origin != "client":
            continue
        # A background command slowed by the load would come out negative: no command costs < 0.
        net = max(0.0, load_counts.get(key, 0) - idle_counts.get(key, 0) * load_t / idle_t)
        client_cmds[cmd] = round(net / n, 3) if n else None
    per_predict = {k: v for k, v in sorted(client_cmds.items(), key=lambda kv: -(kv[1] or 0)) if v and v >= 0.02}
    return {
        "predictions": served,
        "window_s": round(busy, 3),
        "calls_per_predict": calls,
        "background_per_s": {k: round(v, 2) for k, v in sorted(bg.items()) if v >= 0.05 and k != "info"},
        # Client commands whose count follows the predictions; below 0.05 a command is the
        # timers' background (the refresh, the series) left over by the subtraction.
        "roundtrips_per_predict": round(sum(v for v in client_cmds.values() if v and v >= 0.05), 3) if n else None,
        "client_commands_per_predict": per_predict,
        "monitor_predictions": n,
        "monitor_window_s": round(load_t, 3),
        "monitor_idle_client_commands_per_s": {
            k[1]: round(v / idle_t, 2) for k, v in sorted(idle_counts.items()) if k[0] == "client"
        },
    }, point


def monitor_commands(redis_url: str, names: dict[str, str], body, counter=None) -> tuple[dict, float, Any, int]:
    """Run `body()` while MONITOR records every command: counts by (client|script, command),
    EVALSHA named by its script, between two ECHO markers sent around `body()` (so the count
    covers exactly the window even when the monitor stream lags); the elapsed seconds; body's
    result; and the change of `counter()` over the window."""
    import uuid

    import redis

    counts: dict[tuple[str, str], int] = {}
    token = uuid.uuid4().hex
    begin, finish = f"ECHO bench-start-{token}", f"ECHO bench-end-{token}"
    ready = threading.Event()
    conn = redis.Redis.from_url(redis_url, decode_responses=True)
    marks = redis.Redis.from_url(redis_url, decode_responses=True)

    def listen() -> None:
        inside = False
        with conn.monitor() as m:
            ready.set()
            for ev in m.listen():
                command = ev["command"]
                if command == begin:
                    inside = True
                    continue
                if command == finish:
                    return
                if not inside:
                    continue
                parts = command.split(" ", 2)
                cmd = parts[0].upper()
                if cmd in ("EVALSHA", "EVALSHA_RO") and len(parts) > 1:
                    cmd = f"{cmd} {names.get(parts[1], parts[1][:10])}"
                key = ("script" if ev.get("client_type") == "lua" else "client", cmd)
                counts[key] = counts.get(key, 0) + 1

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(10)
    time.sleep(0.2)
    marks.echo(begin.split(" ", 1)[1])
    c0 = counter() if counter else 0
    t0 = time.perf_counter()
    try:
        result = body()
    finally:
        elapsed = time.perf_counter() - t0
        c1 = counter() if counter else 0
        marks.echo(finish.split(" ", 1)[1])
        thread.join(60)
        conn.close()
        marks.close()
    if counter:  # the probe's own HGETALL
        counts[("client", "HGETALL")] = counts.get(("client", "HGETALL"), 0) - 1
    return counts, elapsed, result, c1 - c0


def _requests_served(client, arms: str) -> int:
    raw = client.hgetall(arms)
    return sum(int(v) for k, v in raw.items() if k.endswith(":req"))


# -- rewards ------------------------------------------------------------------------------------


class _CapturePipe:
    """Stands in for a redis pipeline: records the commands the store would send."""

    def __init__(self, calls: list):
        self.calls = calls

    def evalsha(self, *args):
        self.calls.append(("EVALSHA", *args))

    def __getattr__(self, name: str):
        return lambda *args, **_kw: self.calls.append((name.upper(), *args))


def capturing_store():
    """An ExperimentStore whose scripted calls are recorded instead of sent, so that the
    benchmark replays exactly what the store's code sends (its scripts and arguments change as
    the project does). Returns (store, the list the calls land in, {sha: script name})."""
    import hashlib

    from gateway.store.experiments import ExperimentStore

    store = ExperimentStore.from_url("unix:///nonexistent.sock")  # never connects
    store._shas = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in store._sources.items()}
    calls: list = []

    async def run_scripted(build):
        build(_CapturePipe(calls))
        raise _Captured  # what the store would do with the replies is not our business

    store._run_scripted = run_scripted
    return store, calls, {sha: name for name, sha in store._shas.items()}


class _Captured(Exception):
    pass


async def capture(coro) -> None:
    with contextlib.suppress(_Captured):
        await coro


def load_scripts(client) -> None:
    from gateway.store.experiments import ExperimentStore

    for src in ExperimentStore.from_url("unix:///nonexistent.sock")._sources.values():
        client.script_load(src)


def prepare_rewarded_requests(client, prefix: str, count: int, variant: str, window_s: float) -> list[str]:
    """Record `count` served predictions with the store's own `record_prediction` calls (replayed
    here in pipelines of 2,000) and return their request ids."""
    store, calls, _ = capturing_store()
    load_scripts(client)
    now = time.time()
    record = {"t": repr(now), "pred": "[1]", "prop": "1.0"}
    ids = [f"{prefix}-{i:08d}" for i in range(count)]

    async def build() -> None:
        for rid in ids:
            await capture(store.record_prediction(EXPERIMENT, rid, variant, record, window_s, None))

    asyncio.run(build())
    for start in range(0, len(calls), 2000):
        pipe = client.pipeline(transaction=False)
        for call in calls[start : start + 2000]:
            pipe.execute_command(*call)
        pipe.execute()
    return ids


def reward_bodies(ids: list[str], secret: str, variant: str, window_s: float, path: Path) -> int:
    from gateway.tokens import RewardTokens, TokenClaims

    tokens = RewardTokens(secret)
    exp = time.time() + window_s
    rng = random.Random(7)
    n = 0
    with open(path, "w") as fh:
        for start in range(0, len(ids), REWARD_BATCH):
            items = [
                {"request_id": rid, "token": tokens.sign(rid, TokenClaims(EXPERIMENT, variant, exp)), "reward": rng.randint(0, 1)}
                for rid in ids[start : start + REWARD_BATCH]
            ]
            fh.write(json.dumps({"rewards": items}, separators=(",", ":")) + "\n")
            n += 1
    return n


def measure_rewards(client, url: str, work: Path, warmup: float, measure: float, records: int,
                    proc: Proc | None = None, profile_dir: str | None = None) -> dict:
    from gateway.store import keys

    secret = client.get(keys.SECRET)
    window = 3600.0
    t0 = time.perf_counter()
    ids = prepare_rewarded_requests(client, "rw", records, "logreg", window)
    body_file = work / "rewards.jsonl"
    batches = reward_bodies(ids, secret, "logreg", window, body_file)
    aof_quiet(client)
    log(f"  prepared {records} served requests and {batches} reward batches in {time.perf_counter() - t0:.1f}s")
    cmd = [sys.executable, str(LOAD), f"{url}/v1/rewards", "--bodies", str(body_file), "--connections", "4",
           "--warmup", str(warmup), "--duration", str(measure), "--count-field", "accepted"]
    profile: dict[str, Any] = {}
    before = cpu_snapshot(proc) if proc else None
    loader = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        if profile_dir and proc is not None:
            time.sleep(warmup)
            with spying({"router": gateway_targets(proc)["router"]}, measure, Path(profile_dir), "rewards", profile):
                pass
        stdout, stderr = loader.communicate(timeout=warmup + measure + 120)
    finally:
        if loader.poll() is None:
            loader.kill()
            loader.wait()
    if loader.returncode != 0:
        raise RuntimeError(f"_load.py failed: {stderr[-2000:]}")
    r = json.loads(stdout)
    body_file.unlink(missing_ok=True)
    result = {
        "rewards_per_s": round(r["counted_per_s"] or 0.0, 1),
        "batches_per_s": round(r["rps"], 2),
        "batch_size": REWARD_BATCH,
        "accepted": r["counted"],
        "window_s": round(r["window_s"], 3),
        "statuses": r["statuses"],
        "p50_batch_ms": round(r["p50_ms"], 1),
        "p99_batch_ms": round(r["p99_ms"], 1),
        "bodies_left": r["bodies_left"],
        "connections": 4,
    }
    if proc is not None:
        # Includes the warm-up's batches: per reward, over everything the loader sent.
        result["cpu_ms_per_1000_rewards"] = cpu_per_request(before, cpu_snapshot(proc), max(1, batches - r["bodies_left"]))
    if profile:
        result["profile"] = profile
    log(f"  rewards: {result['rewards_per_s']:.0f}/s accepted ({result['batches_per_s']:.1f} batches/s, "
        f"p50 {result['p50_batch_ms']} ms a batch, {r['bodies_left']} batches unused)")
    return result


def aof_quiet(client, timeout: float = 60.0) -> None:
    """Rewrite the AOF now and wait for it: the embedded Redis (appendonly, appendfsync
    everysec) otherwise starts a rewrite (a fork writing the whole dataset) in the middle of a
    measurement once the file has doubled."""
    with contextlib.suppress(Exception):
        client.bgrewriteaof()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not (info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")
                or info.get("rdb_bgsave_in_progress")):
            return
        time.sleep(0.2)


def measure_store_vs_redis_benchmark(redis_url: str, seconds: float, calls: int) -> dict:
    """ExperimentStore.apply_rewards (the router's update path, batches of 1,000) against
    redis-benchmark running EVALSHA of the same script on the same server."""
    from gateway.store import keys
    from gateway.store.experiments import ExperimentStore, RewardItem

    client = redis_client(redis_url)
    # Keyspace for redis-benchmark, 10x its calls: ~95% of the random keys are fresh, so nearly
    # every call takes the accepted path like the store's. Written first, so that both runs
    # meet the same server (and the AOF rewrite this much writing triggers is over before).
    keyspace = calls * 10
    prefix = keys.request(EXPERIMENT, "rb-")
    populate = (
        "for i = tonumber(ARGV[2]), tonumber(ARGV[3]) do "
        "redis.call('HSET', ARGV[1] .. string.format('%012d', i), 'variant', 'logreg') end return 1"
    )
    for lo in range(0, keyspace, 100_000):
        client.eval(populate, 0, prefix, lo, min(keyspace, lo + 100_000) - 1)
    ids = prepare_rewarded_requests(client, "st", calls, "logreg", 3600)
    aof_quiet(client)

    async def store_run() -> tuple[int, float, dict]:
        store = ExperimentStore.from_url(redis_url)
        try:
            await store.apply_rewards([RewardItem(EXPERIMENT, "warm-none", "logreg", 1.0)], time.time())
            done, outcomes = 0, {}
            t0 = time.perf_counter()
            for start in range(0, len(ids), REWARD_BATCH):
                batch = [RewardItem(EXPERIMENT, rid, "logreg", 1.0) for rid in ids[start : start + REWARD_BATCH]]
                res = await store.apply_rewards(batch, time.time())
                for o in res:
                    o = str(o[0] if isinstance(o, (list, tuple)) else o)
                    outcomes[o] = outcomes.get(o, 0) + 1
                done += len(batch)
                if time.perf_counter() - t0 >= seconds:
                    break
            return done, time.perf_counter() - t0, outcomes
        finally:
            await store.close()

    done, elapsed, outcomes = asyncio.run(store_run())
    store_rate = done / elapsed

    bench = shutil.which("redis-benchmark")
    result: dict[str, Any] = {
        "store_rewards_per_s": round(store_rate, 1),
        "store_outcomes": outcomes,
        "store_batch": REWARD_BATCH,
    }
    if bench is None:
        result["redis_benchmark"] = "redis-benchmark not installed (apt-get install redis-tools)"
        return result
    aof_quiet(client)
    store_c, calls_made, names = capturing_store()
    asyncio.run(capture(store_c.apply_rewards([RewardItem(EXPERIMENT, "rb-__rand_int__", "logreg", 1.0)], time.time())))
    (command,) = calls_made
    load_scripts(client)
    sock = redis_url.removeprefix("unix://")
    cmd = [bench, "-s", sock, "-c", "4", "-P", "32", "-n", str(calls), "-r", str(keyspace), "--csv",
           *(str(a) for a in command)]
    result["redis_benchmark_script"] = names.get(str(command[1]))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, start_new_session=True, check=False)
    rate = None
    for line in out.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0].upper().startswith("EVALSHA"):
            rate = float(cells[1])
    if rate is None:
        result["redis_benchmark"] = f"no result: {out.stdout[-500:]} {out.stderr[-500:]}"
        return result
    result.update(
        {
            "redis_benchmark_evalsha_per_s": round(rate, 1),
            "redis_benchmark_args": f"-c 4 -P 32 -n {calls} -r {keyspace} EVALSHA <reward.lua> (unix socket)",
            "store_vs_redis_benchmark": round(store_rate / rate, 3),
        }
    )
    log(f"  store apply_rewards {store_rate:.0f}/s vs redis-benchmark EVALSHA {rate:.0f}/s "
        f"= {store_rate / rate:.0%}")
    client.close()
    return result


# -- memory -------------------------------------------------------------------------------------


def system_memory(proc: Proc) -> dict:
    import psutil

    rss = pss = 0
    by_kind: dict[str, int] = {}
    each = []
    procs = proc.processes()
    mib = 1 << 20
    for p in procs:
        try:
            info = p.memory_full_info()
            cmd = p.cmdline()
            name = " ".join(Path(c).name if c.startswith("/") else c for c in cmd[:3]) or p.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", 0)
        kind = _kind(p, name)
        by_kind[kind] = by_kind.get(kind, 0) + info.rss
        each.append({"pid": p.pid, "name": name[:80], "kind": kind, "rss_mib": round(info.rss / mib, 1),
                     "pss_mib": round(getattr(info, "pss", 0) / mib, 1)})
    return {
        "processes": len(procs),
        "each": sorted(each, key=lambda e: -e["rss_mib"]),
        "rss_mib": round(rss / mib, 1),
        "pss_mib": round(pss / mib, 1),
        "rss_by_kind_mib": {k: round(v / mib, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
    }


def _kind(p, name: str) -> str:
    title = name
    with contextlib.suppress(Exception):
        title = p.name() if not p.cmdline() else " ".join(p.cmdline())
    for key, kind in (
        ("redis-server", "redis-server"),
        ("ServeReplica:gateway:Router", "ingress replica"),
        (f"ServeReplica:gateway:{EXPERIMENT}--", "model replicas"),
        ("ServeReplica:gateway:", "other gateway replicas"),
        ("ServeReplica:bare:BareIngress", "ingress replica"),
        ("ServeReplica:bare:", "model replicas"),
        ("mlserver.cli", "mlserver"),
        ("multiprocessing", "mlserver workers"),
        ("ProxyActor", "serve proxy"),
        ("ServeController", "serve controller"),
        ("gcs_server", "gcs_server"),
        ("raylet", "raylet"),
        ("dashboard", "dashboard/agents"),
        ("runtime_env", "dashboard/agents"),
        ("log_monitor", "log monitor"),
        ("RuntimeEnv", "dashboard/agents"),
        ("monitor.py", "ray monitor"),
        ("ray::", "other ray workers"),
        ("serving.py", "driver"),
    ):
        if key.lower() in title.lower():
            return kind
    return "other"


def cpu_snapshot(proc: Proc) -> dict[int, tuple[str, float]]:
    import psutil

    out = {}
    for p in proc.processes():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            out[p.pid] = (_kind(p, p.name()), t.user + t.system)
    return out


def cpu_per_request(a: dict, b: dict, requests: int) -> dict[str, float]:
    """CPU milliseconds per request by kind of process (a contended machine stretches latency,
    but hardly the CPU each request costs)."""
    if not requests:
        return {}
    out: dict[str, float] = {}
    for pid, (kind, t) in b.items():
        spent = t - a.get(pid, (kind, 0.0))[1]
        out[kind] = out.get(kind, 0.0) + spent
    total = sum(out.values())
    res = {k: round(v * 1e3 / requests, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0}
    res["total"] = round(total * 1e3 / requests, 3)
    return res


def find_processes(proc: Proc, needle: str) -> list:
    import psutil

    out = []
    for p in proc.processes():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if needle in " ".join(p.cmdline()):
                out.append(p)
    return out


# -- profile ------------------------------------------------------------------------------------


def gateway_targets(proc: Proc) -> dict[str, list]:
    return {
        "router": find_processes(proc, "ServeReplica:gateway:Router"),
        "variant": find_processes(proc, f"ServeReplica:gateway:{EXPERIMENT}--"),
        "proxy": find_processes(proc, "ProxyActor"),
    }


@contextlib.contextmanager
def spying(targets: dict[str, list], seconds: float, out_dir: Path, tag: str, summary: dict):
    """py-spy record (raw collapsed stacks, non-blocking) of the first process of each target
    while the body runs; the summaries land in `summary`."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    spies = []
    for name, procs in targets.items():
        if not procs:
            continue
        path = out_dir / f"{tag}-{name}.txt"
        cmd = [pyspy, "record", "-p", str(procs[0].pid), "-d", str(max(1, int(seconds))), "-r", "97",
               "--nonblocking", "--format", "raw", "-o", str(path)]
        spies.append((name, path, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True)))
    try:
        yield
    finally:
        for _, _, sp in spies:
            try:
                sp.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                sp.kill()
                sp.wait()
    for name, path, _ in spies:
        if path.exists():
            summary[name] = summarize_stacks(path)
            log(f"  profile {tag} {name}: {path}")
            for frame, share in summary[name].get("self_by_library", {}).items():
                log(f"    {share:5.1%}  {frame}")
            for frame, share in list(summary[name].get("gateway_inclusive", {}).items())[:10]:
                log(f"    {share:5.1%}  (incl.) {frame}")


def profile_run(proc: Proc, loader: Loader, url: str, body: Path, out_dir: Path) -> dict:
    summary: dict[str, Any] = {}
    loader.warm(url, body, 16)
    with spying(gateway_targets(proc), loader.measure, out_dir, "predict-c16", summary):
        summary["load"] = loader.run(url, body, 16, warm=False, proc=proc)
    return summary


_CATEGORIES = (
    ("(gateway/", "gateway code"),
    ("/gateway/", "gateway code"),
    ("starlette/", "starlette"),
    ("opentelemetry/", "opentelemetry"),
    ("redis/", "redis-py"),
    ("ray/serve/", "ray serve"),
    ("ray/", "ray core"),
    ("sklearn/", "model (sklearn/numpy)"),
    ("numpy/", "model (sklearn/numpy)"),
    ("scipy/", "model (sklearn/numpy)"),
    ("uvicorn/", "uvicorn/httptools"),
    ("httptools/", "uvicorn/httptools"),
    ("asyncio/", "asyncio"),
    ("json/", "json"),
)


def _category(frame: str) -> str:
    for needle, cat in _CATEGORIES:
        if needle in frame:
            return cat
    return "other (stdlib, threads)"


def summarize_stacks(path: Path, top: int = 20) -> dict:
    """Shares of the samples: self time by library (the leaf frame's file), inclusive time of
    the gateway's own functions, and the hottest leaf functions."""
    total = 0
    by_cat: dict[str, int] = {}
    own: dict[str, int] = {}
    leaf: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        cat = _category(frames[-1])
        by_cat[cat] = by_cat.get(cat, 0) + n
        name = re.sub(r" \((?:.*/)?([^/]+?):\d+\)$", r" [\1]", frames[-1])
        leaf[name] = leaf.get(name, 0) + n
        seen = set()
        for f in frames:
            if "(gateway/" in f or "/gateway/" in f:
                fn = re.sub(r" \((?:.*/)?([^/]+?):\d+\)$", r" [\1]", f)
                if fn not in seen:
                    seen.add(fn)
                    own[fn] = own.get(fn, 0) + n

    def order(d: dict) -> dict:
        return {k: round(v / total, 4) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]}

    if not total:
        return {"samples": 0}
    return {"samples": total, "self_by_library": order(by_cat), "gateway_inclusive": order(own), "self": order(leaf)}


# -- MLServer -----------------------------------------------------------------------------------


def mlserver_requirements() -> list[str]:
    import sklearn

    return [f"mlserver=={MLSERVER_VERSION}", f"mlserver-sklearn=={MLSERVER_VERSION}", "uvloop<0.22",
            f"scikit-learn=={sklearn.__version__}", "joblib"]


def ensure_mlserver_venv(cache: Path) -> Path:
    """MLServer in its own venv (its pins clash with the project's); built once, reused."""
    venv = cache / f"mlserver-{MLSERVER_VERSION}"
    marker = venv / ".bench-complete"
    reqs = mlserver_requirements()
    if marker.exists() and marker.read_text().split() == " ".join(reqs).split():
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"mlserver-{MLSERVER_VERSION}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    log(f"creating the MLServer venv at {venv} (a few minutes, once)")
    subprocess.run([base, "-m", "venv", str(tmp)], check=True)
    pip = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", *reqs], check=False,
                         capture_output=True, text=True)
    if pip.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"pip install {' '.join(reqs)} failed: {pip.stderr[-2000:]}")
    (tmp / ".bench-complete").write_text(" ".join(reqs))
    shutil.rmtree(venv, ignore_errors=True)
    os.replace(tmp, venv)  # the venv is run as `venv/bin/python -c ...`, so the move is safe
    return venv


def start_mlserver(venv: Path, model_dir: Path, work: Path) -> tuple[Proc, str]:
    port = free_port()
    (model_dir / "settings.json").write_text(json.dumps(
        {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
         "debug": False}
    ))
    code = "import sys; from mlserver.cli import main; sys.argv = ['mlserver', 'start', '.']; sys.exit(main())"
    env = {k: v for k, v in child_env().items() if not k.startswith("MLSERVER")}
    proc = Proc("mlserver", [str(venv / "bin" / "python"), "-c", code], env, work / "logs", cwd=model_dir).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(lambda: http("GET", f"{url}/v2/models/{EXPERIMENT}/ready")[0] == 200, "mlserver", 180, proc)
        proc.processes()
    except BaseException:
        proc.stop()
        raise
    return proc, url


# -- model, policies, bodies ----------------------------------------------------------------------


def prepare_models(work: Path, cache: Path) -> dict:
    """Policy files (1 and 4 variants) beside their models, trained by the bootstrap recipe
    (seeded, so the result is kept in the cache dir keyed by the policies' text)."""
    import hashlib

    import yaml

    from gateway.bootstrap import resolve_artifacts
    from gateway.policy import load_policy_file

    base = yaml.safe_load(BASE_POLICY.read_text())
    one = {**base, "variants": [v for v in base["variants"] if v["name"] == "logreg"]}
    four = {
        **base,
        "variants": [
            {"name": "logreg", "model": "models/churn-logreg.skops", "train": "logistic_regression"},
            {"name": "xgb", "model": "models/churn-xgb.ubj", "train": "xgboost"},
            {"name": "hgb", "model": "models/churn-hgb.skops", "train": "hist_gradient_boosting"},
            {"name": "logreg2", "model": "models/churn-logreg2.skops", "train": "logistic_regression"},
        ],
    }
    texts = {name: yaml.safe_dump(doc, sort_keys=False) for name, doc in (("one", one), ("four", four))}
    # What the trained artifacts depend on: the features, the data recipe and the variants.
    recipe = [base.get("features"), base.get("bootstrap"), one["variants"], four["variants"]]
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    cached = cache / f"models-{key}"
    if cached.is_dir():
        shutil.copytree(cached, work / "models")
    paths = {}
    for name, text in texts.items():
        path = work / f"policy-{name}.yaml"
        path.write_text(text)
        refs = resolve_artifacts(load_policy_file(path), path, work)
        paths[name] = {"policy": str(path), "artifacts": {k: {"path": r.path, "sha256": r.sha256} for k, r in refs.items()}}
    if not cached.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f"models-{key}.tmp-{os.getpid()}"
        shutil.copytree(work / "models", tmp)
        os.replace(tmp, cached)
    paths["features"] = base["features"]
    return paths


def oip_body() -> dict:
    inputs = []
    for name, value in ROW.items():
        if isinstance(value, str):
            inputs.append({"name": name, "shape": [1], "datatype": "BYTES", "data": [value]})
        else:
            inputs.append({"name": name, "shape": [1], "datatype": "FP64", "data": [value]})
    return {"inputs": inputs}


def encoded_row(features: list[dict]) -> list[float]:
    out: list[float] = []
    for f in features:
        v = ROW[f["name"]]
        if f["type"] == "categorical":
            out.extend(1.0 if v == c else 0.0 for c in f["values"])
        else:
            out.append(float(v))
    return out


def write_mlserver_model(artifact: dict, model_dir: Path) -> None:
    import joblib

    from gateway.learning.artifacts import load_model

    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(load_model(artifact["path"], expected_sha256=artifact["sha256"]), model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(json.dumps(
        {"name": EXPERIMENT, "implementation": "mlserver_sklearn.SKLearnModel",
         "parameters": {"uri": "./model.joblib", "version": "v1"}}
    ))


def check_answer(url: str, body: bytes, expect_label: int | None) -> dict:
    status, raw = http("POST", url, body)
    if status != 200:
        raise RuntimeError(f"POST {url}: HTTP {status}: {raw[:500]!r}")
    answer = json.loads(raw)
    label = answer["outputs"][0]["data"][0]
    if expect_label is not None and label != expect_label:
        raise RuntimeError(f"POST {url}: predicted {label}, the model itself says {expect_label}")
    return answer


# -- tools --------------------------------------------------------------------------------------


def ensure_tools() -> dict:
    """wrk and redis-benchmark from Debian; installed when missing and we are root."""
    wanted = {"wrk": "wrk", "redis-benchmark": "redis-tools"}
    missing = [pkg for tool, pkg in wanted.items() if shutil.which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing {' '.join(missing)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True, check=False)
    return {tool: shutil.which(tool) for tool in wanted}


def machine() -> dict:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(Exception):
        import psutil

        mem = round(psutil.virtual_memory().total / (1 << 30), 1)
    import ray

    return {"nproc": os.cpu_count(), "cpu": model, "memory_gib": mem, "python": platform.python_version(),
            "ray": ray.__version__, "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


# =============================================================================================
# The run
# =============================================================================================


def with_retry(name: str, start, attempts: int = 2):
    """Start a system; on a busy shared machine a start can fail once (a port taken between
    picking and binding, a Ray component slow to come up): try once more."""
    for attempt in range(1, attempts + 1):
        try:
            return start(attempt)
        except Exception as err:
            if attempt == attempts:
                raise
            log(f"  {name} failed to start ({type(err).__name__}: {str(err)[-1500:]}); trying again")


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.loader = Loader(args.warmup, args.measure)
        self.results: dict[str, Any] = {}
        self.points: dict[str, dict] = {}
        self.work = Path(tempfile.mkdtemp(prefix="gw-bench-serving-"))
        (self.work / "logs").mkdir()
        self.body_file = self.work / "oip.json"
        self.body_file.write_text(json.dumps(oip_body(), separators=(",", ":")))
        self.expected_label: int | None = None

    # -- systems --------------------------------------------------------------------------------

    def gateway(self, name: str, policy: str, *, env: dict | None = None, **spec: Any) -> tuple[Proc, dict]:
        def start(attempt: int) -> tuple[Proc, dict]:
            state = self.work / f"state-{name}-{attempt}"
            port = free_port()
            proc, info = start_role("gateway", name, {"policy": policy, "state_dir": str(state), "port": port, **spec},
                                    self.work, env)
            try:
                wait_http(lambda: http("GET", f"{info['url']}/v2/health/ready")[0] == 200, name, 120, proc)
                check_answer(f"{info['url']}/v2/models/{EXPERIMENT}/infer", self.body_file.read_bytes(),
                             self.expected_label)
                proc.processes()
            except BaseException:
                proc.stop()
                raise
            return proc, info

        log(f"starting {name}")
        t0 = time.perf_counter()
        proc, info = with_retry(name, start)
        log(f"  {name} ready in {time.perf_counter() - t0:.1f}s at {info['url']}")
        return proc, info

    def stop(self, proc: Proc, timeout: float = 60.0) -> None:
        t0 = time.perf_counter()
        proc.stop(timeout)
        log(f"  {proc.name} stopped in {time.perf_counter() - t0:.1f}s")

    # -- sections -------------------------------------------------------------------------------

    def section_gateway(self) -> None:
        proc, info = self.gateway("gateway", self.models["one"]["policy"])
        try:
            url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
            self.points["gateway_c1"] = self.loader.run(url, self.body_file, 1, proc=proc)
            client = redis_client(info["redis_url"])
            try:
                redis_fig, point = measure_redis_per_predict(
                    client, info["redis_url"], self.loader, url, self.body_file, min(3.0, self.args.measure), proc
                )
                self.points["gateway_c16"] = point
                self.results["redis"] = redis_fig
                log(f"  redis: {redis_fig['roundtrips_per_predict']} client commands (round trips) a predict "
                    f"{redis_fig['client_commands_per_predict']}; all calls {redis_fig['calls_per_predict']}")
                self.results["memory_1_variant"] = system_memory(proc)
                if self.args.profile:
                    self.results["profile"] = profile_run(proc, self.loader, url, self.body_file, Path(self.args.profile))
                self.results["rewards"] = measure_rewards(
                    client, info["url"], self.work, min(2.0, self.args.warmup), self.args.measure,
                    self.args.reward_records, proc, self.args.profile,
                )
                self.results["store"] = measure_store_vs_redis_benchmark(
                    info["redis_url"], seconds=min(4.0, self.args.measure), calls=self.args.store_calls
                )
            finally:
                client.close()
            if "scaling" in self.args.only:
                t0 = time.perf_counter()
                try:
                    self.section_scaling(running=(proc, info))
                except Exception as err:  # noqa: BLE001 - reported with the other sections' errors
                    self.scaling_error = f"{type(err).__name__}: {err}"
                    log(f"section scaling failed: {self.scaling_error}")
                self.results.setdefault("section_seconds", {})["scaling"] = round(time.perf_counter() - t0, 1)
        finally:
            self.stop(proc)

    def section_traced(self) -> None:
        sink, sink_info = start_role("sink", "otlp-sink", {"port": free_port()}, self.work)
        try:
            endpoint = f"{sink_info['url']}/v1/traces"
            env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
                   "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
            proc, info = self.gateway("gateway-traced", self.models["one"]["policy"], env=env)
            try:
                url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
                self.points["traced_c1"] = self.loader.run(url, self.body_file, 1, proc=proc)
                self.points["traced_c16"] = self.loader.run(url, self.body_file, 16, proc=proc)
            finally:
                self.stop(proc)
            status, raw = http("GET", f"{sink_info['url']}/stats")
            self.results["trace_sink"] = json.loads(raw) if status == 200 else {"error": status}
            log(f"  trace sink received {self.results['trace_sink']}")
        finally:
            sink.stop()

    def section_bare(self) -> None:
        from gateway.serving.ingress import serve_environment, stop_haproxy
        from gateway.settings import Settings

        # The gateway's default ingress path (HAProxy in front of direct ingress, throughput-
        # optimised Serve); the ingress replica's own port beside it is the fastest Serve offers.
        run_dir = self.work / "bare-ingress"
        env = serve_environment(Settings().ingress, "127.0.0.1", run_dir)
        di_http = int(env.get("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", 0))
        if not env:
            di_http = free_port_range(20)
            env = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(di_http),
                   "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(di_http + 19),
                   "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0"}
        log(f"starting bare Ray Serve (ingress path: {'HAProxy + direct ingress' if 'RAY_SERVE_ENABLE_HA_PROXY' in env else 'proxy'})")
        t0 = time.perf_counter()
        artifact = self.models["one"]["artifacts"]["logreg"]
        body = self.body_file.read_bytes()

        def start(attempt: int) -> tuple[Proc, dict]:
            proc, info = start_role("bare", "bare", {"port": free_port(), "artifact": artifact,
                                                     "features": self.models["features"]}, self.work, env)
            try:
                url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
                wait_http(lambda: http("POST", url, body)[0] == 200, "bare", 120, proc)
                check_answer(url, body, self.expected_label)
            except BaseException:
                proc.stop()
                raise
            return proc, info

        proc, info = with_retry("bare", start)
        try:
            url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
            log(f"  bare ready in {time.perf_counter() - t0:.1f}s")
            direct = self._direct_port(proc, di_http)
            self.points["bare_c1"] = self.loader.run(url, self.body_file, 1, proc=proc)
            self.points["bare_c16"] = self.loader.run(url, self.body_file, 16, proc=proc)
            if direct:
                durl = f"http://127.0.0.1:{direct}/v2/models/{EXPERIMENT}/infer"
                check_answer(durl, body, self.expected_label)
                log(f"  direct ingress on port {direct}")
                self.points["bare_direct_c1"] = self.loader.run(durl, self.body_file, 1, proc=proc)
                self.points["bare_direct_c16"] = self.loader.run(durl, self.body_file, 16, proc=proc)
            else:
                log("  direct ingress port not found; skipped")
        finally:
            self.stop(proc)
            stop_haproxy(run_dir)

    def _direct_port(self, proc: Proc, base: int) -> int | None:
        import psutil

        pids = {p.pid for p in proc.processes()}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for c in psutil.net_connections(kind="tcp"):
                if (c.status == psutil.CONN_LISTEN and c.pid in pids and c.laddr
                        and base <= c.laddr.port < base + 20):
                    return c.laddr.port
            time.sleep(0.5)
            pids = {p.pid for p in proc.processes()}
        return None

    def section_mlserver(self) -> None:
        venv = ensure_mlserver_venv(Path(self.args.cache_dir))
        model_dir = self.work / "mlserver-model"
        write_mlserver_model(self.models["one"]["artifacts"]["logreg"], model_dir)
        body_file = self.work / "mlserver.json"
        body = {"inputs": [{"name": "input-0", "shape": [1, len(self.encoded)], "datatype": "FP64",
                            "data": [self.encoded]}]}
        body_file.write_text(json.dumps(body, separators=(",", ":")))
        log("starting MLServer")
        t0 = time.perf_counter()
        proc, url = start_mlserver(venv, model_dir, self.work)
        try:
            infer = f"{url}/v2/models/{EXPERIMENT}/infer"
            check_answer(infer, body_file.read_bytes(), self.expected_label)
            log(f"  mlserver ready in {time.perf_counter() - t0:.1f}s at {url}")
            self.points["mlserver_c1"] = self.loader.run(infer, body_file, 1, proc=proc)
            self.points["mlserver_c16"] = self.loader.run(infer, body_file, 16, proc=proc)
        finally:
            # MLServer 1.7.1 can hang in uvicorn's "Waiting for background tasks" after SIGTERM.
            self.stop(proc, timeout=10)

    def section_scaling(self, running: tuple[Proc, dict] | None = None) -> None:
        """Redeploys the running gateway (or a fresh one) with 2 Router replicas, then with 1
        Router and 2 replicas of the variant, and measures each at 16 connections."""
        proc, info = running or self.gateway("gateway-scaling", self.models["one"]["policy"])
        try:
            url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
            if running is None:
                self.points["scaling_router1_variant1_c16"] = self.loader.run(url, self.body_file, 16, proc=proc)
            # Router replicas with the default placement (each replica predicts in process), then
            # placement `deployment` (the shape of the bare chain: router -> variant deployment)
            # with 1 and 2 variant replicas, then the default again.
            steps = [("scaling_router2", 2, 1, "router", (16,)),
                     ("gateway_deployment", 1, 1, "deployment", (1, 16)),
                     ("scaling_variant2", 1, 2, "deployment", (16,)),
                     ("scaling_back_to_1_1", 1, 1, "router", (16,))]
            for key, router, variant, placement, connections in steps:
                self.redeploy(proc, router, variant, placement)
                for c in connections:
                    point = self.loader.run(url, self.body_file, c, proc=proc)
                    point["replicas"] = {"router": router, "variant": variant, "placement": placement}
                    self.points[f"{key}_c{c}"] = point
        finally:
            if running is None:
                self.stop(proc)

    def redeploy(self, proc: Proc, router: int, variant: int, placement: str, timeout: float = 240) -> None:
        log(f"redeploying the gateway with {router} Router and {variant} variant replica(s), placement {placement}")
        t0 = time.perf_counter()
        ready = self.work / f"{proc.name}.ready.json"
        ack = Path(str(ready) + ".ack")
        ack.unlink(missing_ok=True)
        cmd_id = f"{router}-{variant}-{time.time()}"
        _write_ready(str(ready) + ".cmd", {"id": cmd_id, "router_replicas": router, "variant_replicas": variant,
                                           "placement": placement})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ack.exists() and json.loads(ack.read_text()).get("id") == cmd_id:
                break
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited during the redeploy:\n{proc.log_tail()}")
            time.sleep(0.25)
        else:
            raise RuntimeError(f"{proc.name}: no redeploy within {timeout:.0f}s")
        answer = json.loads(ack.read_text())
        if not answer["ok"]:
            raise RuntimeError(f"redeploy failed: {answer['error']}")
        proc.processes()
        info = json.loads(ready.read_text())
        wait_http(lambda: http("GET", f"{info['url']}/v2/health/ready")[0] == 200, proc.name, 120, proc)
        check_answer(f"{info['url']}/v2/models/{EXPERIMENT}/infer", self.body_file.read_bytes(), self.expected_label)
        log(f"  redeployed in {time.perf_counter() - t0:.1f}s")

    def section_memory(self) -> None:
        proc, info = self.gateway("gateway-4variants", self.models["four"]["policy"])
        try:
            url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
            self.points["gateway4_c16"] = self.loader.run(url, self.body_file, 16, proc=proc)
            time.sleep(1.0)
            mem = system_memory(proc)
            self.results["memory_4_variants"] = mem
            log(f"  4 variants: RSS {mem['rss_mib']:.0f} MiB (PSS {mem['pss_mib']:.0f} MiB) over "
                f"{mem['processes']} processes")
        finally:
            self.stop(proc)

    # -- all ------------------------------------------------------------------------------------

    def execute(self) -> dict:
        started = time.perf_counter()
        self.results["tools"] = ensure_tools()
        if not self.results["tools"]["wrk"]:
            log("wrk is not available: load comes from bench/_load.py")
            self.loader.wrk = None
        self.results["machine"] = machine()
        log(f"work dir {self.work}; training the models")
        self.models = prepare_models(self.work, Path(self.args.cache_dir))
        self.encoded = encoded_row(self.models["features"])
        from gateway.learning import artifacts

        a = self.models["one"]["artifacts"]["logreg"]
        import numpy as np

        self.expected_label = int(artifacts.predict(artifacts.load_model(a["path"], a["sha256"]),
                                                    np.array([self.encoded]))[0][0])
        errors = {}
        self.scaling_error = None
        for section in self.args.only:
            if section == "scaling" and "gateway" in self.args.only:
                continue  # measured on the gateway section's system, redeployed
            t0 = time.perf_counter()
            try:
                getattr(self, f"section_{section}")()
            except Exception as err:  # noqa: BLE001 - one system failing must not lose the others' figures
                import traceback

                errors[section] = f"{type(err).__name__}: {err}"
                log(f"section {section} failed: {traceback.format_exc()}")
            self.results.setdefault("section_seconds", {})[section] = round(time.perf_counter() - t0, 1)
        if self.scaling_error:
            errors["scaling"] = self.scaling_error
        self.results["errors"] = errors
        self.results["wall_s"] = round(time.perf_counter() - started, 1)
        return self.summary()

    def summary(self) -> dict:
        p, r = self.points, self.results
        out: dict[str, Any] = {
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": "python bench/serving.py " + " ".join(self.args.argv),
            "protocol": {"warmup_s": self.args.warmup, "measure_s": self.args.measure,
                         "load_tool": "wrk -t1 + bench/serving_post.lua" if self.loader.wrk else "bench/_load.py"},
        }

        def get(point: str, key: str):
            return p.get(point, {}).get(key)

        def ratio(a, b, nd=3):
            return round(a / b, nd) if a is not None and b else None

        out["gateway_rps"] = get("gateway_c16", "rps")
        out["gateway_rps_c1"] = get("gateway_c1", "rps")
        out["bare_rps"] = get("bare_c16", "rps")
        out["bare_direct_rps"] = get("bare_direct_c16", "rps")
        out["mlserver_rps"] = get("mlserver_c16", "rps")
        out["throughput_ratio_vs_bare"] = ratio(out["gateway_rps"], out["bare_rps"])
        out["throughput_ratio_vs_bare_direct"] = ratio(out["gateway_rps"], out["bare_direct_rps"])
        out["throughput_ratio_vs_mlserver"] = ratio(out["gateway_rps"], out["mlserver_rps"])
        g50, b50 = get("gateway_c1", "p50_ms"), get("bare_c1", "p50_ms")
        out["gateway_p50_ms_c1"], out["bare_p50_ms_c1"] = g50, b50
        out["bare_direct_p50_ms_c1"] = get("bare_direct_c1", "p50_ms")
        out["mlserver_p50_ms_c1"] = get("mlserver_c1", "p50_ms")
        out["added_p50_ms"] = round(g50 - b50, 3) if g50 is not None and b50 is not None else None
        # Placement `deployment`: the bare chain's own shape (router -> variant deployment), so
        # what bandit routing, tracing and the decision log add on top of the same hops.
        out["gateway_deployment_rps"] = get("gateway_deployment_c16", "rps")
        out["gateway_deployment_p50_ms_c1"] = get("gateway_deployment_c1", "p50_ms")
        out["deployment_ratio_vs_bare"] = ratio(out["gateway_deployment_rps"], out["bare_rps"])
        gd50 = out["gateway_deployment_p50_ms_c1"]
        out["deployment_added_p50_ms"] = round(gd50 - b50, 3) if gd50 is not None and b50 is not None else None
        out["gateway_p99_ms_c16"], out["bare_p99_ms_c16"] = get("gateway_c16", "p99_ms"), get("bare_c16", "p99_ms")
        out["p99_ratio_vs_bare"] = ratio(out["gateway_p99_ms_c16"], out["bare_p99_ms_c16"])
        red = r.get("redis", {})
        rt = red.get("roundtrips_per_predict")
        out["redis_roundtrips_per_predict"] = None if rt is None else round(rt, 2)
        out["redis_client_commands_per_predict"] = red.get("client_commands_per_predict")
        out["redis_calls_per_predict"] = red.get("calls_per_predict")
        out["rewards_per_s"] = r.get("rewards", {}).get("rewards_per_s")
        st = r.get("store", {})
        out["store_rewards_per_s"] = st.get("store_rewards_per_s")
        out["redis_benchmark_evalsha_per_s"] = st.get("redis_benchmark_evalsha_per_s")
        out["store_vs_redis_benchmark"] = st.get("store_vs_redis_benchmark")
        out["traced_p50_ms_c1"] = get("traced_c1", "p50_ms")
        out["tracing_p50_ratio"] = ratio(out["traced_p50_ms_c1"], g50)
        out["traced_rps"] = get("traced_c16", "rps")
        out["tracing_rps_ratio"] = ratio(out["traced_rps"], out["gateway_rps"])
        out["spans_exported"] = r.get("trace_sink", {}).get("spans")
        m4 = r.get("memory_4_variants", {})
        out["rss_mib"] = m4.get("rss_mib")
        out["pss_mib"] = m4.get("pss_mib")
        out["rss_mib_1_variant"] = r.get("memory_1_variant", {}).get("rss_mib")
        out["scaling"] = {
            "router1_variant1_rps": get("scaling_router1_variant1_c16", "rps") or out["gateway_rps"],
            "router2_variant1_rps": get("scaling_router2_c16", "rps"),
            "deployment_variant1_rps": get("gateway_deployment_c16", "rps"),
            "router1_variant2_rps": get("scaling_variant2_c16", "rps"),
            "router1_variant1_after_redeploys_rps": get("scaling_back_to_1_1_c16", "rps"),
            "gateway_4_variants_rps": get("gateway4_c16", "rps"),
        }
        out["goals"] = {}
        for key, (op, goal) in GOALS.items():
            value = out.get(key)
            met = None if value is None else (value >= goal if op == ">=" else value <= goal)
            out["goals"][key] = {"value": value, "goal": f"{op} {goal:g}", "met": met}
        out["points"] = p
        out["details"] = r
        return out


# =============================================================================================
# README
# =============================================================================================


def _f(x, fmt="{:,.0f}", none="n/a") -> str:
    return none if x is None else fmt.format(x)


def _met(s: dict, key: str) -> str:
    m = s["goals"].get(key, {}).get("met")
    return "n/a" if m is None else ("yes" if m else "**no**")


def render_table(s: dict) -> str:
    mach = s["details"].get("machine", {})
    red = s.get("redis_calls_per_predict") or {}
    calls = ", ".join(f"{k} {v:g}" for k, v in red.items()) or "n/a"
    client = ", ".join(f"{k} {v:g}" for k, v in (s.get("redis_client_commands_per_predict") or {}).items()) or "n/a"
    st = s["details"].get("store", {})
    m4 = s["details"].get("memory_4_variants", {})
    sc = s["scaling"]
    rw = s["details"].get("rewards", {})
    lines = [
        f"- date: {s['date']}",
        (f"- machine: nproc={mach.get('nproc')}, {mach.get('cpu')}, {mach.get('memory_gib')} GiB; Python "
        f"{mach.get('python')}, Ray {mach.get('ray')}; shared with other work (1-minute load average "
        f"{mach.get('load_avg_at_start', ['?'])[0]} at the start, per load point in the JSON)"),
        f"- command: `{s['command']}` (wall time {s['details'].get('wall_s')} s)",
        (f"- protocol: every system started by the script, one at a time; {s['protocol']['warmup_s']:g} s warm-up "
        f"dropped, then {s['protocol']['measure_s']:g} s measured, load from {s['protocol']['load_tool']}; the "
        "same row of the churn policy's logistic-regression pipeline (OIP REST) on every system"),
        "",
        "| Measure | Result | Goal | Met |",
        "| --- | --- | --- | --- |",
        (f"| Throughput at 16 connections, gateway (default: placement router) / bare Ray Serve chain (both through "
        f"the gateway's default ingress: HAProxy -> direct ingress, throughput-optimised Serve) | "
        f"{_f(s['gateway_rps'])} / {_f(s['bare_rps'])} req/s = {_f(s['throughput_ratio_vs_bare'], '{:.2f}')} | >= 0.9 | "
        f"{_met(s, 'throughput_ratio_vs_bare')} |"),
        (f"| ... gateway with placement deployment (the bare chain's shape: router -> variant deployment) | "
        f"{_f(s.get('gateway_deployment_rps'))} req/s = {_f(s.get('deployment_ratio_vs_bare'), '{:.2f}')} of bare; "
        f"p50 at 1 connection {_f(s.get('gateway_deployment_p50_ms_c1'), '{:.2f}')} ms "
        f"({_f(s.get('deployment_added_p50_ms'), '{:+.2f}')} ms) | (reference) | |"),
        (f"| ... bare Ray Serve chain through direct ingress (the ingress replica's own port) | "
        f"{_f(s['bare_direct_rps'])} req/s (gateway / it = {_f(s['throughput_ratio_vs_bare_direct'], '{:.2f}')}) | "
        "(reference) | |"),
        (f"| Added p50 at 1 connection | {_f(s['gateway_p50_ms_c1'], '{:.2f}')} - {_f(s['bare_p50_ms_c1'], '{:.2f}')} ms = "
        f"{_f(s['added_p50_ms'], '{:+.2f}')} ms (direct ingress bare: {_f(s['bare_direct_p50_ms_c1'], '{:.2f}')} ms; "
        f"MLServer {_f(s.get('mlserver_p50_ms_c1'), '{:.2f}')} ms) | <= 1.5 ms | {_met(s, 'added_p50_ms')} |"),
        (f"| p99 at 16 connections, gateway / bare | {_f(s['gateway_p99_ms_c16'], '{:.1f}')} / "
        f"{_f(s['bare_p99_ms_c16'], '{:.1f}')} ms = {_f(s['p99_ratio_vs_bare'], '{:.2f}')}x | <= 1.2x | "
        f"{_met(s, 'p99_ratio_vs_bare')} |"),
        (f"| Throughput at 16 connections, gateway / MLServer {MLSERVER_VERSION} | {_f(s['gateway_rps'])} / "
        f"{_f(s['mlserver_rps'])} req/s = {_f(s['throughput_ratio_vs_mlserver'], '{:.2f}')} | >= 1.0 | "
        f"{_met(s, 'throughput_ratio_vs_mlserver')} |"),
        (f"| Redis round trips per predict (client commands, MONITOR; background subtracted) | "
        f"{_f(s['redis_roundtrips_per_predict'], '{:.2f}')} ({client}); all commands per predict "
        f"(INFO commandstats, scripts' included): {calls} | <= 1 | "
        f"{_met(s, 'redis_roundtrips_per_predict')} |"),
        (f"| Batch rewards (POST /v1/rewards, 1,000 items, {rw.get('connections', 4)} connections) | "
        f"{_f(s['rewards_per_s'])} rewards/s (p50 {_f(rw.get('p50_batch_ms'), '{:.0f}')} ms a batch) | >= 5,000/s | "
        f"{_met(s, 'rewards_per_s')} |"),
        (f"| Store update path / redis-benchmark EVALSHA (same script, same Redis) | "
        f"{_f(s['store_rewards_per_s'])} / {_f(s['redis_benchmark_evalsha_per_s'])} per s = "
        f"{_f(s['store_vs_redis_benchmark'], '{:.0%}')} | >= 50% | {_met(s, 'store_vs_redis_benchmark')} |"),
        (f"| Tracing on (OTLP to a local sink) / off, p50 at 1 connection | {_f(s['traced_p50_ms_c1'], '{:.2f}')} / "
        f"{_f(s['gateway_p50_ms_c1'], '{:.2f}')} ms = {_f(s['tracing_p50_ratio'], '{:.2f}')}x "
        f"(16 conn: {_f(s['traced_rps'])} vs {_f(s['gateway_rps'])} req/s; {_f(s['spans_exported'])} spans exported) | "
        f"<= 1.1x | {_met(s, 'tracing_p50_ratio')} |"),
        (f"| Resident memory, whole system with 4 variants ({m4.get('processes', 'n/a')} processes) | "
        f"RSS {_f(s['rss_mib'])} MiB (PSS {_f(s['pss_mib'])} MiB; 1 variant: RSS {_f(s['rss_mib_1_variant'])} MiB) | "
        f"<= 3,072 MiB | {_met(s, 'rss_mib')} |"),
        (f"| Scaling at 16 connections (same system, redeployed): router replicas 1 -> 2 | "
        f"{_f(sc['router1_variant1_rps'])} -> {_f(sc['router2_variant1_rps'])} req/s (1/1 again after the "
        f"redeploys: {_f(sc.get('router1_variant1_after_redeploys_rps'))}) | (report) | |"),
        (f"| Scaling at 16 connections: variant replicas 1 -> 2 (placement deployment) | "
        f"{_f(sc.get('deployment_variant1_rps'))} -> {_f(sc['router1_variant2_rps'])} req/s | (report) | |"),
        "",
        "| Load point | Connections | req/s | p50 ms | p90 ms | p99 ms | non-2xx |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, pt in s["points"].items():
        lines.append(f"| {name.rsplit('_c', 1)[0]} | {pt['connections']} | {pt['rps']:,.1f} | {pt['p50_ms']:.2f} | "
                     f"{pt['p90_ms']:.2f} | {pt['p99_ms']:.2f} | {pt['non_2xx'] + pt['socket_errors']} |")
    if st.get("redis_benchmark_args"):
        lines += ["", (f"redis-benchmark: `{st['redis_benchmark_args']}`; the store path: "
                  f"`ExperimentStore.apply_rewards` in batches of {st.get('store_batch')}, one client.")]
    errs = s["details"].get("errors")
    if errs:
        lines += ["", "Sections that failed in this run: " + "; ".join(f"{k}: {v}" for k, v in errs.items())]
    return "\n".join(lines)


def write_readme(table: str) -> None:
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    block = f"{START_MARK}\n## Serving: gateway vs bare Ray Serve and MLServer (`bench/serving.py`)\n\n{table}\n{END_MARK}"
    if START_MARK in text and END_MARK in text:
        head, _, rest = text.partition(START_MARK)
        _, _, tail = rest.partition(END_MARK)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    README.write_text(text)


# =============================================================================================


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up dropped before each load point")
    p.add_argument("--measure", type=float, default=8.0, help="seconds measured per load point")
    p.add_argument("--reward-records", type=int, default=120_000, help="served requests prepared for rewards")
    p.add_argument("--store-calls", type=int, default=60_000, help="rewards for the store / redis-benchmark run")
    p.add_argument("--profile", help="record py-spy stacks of the router, variant and proxy into this folder")
    p.add_argument("--cache-dir", default=os.environ.get("GATEWAY_BENCH_CACHE", "/tmp/gateway-bench-cache"),
                   help="where the MLServer venv is kept")
    p.add_argument("--no-readme", action="store_true", help="do not write bench/README.md")
    p.add_argument("--keep-work", action="store_true", help="keep the work dir (logs, state)")
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role:
        ROLES[args.role](json.loads(Path(args.spec).read_text()))
        return 0
    args.argv = argv
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in SECTIONS]
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    run = Run(args)
    log(f"sections: {', '.join(args.only)}")
    try:
        summary = run.execute()
    finally:
        if not args.keep_work:
            shutil.rmtree(run.work, ignore_errors=True)
        else:
            log(f"work dir kept: {run.work}")
    table = render_table(summary)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
        log(f"wrote {args.json}")
    full = set(args.only) == set(SECTIONS) and not args.profile
    if not args.no_readme and full:
        write_readme(table)
        log(f"wrote the table into {README}")
    log(f"wall time {summary['details']['wall_s']} s")
    return 1 if summary["details"].get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
