"""bench/learning.py --world unit-signal: a world where a per-unit aggregate carries signal the
request's own features lack, run through the gateway's real parts in one process: a DataPlane
on the embedded redis-server (the real Lua scripts keep, log and update the aggregates), the
real reward path (labels sent after each prediction), the retrainer's own training step
(LabelledData.from_decisions on the decision log, retrain_against_live with a feature-set
candidate), and the admitted challenger added at run time (add_variant.lua) and served beside
the champion by the bandit.

The world: churn rows (gateway.sim.churn, concept 0). Most units follow the churn rule; a share
of "settled" units (`--settled`) answers its own way whatever their rows say: each has a fixed
outcome, given with 90% probability. Nothing in a row says which units are settled or how; a
unit's past labels (aggregate `churn_rate`, with `labels`) do.

Figures: the retrainer's holdout accuracy of the admitted challenger (with the aggregates) and
of the champion (without), and after the challenger is added, the system's accuracy on the
served rows against the static champion's on the same rows. Serving: the in-process DataPlane's
p50 latency at 1 caller and throughput at 16 with aggregates on and off (same model, same
requests), as ratios (on / off). In process, no HTTP: the ratio bounds the cost from above,
since a real request's HTTP and Ray hops add the same time to both.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gateway.dataplane import DataPlane
from gateway.dataplane.tokens import RewardTokens
from gateway.learning import aggregates, artifacts
from gateway.learning.registry import ModelRegistry
from gateway.learning.retrain import LabelledData, retrain_against_live
from gateway.learning.views import FeatureView
from gateway.policy import Policy, parse_policy
from gateway.serving.challengers import load_registered
from gateway.serving.variant import LoadedVariant
from gateway.sim.churn import FEATURES, make_churn
from gateway.store.embedded import EmbeddedRedis
from gateway.store.experiments import ExperimentStore

BASE = [f["name"] for f in FEATURES]
AGGREGATES = ["visits", "labels", "churn_rate"]
LABEL_DELAY = 20  # requests between a prediction and its label
GOAL_CHALLENGER = 0.05  # the challenger with aggregates beats the champion without by this
GOAL_SYSTEM = 0.10  # the system after the change beats the static champion by this
GOAL_THROUGHPUT = 0.9  # throughput with aggregates on, as a share of off


def policy_for(name: str, with_aggregates: bool = True) -> Policy:
    return parse_policy({
        "experiment": name,
        "features": FEATURES,
        **({"aggregates": {"window_s": 86_400, "features": [
            {"name": "visits", "kind": "count"}, {"name": "labels", "kind": "labels"},
            {"name": "churn_rate", "kind": "mean_label"}]}} if with_aggregates else {}),
        "variants": [{"name": "champion", "model": "champion.ubj", "features": BASE}],
        "promotion": {"min_samples": 300},
        "guardrails": {"max_error_rate": 0.5, "max_p99_latency_ms": 60_000},
        **({"retrain": {"enabled": True, "max_p_value": 0.05, "window_labels": 100_000, "candidates": [
            "xgboost", {"algorithm": "xgboost", "features": [*BASE, *AGGREGATES]}]}} if with_aggregates else {}),
    })


class World:
    """Rows, units and labels, seeded."""

    def __init__(self, seed: int, n: int, units: int, settled: float):
        rng = np.random.default_rng([seed, 20])
        rows, rule = make_churn(n, seed=int(rng.integers(1 << 30)))
        self.rows = [dict(zip(BASE, r)) for r in rows]
        self.unit = rng.integers(0, units, n)
        is_settled = rng.random(units) < settled
        outcome = rng.integers(0, 2, units)
        keep = rng.random(n) < 0.9
        own = np.where(keep, outcome[self.unit], 1 - outcome[self.unit])
        self.y = np.where(is_settled[self.unit], own, rule).astype(int)
        self.settled = is_settled[self.unit]


def champion_model(policy: Policy, seed: int) -> Any:
    """Trained on the rows alone (as a bootstrap would: no traffic yet, no aggregates)."""
    world = World(seed + 1000, 3000, 150, 0.6)
    return artifacts.train("xgboost", FeatureView(policy).matrix(BASE, world.rows), world.y, seed=seed)


async def serve(plane: DataPlane, name: str, world: World, start: int, stop: int, clock) -> list[dict]:
    """Requests start..stop, each labelled LABEL_DELAY requests later (the rest at the end)."""
    pending: list[tuple[str, str, int]] = []
    out = []
    for i in range(start, stop):
        clock.t += 0.01
        answer = await plane.predict(name, {"instances": [world.rows[i]], "unit_id": f"u{world.unit[i]}"}, f"q{i}")
        out.append(answer)
        pending.append((answer["request_id"], answer["reward_token"], int(world.y[i])))
        if len(pending) > LABEL_DELAY:
            rid, token, label = pending.pop(0)
            await plane.rewards({"request_id": rid, "label": label, "token": token})
    for rid, token, label in pending:
        await plane.rewards({"request_id": rid, "label": label, "token": token})
    return out


class Clock:
    def __init__(self):
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


async def learning_run(seed: int, before: int, after: int, units: int, settled: float, tmp: Path,
                       redis_url: str) -> dict[str, Any]:
    name = f"unit-signal-{seed}"
    policy = policy_for(name)
    champ = champion_model(policy, seed)
    path = tmp / f"champion-{seed}.ubj"
    sha = artifacts.save_model(champ, path)
    ref = {"experiment": name, "variant": "champion", "path": str(path), "sha256": sha, "features": BASE}
    registry = ModelRegistry(tmp / "registry")
    clock = Clock()
    plane = DataPlane({name: policy}, ExperimentStore.from_url(redis_url), {name: {"champion": LoadedVariant(ref)}},
                      RewardTokens("k" * 32), clock=clock, rng=np.random.default_rng(seed),
                      challenger_client=lambda e, v, s: load_registered(registry, e, v, s))
    world = World(seed, before + after, units, settled)
    await plane.start()
    try:
        await serve(plane, name, world, 0, before, clock)
        # The retrainer's step, as Retrainer._retrain runs it.
        decisions = await plane.store.recent_decisions(name, 10 * before)
        feedback = await plane.store.recent_feedback(name, 10 * before)
        data = LabelledData.from_decisions(decisions, feedback, keep=lambda agg: aggregates.matches(policy, agg))
        out = await asyncio.to_thread(retrain_against_live, policy, data, [ref], registry, seed)
        result = out["result"]
        if not out["admitted"]:
            return {"seed": seed, "admitted": False, "reason": result["reason"]}
        entry = out["entry"]
        variant = {k: entry[k] for k in ("name", "algorithm", "path", "sha256")} | {"added_at": clock.t}
        if entry["feature_set"]:
            variant["features"] = entry["features"]
        await plane.store.add_variant(name, entry["name"], variant, {"action": "challenger_added", "variant": entry["name"],
                                                                     "features": entry["features"]}, clock.t)
        await plane.refresh()
        served = await serve(plane, name, world, before, before + after, clock)
    finally:
        await plane.stop()
    post = slice(before, before + after)
    system = np.array([a["predictions"][0] for a in served]) == world.y[post]
    static = artifacts.predict(champ, FeatureView(policy).matrix(BASE, world.rows[post]))[0] == world.y[post]
    won = next(c for c in result["candidates"].values() if c.get("features") == entry["features"]) \
        if entry["feature_set"] else result["candidates"][entry["algorithm"]]
    return {
        "seed": seed, "admitted": True, "challenger": entry["name"], "features": entry["features"],
        "challenger_holdout": won["metrics"]["accuracy"], "champion_holdout": result["champion"]["accuracy"],
        "plain_xgboost_holdout": result["candidates"]["xgboost"]["metrics"]["accuracy"],
        "system_post": float(system.mean()), "static_post": float(static.mean()),
        "challenger_share_post": float(np.mean([a["variant"] == entry["name"] for a in served])),
        "rows": len(data),
    }


async def serving_run(redis_url: str, tmp: Path, requests: int, callers: int, rounds: int = 5) -> dict[str, Any]:
    """p50 latency (1 caller) and throughput (`callers` at once), aggregates on and off, in
    `rounds` interleaved rounds (off, on, off, on, ...): the machine is shared, so each round's
    ratio compares measurements taken seconds apart, and the median ratio is reported."""
    world = World(7, requests, 500, 0.6)
    planes: dict[str, tuple[DataPlane, str]] = {}
    for label, with_agg in (("off", False), ("on", True)):
        name = f"serving-{label}"
        policy = policy_for(name, with_agg)
        path = tmp / f"serving-{label}.ubj"
        sha = artifacts.save_model(champion_model(policy, 0), path)
        ref = {"experiment": name, "variant": "champion", "path": str(path), "sha256": sha}
        planes[label] = (DataPlane({name: policy}, ExperimentStore.from_url(redis_url),
                                   {name: {"champion": LoadedVariant(ref)}}, RewardTokens("k" * 32)), name)
    for plane, _ in planes.values():
        await plane.start()
    rows: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    try:
        for r in range(rounds + 1):  # round 0 warms up
            for label, (plane, name) in planes.items():
                def body(i: int) -> dict:
                    return {"instances": [world.rows[i]], "unit_id": f"u{world.unit[i]}"}

                lat = []
                for i in range(requests):
                    t = time.perf_counter()
                    await plane.predict(name, body(i), f"l{r}-{i}")
                    lat.append(time.perf_counter() - t)
                queue = iter(range(requests))

                async def caller():
                    for i in queue:
                        await plane.predict(name, body(i), f"t{r}-{i}")

                t = time.perf_counter()
                await asyncio.gather(*(caller() for _ in range(callers)))
                if r:
                    rows[label].append({"p50_ms": 1000 * statistics.median(lat),
                                        "throughput": requests / (time.perf_counter() - t)})
    finally:
        for plane, _ in planes.values():
            await plane.stop()
    out: dict[str, Any] = {k: {m: statistics.median(x[m] for x in v) for m in ("p50_ms", "throughput")}
                           for k, v in rows.items()}
    out["p50_ratio"] = statistics.median(on["p50_ms"] / off["p50_ms"] for on, off in zip(rows["on"], rows["off"]))
    out["throughput_ratio"] = statistics.median(on["throughput"] / off["throughput"]
                                                for on, off in zip(rows["on"], rows["off"]))
    out["rounds"] = rounds
    return out


def run(seeds: int, before: int, after: int, units: int, settled: float, serving_requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        redis = EmbeddedRedis(tmp / "redis").start()
        try:
            runs = [asyncio.run(learning_run(s, before, after, units, settled, tmp, redis.url)) for s in range(seeds)]
            serving = asyncio.run(serving_run(redis.url, tmp, serving_requests, 16)) if serving_requests else None
        finally:
            redis.stop()
    done = [r for r in runs if r["admitted"]]
    summary: dict[str, Any] = {"seeds": runs, "serving": serving, "admitted": f"{len(done)}/{len(runs)}"}
    if done:
        gain = [r["challenger_holdout"] - r["champion_holdout"] for r in done]
        system = [r["system_post"] - r["static_post"] for r in done]
        summary |= {
            "challenger_gain": {"mean": float(np.mean(gain)), "min": float(np.min(gain))},
            "system_gain": {"mean": float(np.mean(system)), "min": float(np.min(system))},
            "goals": {"challenger_gain>=0.05": bool(min(gain) >= GOAL_CHALLENGER and len(done) == len(runs)),
                      "system_gain>=0.10": bool(min(system) >= GOAL_SYSTEM and len(done) == len(runs))},
        }
    if serving:
        summary.setdefault("goals", {})["throughput_ratio>=0.9"] = bool(serving["throughput_ratio"] >= GOAL_THROUGHPUT)
    return summary


def render(summary: dict[str, Any], cmd: str, seconds: float) -> str:
    lines = ["## Per-unit aggregates carry the signal (`bench/learning.py --world unit-signal`)", "",
             f"Command: `{cmd}` ({seconds:.0f} s). Admitted: {summary['admitted']}.", "",
             "| seed | challenger (features) | challenger holdout | champion holdout | plain xgboost holdout "
             "| system post | static post | challenger share post |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["seeds"]:
        if not r["admitted"]:
            lines.append(f"| {r['seed']} | not admitted: {r['reason']} | | | | | | |")
            continue
        extra = [f for f in r["features"] if f not in BASE]
        lines.append(f"| {r['seed']} | {r['challenger']} (+{','.join(extra) or 'none'}) | {r['challenger_holdout']:.3f} "
                     f"| {r['champion_holdout']:.3f} | {r['plain_xgboost_holdout']:.3f} | {r['system_post']:.3f} "
                     f"| {r['static_post']:.3f} | {r['challenger_share_post']:.2f} |")
    s = summary.get("serving")
    if s:
        lines += ["", f"Serving, in-process DataPlane with the embedded redis-server (no HTTP); medians of "
                  f"{s['rounds']} interleaved rounds, ratios the median of the rounds' ratios:", "",
                  "| aggregates | p50 at 1 caller (ms) | throughput at 16 (req/s) |", "|---|---|---|",
                  f"| off | {s['off']['p50_ms']:.2f} | {s['off']['throughput']:.0f} |",
                  f"| on | {s['on']['p50_ms']:.2f} | {s['on']['throughput']:.0f} |",
                  f"| on / off | {s['p50_ratio']:.2f} | {s['throughput_ratio']:.2f} |"]
    lines += ["", "Goals: " + ", ".join(f"{k}: {'met' if v else 'not met'}" for k, v in summary.get("goals", {}).items())]
    return "\n".join(lines) + "\n"


def main(args) -> int:
    started = time.perf_counter()
    summary = run(args.seeds, args.unit_before, args.unit_after, args.units, args.settled, args.serving_requests)
    cmd = (f"python bench/learning.py --world unit-signal --seeds {args.seeds} --unit-before {args.unit_before} "
           f"--unit-after {args.unit_after} --units {args.units} --settled {args.settled} "
           f"--serving-requests {args.serving_requests}")
    print(render(summary, cmd, time.perf_counter() - started))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0
