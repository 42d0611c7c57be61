#!/usr/bin/env python
"""What shadowing costs the router's process, without Ray or HTTP: the CPU of the shadow
machinery alone, per live request, which a shared machine blurs far less than throughput.

Usage::

    python bench/shadow_cost.py [--rate 650] [--seconds 6] [--fractions 0.1,1.0] [--json PATH]

A real DataPlane (tests/planes.py: the embedded redis-server, the churn logistic regression live
and XGBoost in shadow, loaded in-process as the Router loads them) records `rate x seconds`
requests with mirroring held off; then the same request ids are offered to its ShadowMirror at
`rate` a second for `seconds` (what DataPlane.predict does after each record), and the queue is
drained. The process's CPU time over that stream, less the same stream offered at a fraction
that mirrors nothing (the sampling check and this loop's own ticks), over the requests, is the
router's cost of shadowing; redis-server's CPU the same way. Every copy must be recorded.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.sim import churn  # noqa: E402
from tests.planes import BASE, Clock, Env, run  # noqa: E402

# Mirrors nothing: the stream's cost without copies.
NONE = 1e-9


def stream(env: Env, redis: psutil.Process, fraction: float, rate: float, seconds: float, tag: str) -> dict:
    rows, _ = churn.make_churn(500, seed=3)
    plane = env.plane(Clock(), variants=[BASE["variants"][0], {**BASE["variants"][1], "role": "shadow"}],
                      shadow={"fraction": fraction}, name=f"cost{tag}")
    name = plane.experiment_names()[0]
    n = int(rate * seconds)

    def cpu() -> tuple[float, float]:
        t = redis.cpu_times()
        return time.process_time(), t.user + t.system

    async def scenario() -> dict:
        await plane.start()
        try:
            plane.shadow._stopped = True  # recorded first, not mirrored yet
            for i in range(n):
                await plane.predict(name, {"instances": [rows[i % len(rows)]]}, f"{tag}-{i}")
            plane.shadow._stopped = False
            rt = plane.runtime(name)
            matrices = [plane.encode(rt, [row]) for row in rows]
            await asyncio.sleep(1.0)  # the runtime's shadows are known after a refresh
            offered, sent = 0, 0
            (c0, r0), t0 = cpu(), time.perf_counter()
            while sent < n:
                due = min(n, int((time.perf_counter() - t0) * rate))
                while sent < due:
                    offered += plane.shadow.offer(rt, f"{tag}-{sent}", matrices[sent % len(rows)], {})
                    sent += 1
                await asyncio.sleep(0.01)
            await plane.shadow.drain()
            c1, r1 = cpu()
            recorded = len(await plane.store.shadow_answers(name, n + 1))
            if recorded != offered:
                raise RuntimeError(f"{offered} copies offered, {recorded} recorded")
            return {"requests": n, "copies": offered, "router_s": c1 - c0, "redis_s": r1 - r0}
        finally:
            await plane.stop()

    return run(scenario())


def whole(env: Env, redis: psutil.Process, fraction: float | None, seconds: float, tag: str) -> dict:
    """16 clients calling DataPlane.predict back to back for `seconds`: the live variant alone
    (`fraction` None) or with XGBoost in shadow at `fraction`, copies drained at the end. The
    process's and redis-server's CPU time over it: everything shadowing adds, the request path's
    sampling check and the shadow's model included."""
    rows, _ = churn.make_churn(500, seed=3)
    variants = [BASE["variants"][0]] + ([] if fraction is None else [{**BASE["variants"][1], "role": "shadow"}])
    plane = env.plane(Clock(), variants=variants, name=f"whole{tag}",
                      **({} if fraction is None else {"shadow": {"fraction": fraction}}))
    name = plane.experiment_names()[0]

    async def scenario() -> dict:
        await plane.start()
        try:
            await asyncio.sleep(1.0)  # the runtime's shadows are known after a refresh
            served = 0
            t_end = time.perf_counter() + seconds

            async def client(k: int) -> None:
                nonlocal served
                i = 0
                while time.perf_counter() < t_end:
                    await plane.predict(name, {"instances": [rows[(k * 31 + i) % len(rows)]]}, f"{tag}-{k}-{i}")
                    i += 1
                    served += 1

            c0, t = time.process_time(), redis.cpu_times()
            r0 = t.user + t.system
            await asyncio.gather(*(client(k) for k in range(16)))
            await plane.shadow.drain()
            t = redis.cpu_times()
            return {"requests": served, "router_s": time.process_time() - c0, "redis_s": t.user + t.system - r0}
        finally:
            await plane.stop()

    return run(scenario())


def main_whole(args: argparse.Namespace) -> int:
    """Alternating rounds (none, then each fraction; the order reversed every other round): the
    CPU time (this process and redis-server) per request of each, as a ratio to the round's none."""
    import statistics

    env = Env(Path(tempfile.mkdtemp(prefix="gw-shadow-whole-")))
    fractions = [float(f) for f in args.fractions.split(",")]
    ratios: dict[str, list[float]] = {str(f): [] for f in fractions}
    try:
        redis = next(c for c in psutil.Process().children(recursive=True) if "redis" in c.name())
        configs: list[float | None] = [None, *fractions]
        for r in range(args.rounds):
            cost = {}
            for f in (configs if r % 2 == 0 else configs[::-1]):
                s = whole(env, redis, f, args.seconds, f"{r}-{f}")
                cost[f] = (s["router_s"] + s["redis_s"]) * 1e3 / s["requests"]
            for f in fractions:
                ratios[str(f)].append(cost[f] / cost[None])
            print(f"round {r}: " + ", ".join(f"{k} {v:.4f} ms" for k, v in cost.items()), flush=True)
    finally:
        env.redis.stop()
        shutil.rmtree(env.tmp, ignore_errors=True)  # the models trained for the run, Redis's files
    out = {f: {"median_ratio": round(statistics.median(v), 4), "min_ratio": round(min(v), 4), "max_ratio": round(max(v), 4)}
           for f, v in ratios.items()}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=650.0, help="live requests a second")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--fractions", default="0.1,1.0")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--whole", action="store_true", help="whole requests, shadow vs a policy without it (see main_whole)")
    p.add_argument("--rounds", type=int, default=5, help="--whole: alternating rounds")
    args = p.parse_args()
    if args.whole:
        return main_whole(args)
    env = Env(Path(tempfile.mkdtemp(prefix="gw-shadow-cost-")))
    try:
        redis = next(c for c in psutil.Process().children(recursive=True) if "redis" in c.name())
        base = stream(env, redis, NONE, args.rate, args.seconds, "none")
        out = {}
        for i, fraction in enumerate(float(f) for f in args.fractions.split(",")):
            s = stream(env, redis, fraction, args.rate, args.seconds, f"f{i}")
            out[str(fraction)] = {
                "copies": s["copies"],
                "router_us_per_request": round((s["router_s"] - base["router_s"]) * 1e6 / s["requests"], 1),
                "redis_us_per_request": round((s["redis_s"] - base["redis_s"]) * 1e6 / s["requests"], 1),
            }
            print(f"fraction {fraction}: {json.dumps(out[str(fraction)])}", flush=True)
    finally:
        env.redis.stop()
        shutil.rmtree(env.tmp, ignore_errors=True)  # the models trained for the run, Redis's files
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
