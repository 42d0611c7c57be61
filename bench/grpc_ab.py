"""Router CPU per gRPC request of several gateway builds, in alternating rounds.

Usage::

    python bench/grpc_ab.py NAME=SRC[@VAR=VALUE,...] NAME=SRC ... [--rounds N] [--connections N]
                            [--warmup S] [--measure S] [--kinds grpc,rest] [--cache-dir DIR]

Each NAME is one `gateway serve` (bench/grpc_serving.py's setup: the churn policy's
logistic-regression variant, one router replica) whose PYTHONPATH is SRC (e.g. a worktree of
another commit: `git worktree add /tmp/base COMMIT`, then `base=/tmp/base/src`), with the extra
environment variables given after `@`. All stay up for the whole run; each round loads each in
turn (the order reversed every other round) with grpc_serving.py's load client and records the
CPU its router replica spent per request. On a shared machine wall-clock throughput is noise;
the CPU per request, compared round by round against the first NAME, is the figure to quote.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path

import grpc_serving as g
from _systems import prepare_models


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("systems", nargs="+", help="NAME=SRC[@VAR=VALUE,...]; the first is the reference")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--measure", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--kinds", default="grpc", help="grpc, rest or both (comma-separated)")
    ap.add_argument("--cache-dir", default=os.environ.get("GATEWAY_BENCH_CACHE", "/tmp/gateway-bench-cache"))
    args = ap.parse_args()
    # A plain kill still stops the gateways (their process groups) on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    systems = []
    for spec in args.systems:
        name, _, rest = spec.partition("=")
        src, _, envs = rest.partition("@")
        systems.append((name, src, dict(kv.split("=", 1) for kv in envs.split(",") if kv)))
    kinds = args.kinds.split(",")
    results: dict[str, list[tuple[str, float, float]]] = {name: [] for name, _, _ in systems}
    with tempfile.TemporaryDirectory(prefix="grpc-ab-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        models = prepare_models(work, Path(args.cache_dir))
        (work / "grpc.bin").write_bytes(g.grpc_body())
        (work / "rest.jsonl").write_bytes(g.rest_body() + b"\n")
        running = {}
        saved = dict(os.environ)
        for name, src, env in systems:
            (work / name).mkdir()
            os.environ.update({"PYTHONPATH": f"{src}{os.pathsep}{g.ROOT}", **env})
            http_port, grpc_port = g.free_port(), g.free_port()
            proc = g.start_gateway(work / name, models["one"]["policy"], http_port, grpc_port, 1)
            stack.callback(g.stop_gateway, proc)
            os.environ.clear()
            os.environ.update(saved)
            g.grpc_label(f"127.0.0.1:{grpc_port}", (work / "grpc.bin").read_bytes())
            running[name] = (http_port, grpc_port, g.router_processes(proc.pid))
            print(f"{name} up (gRPC {grpc_port}, HTTP {http_port})", file=sys.stderr, flush=True)
        names = list(running)
        for i in range(args.rounds):
            for name in names if i % 2 == 0 else names[::-1]:
                http_port, grpc_port, routers = running[name]
                for kind in kinds:
                    if kind == "grpc":
                        r = g.grpc_run(f"127.0.0.1:{grpc_port}", work / "grpc.bin", args, {}, routers)
                    else:
                        r = g.rest_run(http_port, work / "rest.jsonl", args, {}, routers)
                    results[name].append((kind, r["server_cpu_ms_per_request"], r["rps"]))
                    print(f"round {i + 1} {name} {kind}: router {r['server_cpu_ms_per_request']:.3f} ms/req, "
                          f"{r['rps']:.0f} req/s, statuses {r['statuses']}", file=sys.stderr, flush=True)
    print(f"| build | kind | router CPU ms/req, median [min, max] | vs {names[0]}, same round | req/s, median |")
    print("| --- | --- | ---: | ---: | ---: |")
    for kind in kinds:
        ref = [cpu for k, cpu, _ in results[names[0]] if k == kind]
        for name in names:
            cpu = [c for k, c, _ in results[name] if k == kind]
            rps = [r for k, _, r in results[name] if k == kind]
            ratio = [b / a for a, b in zip(ref, cpu)]
            print(f"| {name} | {kind} | {statistics.median(cpu):.3f} [{min(cpu):.3f}, {max(cpu):.3f}] | "
                  f"{statistics.median(ratio):.3f} [{min(ratio):.3f}, {max(ratio):.3f}] | {statistics.median(rps):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
