#!/usr/bin/env python
"""Serving over gRPC: the gateway's Open Inference Protocol infer over gRPC against REST, and
against MLServer over gRPC.

Usage::

    python bench/grpc_serving.py [--rounds N] [--connections N] [--warmup S] [--measure S]
                                 [--replicas N] [--mlserver WORKERS] [--cache-dir DIR]
                                 [--json PATH]

One gateway (`gateway serve`, its default configuration plus GATEWAY_GRPC_PORT; embedded Redis,
Ray Serve, the model inside the Router replica, tracing off) serves the churn policy of
tests/policies/churn.yaml reduced to its logistic-regression variant, the model trained by the
gateway's bootstrap recipe (bench/_systems.py `prepare_models`, as bench/serving.py does).
Each round measures ModelInfer over gRPC and POST /v2/models/churn/infer over REST on the same
one-row request (bench/_systems.py ROW): one tensor per feature, FP64 and BYTES; JSON over REST,
the protocol's protobuf over gRPC with the tensors in raw_input_contents (as tritonclient sends
them). Both are bandit-routed and recorded like any prediction.

MLServer (--mlserver, default `1,0`; `none` skips it): MLServer 1.7.1 with mlserver-sklearn in
its own venv under --cache-dir (bench/_systems.py `ensure_mlserver_venv`, created when
missing), serving the very same pipeline artifact (loaded from the gateway's skops file and
saved with joblib, `write_mlserver_model`), one server per `parallel_workers` setting listed
(1: inference in a worker process, MLServer's default; 0: in the server process), set through
MLServer's own `.env` file (MLSERVER_PARALLEL_WORKERS) in the model folder, which is the
server's working directory. Its request is ModelInfer with one [1, 6] FP64 tensor in
raw_input_contents: MLServer's sklearn runtime takes the model's input matrix, so the row is
sent already encoded (the categorical feature one-hot), while the gateway takes the raw features
and encodes them itself (a categorical feature cannot travel in an FP64 matrix; that encoding is
part of the gateway's work). Every system answers the same label, checked before the load.

All systems run for the whole benchmark; each round runs gateway gRPC, gateway REST and each
MLServer one after the other, in reverse order every other round. The load comes from a process
of its own, in Python for every system (so none gets a cheaper client on a 2-core machine):
bench/_load.py (asyncio streams, keep-alive) for REST, and this file's `--role grpc-load`
(grpc.aio, one channel per connection, each with its own TCP connection, pre-serialized
messages) for gRPC, the same for the gateway and MLServer. Every run drops a warm-up (--warmup)
and measures the next --measure seconds. The tables give each round's throughput, the median
gRPC/REST ratio and the median gateway/MLServer gRPC ratio (against each MLServer setting; the
headline against the better one) with their range over the rounds, the p50 latencies, the CPU
each client process spent per request (the load shares the machine with the servers), and the
CPU the idle systems spent meanwhile.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _systems import EXPERIMENT, MLSERVER_VERSION, ROW, free_port

ROOT = Path(__file__).resolve().parents[1]
METHOD = "/inference.GRPCInferenceService/ModelInfer"
RAW_DTYPES = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}


# -- the requests -------------------------------------------------------------------------------


def rest_body() -> bytes:
    inputs = [
        {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
        for k, v in ROW.items()
    ]
    return json.dumps({"inputs": inputs}).encode()


def grpc_body() -> bytes:
    """The gateway's request: one tensor per raw feature, as REST's."""
    import numpy as np

    from gateway.api.grpc import grpc_predict_v2_pb2 as pb
    from gateway.api.oip_tensors import encode_binary

    request = pb.ModelInferRequest(model_name=EXPERIMENT)
    for name, value in ROW.items():
        datatype = "BYTES" if isinstance(value, str) else "FP64"
        request.inputs.add(name=name, datatype=datatype, shape=[1])
        raw = encode_binary([value], "BYTES") if datatype == "BYTES" else np.array([value], "<f8").tobytes()
        request.raw_input_contents.append(raw)
    return request.SerializeToString()


def mlserver_grpc_body(encoded: list[float]) -> bytes:
    """MLServer's request: the same row encoded as the model's input matrix, one [1, n] FP64
    tensor in raw_input_contents (what bench/serving.py sends MLServer over REST, as JSON)."""
    import numpy as np

    from gateway.api.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=EXPERIMENT)
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, len(encoded)])
    request.raw_input_contents.append(np.array(encoded, "<f8").tobytes())
    return request.SerializeToString()


def grpc_label(target: str, body: bytes, timeout: float = 60.0) -> tuple[object, dict]:
    """Wait for the model to be ready over gRPC, send `body` once, and return the first output
    value and the response's parameters."""
    import grpc
    import numpy as np

    from gateway.api.grpc import grpc_predict_v2_pb2 as pb
    from gateway.api.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        while True:
            try:
                if stub.ModelReady(pb.ModelReadyRequest(name=EXPERIMENT), timeout=5).ready:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target}: model {EXPERIMENT!r} not ready over gRPC within {timeout:.0f}s")
            time.sleep(0.25)
        answer = stub.ModelInfer(pb.ModelInferRequest.FromString(body), timeout=30)
    out = answer.outputs[0]
    if answer.raw_output_contents:
        value = np.frombuffer(answer.raw_output_contents[0], RAW_DTYPES[out.datatype])[0].item()
    else:
        field = {"FP64": "fp64_contents", "FP32": "fp32_contents", "INT64": "int64_contents",
                 "INT32": "int_contents", "BOOL": "bool_contents", "BYTES": "bytes_contents"}[out.datatype]
        value = getattr(out.contents, field)[0]
    params = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in answer.parameters.items()}
    return value, params


# -- the gRPC load process ----------------------------------------------------------------------


async def grpc_load(target: str, body: bytes, connections: int, warmup: float, duration: float) -> dict:
    import grpc

    start = time.perf_counter()
    warm_end, end = start + warmup, start + warmup + duration
    latencies: list[float] = []
    codes: dict[str, int] = {}

    async def connection() -> None:
        # A subchannel pool of its own: each channel opens its own TCP connection, as each of
        # the REST client's connections does.
        async with grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            call = channel.unary_unary(METHOD)  # bytes in, bytes out: no client-side protobuf work
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    await call(body)
                    code = "OK"
                except grpc.aio.AioRpcError as err:
                    code = err.code().name
                t1 = time.perf_counter()
                if warm_end <= t1 <= end:
                    latencies.append(t1 - t0)
                    codes[code] = codes.get(code, 0) + 1

    await asyncio.gather(*(connection() for _ in range(connections)))
    latencies.sort()
    ok = codes.get("OK", 0)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e3 if latencies else float("nan")

    return {"requests": len(latencies), "ok": ok, "statuses": codes, "rps": ok / duration,
            "p50_ms": pct(50), "p99_ms": pct(99)}


# -- the systems --------------------------------------------------------------------------------


def start_gateway(work: Path, policy: str, http_port: int, grpc_port: int, replicas: int) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "GATEWAY_GRPC_PORT": str(grpc_port),
           "GATEWAY_ROUTER_REPLICAS": str(replicas)}
    script = Path(sys.executable).with_name("gateway")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
    log = (work / "serve.log").open("ab")
    proc = subprocess.Popen(
        [*command, "serve", "--policy", policy, "--port", str(http_port), "--state-dir", str(work / "state")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway serve exited with {proc.returncode}; see {work / 'serve.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_gateway(proc)
    raise RuntimeError(f"gateway not ready after 300 s; see {work / 'serve.log'}")


def stop_gateway(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_mlserver_grpc(venv: Path, artifact: dict, work: Path, workers: int):
    """MLServer with `parallel_workers` set (bench/_systems.py start_mlserver_workers); returns
    the Proc and its gRPC target."""
    from _systems import start_mlserver_workers

    proc, _url, grpc_target = start_mlserver_workers(venv, artifact, work, workers)
    return proc, grpc_target


def process_tree(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs: list) -> dict[int, float]:
    import psutil

    out = {}
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


# -- runs and the tables ------------------------------------------------------------------------


def router_processes(gateway_pid: int) -> list:
    """The gateway's router replica(s): the Ray workers whose title names the Router deployment."""
    found = []
    for p in process_tree(gateway_pid):
        with contextlib.suppress(Exception):
            if "Router" in " ".join(p.cmdline()):
                found.append(p)
    return found


def run_load(command: list[str], idle: dict[str, int] | None = None, server: list | None = None,
             seconds: float | None = None) -> dict:
    """One load process's figures, with the CPU it spent per answered request (the clients
    differ, and on 2 cores the client's CPU is the servers' loss), and the CPU the systems not
    under load spent meanwhile (`idle`: name -> root pid), in % of one core. With `server` (the
    processes serving the load), the CPU they spent per request: over the whole run, warm-up
    included, divided by the measured rate times `seconds` (the run's length)."""
    import resource

    idle = idle or {}
    server_before = cpu_seconds(server or [])
    trees = {name: process_tree(pid) for name, pid in idle.items()}
    idle_before = {name: cpu_seconds(procs) for name, procs in trees.items()}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["client_cpu_ms_per_request"] = cpu * 1e3 / max(1, result["requests"])
    if server and seconds and result["rps"]:
        now = cpu_seconds(server)
        spent = sum(now[pid] - server_before[pid] for pid in now if pid in server_before)
        result["server_cpu_ms_per_request"] = spent * 1e3 / (result["rps"] * seconds)
    result["idle_cpu_pct"] = {}
    for name, procs in trees.items():
        now = cpu_seconds(procs)
        spent = sum(now[pid] - idle_before[name][pid] for pid in now if pid in idle_before[name])
        result["idle_cpu_pct"][name] = 100 * spent / wall
    return result


def rest_run(http_port: int, bodies: Path, args: argparse.Namespace, idle: dict[str, int], server: list) -> dict:
    return run_load([sys.executable, str(ROOT / "bench" / "_load.py"), f"http://127.0.0.1:{http_port}/v2/models/{EXPERIMENT}/infer",
                     "--bodies", str(bodies), "--repeat", "--connections", str(args.connections),
                     "--warmup", str(args.warmup), "--duration", str(args.measure)], idle, server, args.warmup + args.measure)


def grpc_run(target: str, body: Path, args: argparse.Namespace, idle: dict[str, int], server: list) -> dict:
    return run_load([sys.executable, __file__, "--role", "grpc-load", "--target", target,
                     "--body", str(body), "--connections", str(args.connections),
                     "--warmup", str(args.warmup), "--measure", str(args.measure)], idle, server, args.warmup + args.measure)


def _spread(values: list[float]) -> str:
    return f"**{statistics.median(values):.2f}x** (range {min(values):.2f}-{max(values):.2f} over {len(values)} rounds)"


def table(rounds: list[dict], args: argparse.Namespace) -> str:
    lines = [f"OIP infer at {args.connections} connections, one row, {args.replicas} router replica(s), "
             f"{args.measure:g} s measured after {args.warmup:g} s warm-up, {len(rounds)} alternating rounds",
             "", "| round | first | gRPC req/s | REST req/s | gRPC/REST | gRPC p50 ms | REST p50 ms "
             "| client CPU ms/req gRPC | REST | router CPU ms/req gRPC | REST |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for i, r in enumerate(rounds, 1):
        lines.append(f"| {i} | {r['first']} | {r['grpc']['rps']:.0f} | {r['rest']['rps']:.0f} | {r['ratio']:.2f} | "
                     f"{r['grpc']['p50_ms']:.1f} | {r['rest']['p50_ms']:.1f} | "
                     f"{r['grpc']['client_cpu_ms_per_request']:.2f} | {r['rest']['client_cpu_ms_per_request']:.2f} | "
                     f"{r['grpc'].get('server_cpu_ms_per_request', float('nan')):.2f} | "
                     f"{r['rest'].get('server_cpu_ms_per_request', float('nan')):.2f} |")
    lines += ["", f"Median gRPC/REST throughput ratio: {_spread([r['ratio'] for r in rounds])}."]
    cpu = {k: [r[k]["server_cpu_ms_per_request"] for r in rounds if "server_cpu_ms_per_request" in r[k]] for k in ("grpc", "rest")}
    if cpu["grpc"] and cpu["rest"]:
        lines.append(f"Router CPU per request (ms, median [min, max]; warm-up included): gRPC "
                     f"{statistics.median(cpu['grpc']):.2f} [{min(cpu['grpc']):.2f}, {max(cpu['grpc']):.2f}], REST "
                     f"{statistics.median(cpu['rest']):.2f} [{min(cpu['rest']):.2f}, {max(cpu['rest']):.2f}].")
    return "\n".join(lines)


def mlserver_table(rounds: list[dict], args: argparse.Namespace, workers: list[int]) -> tuple[str, dict]:
    """The gateway over gRPC against MLServer over gRPC, each round's ratio to each MLServer
    setting; the headline against the setting with the higher median throughput."""
    keys = [f"mlserver_pw{w}" for w in workers]
    label = {k: f"MLServer pw={w}" for k, w in zip(keys, workers)}
    short = {"grpc": "gw", "rest": "gw-REST", **{k: f"ml{w}" for k, w in zip(keys, workers)}}
    lines = [f"OIP ModelInfer over gRPC at {args.connections} connections, the gateway against MLServer "
             f"{MLSERVER_VERSION} (pw = parallel_workers), same pipeline and row, same gRPC load client; "
             f"{args.measure:g} s measured after {args.warmup:g} s warm-up, {len(rounds)} alternating rounds",
             "", "| round | order | gateway gRPC req/s | " + " | ".join(f"{label[k]} req/s" for k in keys)
             + " | " + " | ".join(f"gateway / {label[k]}" for k in keys) + " | gateway p50 ms | "
             + " | ".join(f"{label[k]} p50 ms" for k in keys) + " | client CPU ms/req gateway | "
             + " | ".join(label[k] for k in keys) + " |",
             "| --- | --- | " + " | ".join(["---:"] * (2 + 3 * len(keys) + 1 + len(keys))) + " |"]
    for i, r in enumerate(rounds, 1):
        order = ", ".join(short[k] for k in r["order"])
        cells = [f"{r['grpc']['rps']:.0f}", *(f"{r[k]['rps']:.0f}" for k in keys),
                 *(f"{r['grpc']['rps'] / r[k]['rps']:.2f}" if r[k]["rps"] else "nan" for k in keys),
                 f"{r['grpc']['p50_ms']:.1f}", *(f"{r[k]['p50_ms']:.1f}" for k in keys),
                 f"{r['grpc']['client_cpu_ms_per_request']:.2f}",
                 *(f"{r[k]['client_cpu_ms_per_request']:.2f}" for k in keys)]
        lines.append(f"| {i} | {order} | " + " | ".join(cells) + " |")
    medians = {k: statistics.median(r[k]["rps"] for r in rounds) for k in keys}
    best = max(keys, key=lambda k: medians[k])
    ratios = {k: [r["grpc"]["rps"] / r[k]["rps"] for r in rounds if r[k]["rps"]] for k in keys}
    lines.append("")
    for k in keys:
        lines.append(f"- {label[k]}: median {medians[k]:.0f} req/s; gateway/MLServer gRPC ratio {_spread(ratios[k])}"
                     + (" (the better setting)" if k == best and len(keys) > 1 else "") + ".")
    best_of_round = [r["grpc"]["rps"] / max(r[k]["rps"] for k in keys) for r in rounds if max(r[k]["rps"] for k in keys)]
    lines += ["", f"Gateway over gRPC / MLServer over gRPC ({label[best]}, the better by median): "
                  f"{_spread(ratios[best])}; goal >= 1.0.",
              f"Against the better MLServer of each round: {_spread(best_of_round)}."]
    # CPU per request holds on a shared machine where throughput does not: the gateway's router
    # against MLServer's whole process tree (its workers included).
    cpu = {k: [r[k]["server_cpu_ms_per_request"] for r in rounds if "server_cpu_ms_per_request" in r[k]] for k in ["grpc", *keys]}
    if all(cpu.values()):
        lines += ["", "Server CPU per gRPC request (ms, median [min, max]; warm-up included): " + ", ".join(
            f"{'gateway router' if k == 'grpc' else label[k]} {statistics.median(v):.2f} [{min(v):.2f}, {max(v):.2f}]"
            for k, v in cpu.items()) + "."]
    # The systems not under load share the machine: what they spent meanwhile.
    names = ["gateway", *keys]
    idle_rows = []
    for kind in ["grpc", *keys]:
        own = "gateway" if kind == "grpc" else kind
        vals = {n: statistics.median(r[kind]["idle_cpu_pct"].get(n, float("nan")) for r in rounds) for n in names if n != own}
        idle_rows.append(f"| {label.get(kind, 'gateway gRPC')} | " + " | ".join(
            f"{vals[n]:.1f}" if n in vals else "-" for n in names) + " |")
    lines += ["", "CPU (% of one core, median over the rounds) the idle systems spent while one was under load:",
              "", "| under load | " + " | ".join("gateway" if n == "gateway" else label[n] for n in names) + " |",
              "| --- | " + " | ".join(["---:"] * len(names)) + " |", *idle_rows]
    summary = {"mlserver_rps_median": {k: medians[k] for k in keys},
               "ratio_median": {k: statistics.median(ratios[k]) for k in keys},
               "ratio_range": {k: [min(ratios[k]), max(ratios[k])] for k in keys},
               "better": best, "ratio_vs_better": statistics.median(ratios[best]),
               "ratio_vs_best_of_round": statistics.median(best_of_round)}
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--measure", type=float, default=8.0)
    p.add_argument("--replicas", type=int, default=1, help="router replicas (each serves the gRPC port)")
    p.add_argument("--mlserver", default="1,0",
                   help="MLServer parallel_workers settings to compare with, comma-separated; 'none' skips MLServer")
    p.add_argument("--cache-dir", default=os.environ.get("GATEWAY_BENCH_CACHE", "/tmp/gateway-bench-cache"),
                   help="where the MLServer venv and the trained models are kept")
    p.add_argument("--json", type=Path, default=None, help="write every run's figures here")
    p.add_argument("--role", choices=["grpc-load"], help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--body", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "grpc-load":
        result = asyncio.run(grpc_load(args.target, args.body.read_bytes(), args.connections, args.warmup, args.measure))
        print(json.dumps(result))
        return 0
    workers = [] if args.mlserver.strip().lower() == "none" else [int(w) for w in args.mlserver.split(",") if w.strip()]
    if len(set(workers)) != len(workers):
        p.error("--mlserver: each setting once")

    import numpy as np

    from _systems import encoded_row, ensure_mlserver_venv, prepare_models
    from gateway.learning import artifacts

    cache = Path(args.cache_dir)
    venv = ensure_mlserver_venv(cache) if workers else None
    rounds: list[dict] = []
    checks: dict = {}
    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        # The same trained artifact for every system (cached in --cache-dir, keyed by the recipe).
        models = prepare_models(work, cache)
        artifact = models["one"]["artifacts"]["logreg"]
        encoded = encoded_row(models["features"])
        expected = artifacts.predict(artifacts.load_model(artifact["path"], artifact["sha256"]), np.array([encoded]))[0][0]
        expected = expected.item() if hasattr(expected, "item") else expected
        (work / "rest.jsonl").write_bytes(rest_body() + b"\n")
        (work / "grpc.bin").write_bytes(grpc_body())
        (work / "mlserver.bin").write_bytes(mlserver_grpc_body(encoded))
        http_port, grpc_port = free_port(), free_port()
        print(f"starting the gateway (HTTP {http_port}, gRPC {grpc_port}) ...", file=sys.stderr)
        gw = start_gateway(work, models["one"]["policy"], http_port, grpc_port, args.replicas)
        stack.callback(stop_gateway, gw)
        pids = {"gateway": gw.pid}
        targets = {"grpc": f"127.0.0.1:{grpc_port}"}
        for w in workers:
            print(f"starting MLServer {MLSERVER_VERSION} with parallel_workers {w} ...", file=sys.stderr)
            proc, target = start_mlserver_grpc(venv, artifact, work, w)
            # MLServer 1.7.1 can hang in uvicorn's "Waiting for background tasks" after SIGTERM.
            stack.callback(proc.stop, 10)
            pids[f"mlserver_pw{w}"] = proc.pid
            targets[f"mlserver_pw{w}"] = target
        # Every system answers the model's own label for the row before any load.
        for kind, target in targets.items():
            body = (work / ("grpc.bin" if kind == "grpc" else "mlserver.bin")).read_bytes()
            value, params = grpc_label(target, body)
            checks[kind] = {"label": value, "parameters": params}
            if value != expected:
                raise RuntimeError(f"{kind} at {target} answered {value!r}; the model itself says {expected!r}")
        print(f"every system answers {expected!r}: {checks}", file=sys.stderr)
        kinds = ["grpc", "rest", *(f"mlserver_pw{w}" for w in workers)]
        routers = router_processes(gw.pid)
        if not routers:
            raise RuntimeError("no Router replica among the gateway's processes")
        for i in range(args.rounds):
            order = kinds if i % 2 == 0 else kinds[::-1]
            r: dict = {"order": order, "first": next(k for k in order if k in ("grpc", "rest"))}
            for kind in order:
                owner = "gateway" if kind in ("grpc", "rest") else kind
                idle = {n: pid for n, pid in pids.items() if n != owner}
                server = routers if owner == "gateway" else process_tree(pids[kind])
                if kind == "rest":
                    r[kind] = rest_run(http_port, work / "rest.jsonl", args, idle, server)
                else:
                    r[kind] = grpc_run(targets[kind], work / ("grpc.bin" if kind == "grpc" else "mlserver.bin"), args, idle, server)
                print(f"round {i + 1} {kind}: {r[kind]['rps']:.0f} req/s, statuses {r[kind]['statuses']}", file=sys.stderr)
            r["ratio"] = r["grpc"]["rps"] / r["rest"]["rps"] if r["rest"]["rps"] else float("nan")
            rounds.append(r)
    print(table(rounds, args))
    summary = None
    if workers:
        text, summary = mlserver_table(rounds, args, workers)
        print()
        print(text)
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "connections": args.connections, "replicas": args.replicas,
                                         "mlserver_version": MLSERVER_VERSION if workers else None,
                                         "mlserver_parallel_workers": workers, "answers": checks,
                                         "grpc_vs_rest_median": statistics.median(r["ratio"] for r in rounds),
                                         "gateway_vs_mlserver": summary}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
