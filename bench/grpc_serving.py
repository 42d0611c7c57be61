#!/usr/bin/env python
"""Serving over gRPC against REST: the gateway's Open Inference Protocol infer, both ways.

Usage::

    python bench/grpc_serving.py [--rounds N] [--connections N] [--warmup S] [--measure S]
                                 [--replicas N] [--json PATH]

One gateway (`gateway serve`, its default configuration plus GATEWAY_GRPC_PORT; embedded Redis,
Ray Serve, the model inside the Router replica, tracing off) serves the churn policy of
tests/policies/churn.yaml reduced to its logistic-regression variant. Each round measures
ModelInfer over gRPC and POST /v2/models/churn/infer over REST, one after the other (which goes
first alternates), on the same one-row request: one tensor per feature, FP64 and BYTES; JSON
over REST, the protocol's protobuf over gRPC with the tensors in raw_input_contents (as
tritonclient sends them). Both are bandit-routed and recorded like any prediction.

Load comes from a process of its own, in Python for both (so neither protocol gets a cheaper
client on a 2-core machine): bench/_load.py (asyncio streams, keep-alive) for REST, and this
file's `--role grpc-load` (grpc.aio, one channel per connection, each with its own TCP
connection, pre-serialized messages) for gRPC. Every run drops a warm-up (--warmup) and measures
the next --measure seconds. The table gives each round's throughput, the median gRPC/REST ratio
with its range over the rounds, the p50 latencies, and the CPU each client process spent per
request (the load shares the machine with the gateway).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_POLICY = ROOT / "tests" / "policies" / "churn.yaml"
ROW = {"tenure": 12.0, "monthly_charges": 80.5, "support_calls": 2.0, "plan": "pro"}
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the request, both ways ---------------------------------------------------------------------


def rest_body() -> bytes:
    inputs = [
        {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
        for k, v in ROW.items()
    ]
    return json.dumps({"inputs": inputs}).encode()


def grpc_body() -> bytes:
    import numpy as np

    from gateway.api.grpc import grpc_predict_v2_pb2 as pb
    from gateway.api.oip_tensors import encode_binary

    request = pb.ModelInferRequest(model_name="churn")
    for name, value in ROW.items():
        datatype = "BYTES" if isinstance(value, str) else "FP64"
        request.inputs.add(name=name, datatype=datatype, shape=[1])
        raw = encode_binary([value], "BYTES") if datatype == "BYTES" else np.array([value], "<f8").tobytes()
        request.raw_input_contents.append(raw)
    return request.SerializeToString()


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


# -- the gateway --------------------------------------------------------------------------------


def one_variant_policy(work: Path) -> Path:
    import yaml

    doc = yaml.safe_load(BASE_POLICY.read_text())
    doc["variants"] = [v for v in doc["variants"] if v["name"] == "logreg"]
    path = work / "churn.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def start_gateway(work: Path, http_port: int, grpc_port: int, replicas: int) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "GATEWAY_GRPC_PORT": str(grpc_port),
           "GATEWAY_ROUTER_REPLICAS": str(replicas)}
    script = Path(sys.executable).with_name("gateway")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
    log = (work / "serve.log").open("ab")
    proc = subprocess.Popen(
        [*command, "serve", "--policy", str(one_variant_policy(work)), "--port", str(http_port),
         "--state-dir", str(work / "state")],
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


# -- runs and the table -------------------------------------------------------------------------


def run_load(command: list[str]) -> dict:
    """One load process's figures, with the CPU it spent per answered request: the two clients
    differ, and on 2 cores the client's CPU is the server's loss."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["client_cpu_ms_per_request"] = cpu * 1e3 / max(1, result["requests"])
    return result


def rest_run(http_port: int, bodies: Path, args: argparse.Namespace) -> dict:
    return run_load([sys.executable, str(ROOT / "bench" / "_load.py"), f"http://127.0.0.1:{http_port}/v2/models/churn/infer",
                     "--bodies", str(bodies), "--repeat", "--connections", str(args.connections),
                     "--warmup", str(args.warmup), "--duration", str(args.measure)])


def grpc_run(grpc_port: int, body: Path, args: argparse.Namespace) -> dict:
    return run_load([sys.executable, __file__, "--role", "grpc-load", "--target", f"127.0.0.1:{grpc_port}",
                     "--body", str(body), "--connections", str(args.connections),
                     "--warmup", str(args.warmup), "--measure", str(args.measure)])


def table(rounds: list[dict], args: argparse.Namespace) -> str:
    lines = [f"OIP infer at {args.connections} connections, one row, {args.replicas} router replica(s), "
             f"{args.measure:g} s measured after {args.warmup:g} s warm-up, {len(rounds)} alternating rounds",
             "", "| round | first | gRPC req/s | REST req/s | gRPC/REST | gRPC p50 ms | REST p50 ms "
             "| client CPU ms/req gRPC | REST |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for i, r in enumerate(rounds, 1):
        lines.append(f"| {i} | {r['first']} | {r['grpc']['rps']:.0f} | {r['rest']['rps']:.0f} | {r['ratio']:.2f} | "
                     f"{r['grpc']['p50_ms']:.1f} | {r['rest']['p50_ms']:.1f} | "
                     f"{r['grpc']['client_cpu_ms_per_request']:.2f} | {r['rest']['client_cpu_ms_per_request']:.2f} |")
    ratios = [r["ratio"] for r in rounds]
    lines += ["", f"Median gRPC/REST throughput ratio: **{statistics.median(ratios):.2f}x** "
                  f"(range {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} rounds)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--measure", type=float, default=8.0)
    p.add_argument("--replicas", type=int, default=1, help="router replicas (each serves the gRPC port)")
    p.add_argument("--json", type=Path, default=None, help="write every run's figures here")
    p.add_argument("--role", choices=["grpc-load"], help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--body", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "grpc-load":
        result = asyncio.run(grpc_load(args.target, args.body.read_bytes(), args.connections, args.warmup, args.measure))
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as tmp:
        work = Path(tmp)
        (work / "rest.jsonl").write_bytes(rest_body() + b"\n")
        (work / "grpc.bin").write_bytes(grpc_body())
        http_port, grpc_port = free_port(), free_port()
        print(f"starting the gateway (HTTP {http_port}, gRPC {grpc_port}) ...", file=sys.stderr)
        proc = start_gateway(work, http_port, grpc_port, args.replicas)
        rounds = []
        try:
            for i in range(args.rounds):
                order = ["grpc", "rest"] if i % 2 == 0 else ["rest", "grpc"]
                r: dict = {"first": order[0]}
                for kind in order:
                    r[kind] = (grpc_run(grpc_port, work / "grpc.bin", args) if kind == "grpc"
                               else rest_run(http_port, work / "rest.jsonl", args))
                    print(f"round {i + 1} {kind}: {r[kind]['rps']:.0f} req/s, statuses {r[kind]['statuses']}", file=sys.stderr)
                r["ratio"] = r["grpc"]["rps"] / r["rest"]["rps"] if r["rest"]["rps"] else float("nan")
                rounds.append(r)
        finally:
            stop_gateway(proc)
    print(table(rounds, args))
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "connections": args.connections, "replicas": args.replicas}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
