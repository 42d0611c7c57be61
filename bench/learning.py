#!/usr/bin/env python
"""Continuous-learning benchmark: accuracy through an abrupt concept drift.

Usage::

    python bench/learning.py [--json PATH] [--seeds N] [--jobs J] [--no-readme]

An offline, seeded simulation of the gateway's learning loop on the churn simulator (no Ray
Serve, no Redis). Every step runs the gateway's own code:

- data: ``gateway.sim.churn.make_churn``: concept 0 until ``--drift-at``, concept 1 after;
- initial models: ``gateway.learning.bootstrap.resolve_artifacts`` trains the default policy's
  logistic regression and XGBoost on its bootstrap rows of concept 0 into a temporary state
  directory, loaded back with ``artifacts.load_model`` (sha256 checked) like a variant replica;
- routing: ``gateway.decisions.allocation.allocate`` and ``promotion_decision`` on ``ArmCounts`` kept in
  plain Python (the Redis counters), recomputed every ``REFRESH_ROWS`` rows (the router
  refreshes every 100 ms; at ~100 req/s that is 10 requests); reward = 1 when the served
  prediction equals the label (the policy's ``from_label: match``), delivered 20-200 rows later
  (SimulatedUsers' 0.2-2 s feedback delay at 100 req/s);
- retraining: every ``retrain.every_labels`` labels, as Retrainer._retrain does: the decision
  log and feedback joined by ``LabelledData.from_decisions``, newest ``window_labels`` rows,
  ``retrain_against_live`` (the retrainer task: the best live model on the holdout is the one to beat; time-ordered
  holdout, margin, McNemar) registering into a temporary ``ModelRegistry``; an admitted
  challenger is loaded from the registry, added with a fresh prior (no counters) and reopens
  exploration like ``add_variant.lua``; arms beyond ``max_variants`` are retired by
  ``allocation.arms_to_retire``, the decision the retrainer makes.

Compared on the same stream: (a) this system, (b) the static champion (the better bootstrap
model on the pre-drift rows, never retrained), (c) an oracle: XGBoost retrained on the previous
``window_labels`` true labels every ``every_labels`` rows and always served.

Simplifications (said so in the README too): a retraining is instantaneous (the real one runs
in a Ray task while traffic goes on); no unit ids (the router then draws u at random); no
guardrails or drift (PSI) trigger, only the label-count trigger; no per-replica discounted
state (a discounted_thompson policy gets allocate()'s rebuild from the cumulative counters).

Besides accuracy, it records per window the share of the system's rows routed in burn-in
(uniform) mode and served by models trained before the drift: they explain a slow recovery.
`--policy` runs the same stream under another policy file (a what-if on its knobs).
"""
from __future__ import annotations

import os

# One thread per process: the machine has 2 cores and seeds run in parallel processes.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import datetime as _dt
import heapq
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _report import cpu_seconds, machine, write_readme  # noqa: E402 (bench/ is on sys.path when run)

from gateway.decisions import allocation
from gateway.learning.bootstrap import resolve_artifacts
from gateway.learning import artifacts
from gateway.learning.features import FeatureEncoder
from gateway.learning.registry import ModelRegistry
from gateway.learning.retrain import MIN_ROWS, LabelledData, live_refs, retrain_against_live
from gateway.policy import Policy, load_policy_file

# The retrainer's champion choice and minimum window live in the Ray Serve module (importing
# it loads Ray, ~5 s, but starts nothing).
from gateway.sim.churn import make_churn
from gateway.store.experiments import ArmCounts, Snapshot

START, END = "<!-- learning:start -->", "<!-- learning:end -->"
POLICY_FILE = ROOT / "policies" / "default.yaml"
REFRESH_ROWS = 10
FEEDBACK_DELAY_ROWS = (20, 200)
T0 = 1_800_000_000.0  # serving time of row 0 (unix s); rows are 10 ms apart (100 req/s)
DT = 0.01
WINDOW = 500  # rows per windowed-accuracy point
PRE_ROWS = 2000  # pre-drift accuracy: the system's last this many rows before the drift
RECOVER_SHARE = 0.90
RECOVER_CYCLES = 3
BEAT_STATIC = 0.15


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the stream


@dataclass
class Stream:
    rows: list[list]
    y: np.ndarray
    X: np.ndarray  # encoded once; every model predicts from the same matrix the router builds
    drift_at: int


def make_stream(policy: Policy, seed: int, n: int, drift_at: int) -> Stream:
    # Seeds far from the bootstrap's (7 + seed), so the stream never repeats training rows.
    s_pre, s_post = (int(x) for x in np.random.SeedSequence([seed, 8]).generate_state(2))
    rows0, y0 = make_churn(drift_at, s_pre, concept=0)
    rows1, y1 = make_churn(n - drift_at, s_post, concept=1)
    rows = rows0 + rows1
    return Stream(rows, np.concatenate([y0, y1]), FeatureEncoder(policy.features).encode(rows), drift_at)


def bootstrap_models(policy: Policy, seed: int, workdir: Path) -> tuple[Policy, dict[str, dict], dict[str, Any]]:
    """The policy's initial variants, trained exactly as on a first start (bootstrap seed
    policy.bootstrap.seed + seed: seed 0 gives the gateway's default models)."""
    boot = policy.bootstrap.model_copy(update={"seed": policy.bootstrap.seed + seed})
    p = policy.model_copy(update={"bootstrap": boot})
    refs = resolve_artifacts(p, workdir / "policy.yaml", workdir / "state")
    out = {name: {"experiment": r.experiment, "variant": name, "path": r.path, "sha256": r.sha256} for name, r in refs.items()}
    models = {name: artifacts.load_model(r["path"], expected_sha256=r["sha256"]) for name, r in out.items()}
    return p, out, models


def predictions(model: Any, X: np.ndarray) -> np.ndarray:
    # Vectorised over the whole stream once; the simulation only reads rows served after the
    # model went live, so this is the same as predicting each request as it comes.
    labels, _ = artifacts.predict(model, X)
    return labels


# --------------------------------------------------------------------------- the system


@dataclass
class System:
    """The gateway's state for one experiment (Redis hashes as dicts) and its learning loop."""

    base: Policy
    refs: dict[str, dict]  # variant -> artifact ref (path, sha256), the policy's and the added
    stream: Stream
    registry_root: Path
    rng: np.random.Generator
    arms: dict[str, ArmCounts] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    dynamic: dict[str, dict] = field(default_factory=dict)
    preds: dict[str, np.ndarray] = field(default_factory=dict)
    decisions: list[dict] = field(default_factory=list)  # the decision log
    feedback: dict[str, dict] = field(default_factory=dict)  # request id -> feedback, arrival order
    labels_since_retrain: int = 0
    events: list[dict] = field(default_factory=list)
    retrain_rows: list[int] = field(default_factory=list)
    added_at_row: dict[str, int] = field(default_factory=dict)  # challenger -> row it went live

    @property
    def policy(self) -> Policy:
        return allocation.effective_policy(self.base, self.dynamic)

    def now(self, i: int) -> float:
        return T0 + i * DT

    # -- the router's refresh (DataPlane._refresh) ------------------------------------------

    def refresh(self, i: int) -> allocation.Allocation:
        if self.base.retrain.enabled and self.labels_since_retrain >= self.base.retrain.every_labels:
            self.labels_since_retrain = 0  # claim_retrain.lua resets the counter
            self.retrain(i)
        policy = self.policy
        decision = allocation.promotion_decision(policy, self.arms, self.meta, self.now(i))
        if decision is not None and decision.outcome == "promote":
            self._transition("promoted", decision.variant)
            self.events.append({"row": i, "action": "promote", "variant": decision.variant})
        return allocation.allocate(policy, self.arms, self.meta)

    def _transition(self, status: str, champion: str) -> None:
        # transition.lua: the old champion becomes previous_champion.
        old = self.meta.get("champion")
        self.meta["status"] = status
        if champion != old:
            self.meta["champion"] = champion
            if old:
                self.meta["previous_champion"] = old

    # -- the retrainer (Retrainer._retrain) --------------------------------------------------

    def retrain(self, i: int) -> None:
        now = self.now(i)
        self.retrain_rows.append(i)
        window = self.base.retrain.window_labels
        decisions = self.decisions[-window * 4:]
        fb_ids = list(self.feedback)[-window * 4:]
        data = LabelledData.from_decisions(decisions, {rid: self.feedback[rid] for rid in fb_ids})
        if len(data) > window:
            data = data.take(np.argsort(data.t, kind="stable")[-window:])
        if len(data) < MIN_ROWS:
            self.events.append({"row": i, "action": "retrain", "outcome": "skipped", "rows": len(data)})
            return
        policy = self.policy
        snap = Snapshot(dict(self.arms), dict(self.meta), dict(self.dynamic))
        # Exactly the retrainer task's work: the best live model on the holdout is the one to beat.
        out = retrain_against_live(
            self.base, data, live_refs(policy, snap.meta, self.refs), ModelRegistry(self.registry_root), int(now),
            list(self.refs),
        )
        champion = self.refs[out["compared_against"]]
        res = out["result"]
        scored = [c for c in res.get("candidates", {}).values() if c.get("metrics")]
        best = max(scored, key=lambda c: c["metrics"]["accuracy"], default=None)
        event = {
            "row": i, "action": "retrain", "rows": len(data), "champion": champion["variant"],
            "post_drift_rows": int(np.sum(data.t >= self.now(self.stream.drift_at))),
            "champion_holdout_accuracy": res["champion"]["accuracy"] if res.get("champion") else None,
            "best_candidate_holdout_accuracy": best["metrics"]["accuracy"] if best else None,
            "outcome": "admitted" if out["admitted"] else "rejected",
        }
        self.events.append(event)
        if not out["admitted"]:
            return
        entry = out["entry"]
        name = entry["name"]
        event["variant"] = name
        # A challenger replica loads the registered artifact, sha256 checked.
        model = artifacts.load_model(entry["path"], expected_sha256=entry["sha256"])
        self.preds[name] = predictions(model, self.stream.X)
        self.added_at_row[name] = i
        self.refs[name] = {"experiment": self.base.experiment, "variant": name, "path": entry["path"], "sha256": entry["sha256"]}
        self.dynamic[name] = {"name": name, "path": entry["path"], "sha256": entry["sha256"], "added_at": now,
                              "parent": champion["variant"], "window": data.window()}
        # add_variant.lua: a fresh prior (no counters yet) and exploration reopens; the champion
        # keeps its title until the rule promotes again.
        if self.meta.get("status", "exploring") == "promoted":
            self.meta["status"] = "exploring"
        event["retired"] = self._retire_extra()

    def _retire_extra(self) -> list[str]:
        """As the retrainer does: the pure decision, then the meta it writes."""
        gone = allocation.arms_to_retire(self.policy, self.arms, self.meta, self.base.retrain.max_variants)
        self.meta["retired"] = json.dumps(sorted(allocation.retired(self.meta) | set(gone)))
        return gone

    # -- traffic --------------------------------------------------------------------------

    def _reward(self, variant: str, reward: float) -> None:
        # reward.lua: n, s, ss per arm.
        c = self.arms.get(variant, ArmCounts())
        self.arms[variant] = ArmCounts(c.rewards + 1, c.reward_sum + reward, c.reward_sq_sum + reward * reward, c.requests)

    def run(self, models: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Serve the whole stream: whether each served prediction was right, whether the row
        was routed in burn-in (uniform) mode, and whether it went to a model trained before the
        drift."""
        st = self.stream
        n = len(st.y)
        self.meta.update({"status": "exploring", "started_at": repr(self.now(0))})
        for name, m in models.items():
            self.preds[name] = predictions(m, st.X)
        correct = np.zeros(n, dtype=bool)
        burn_in = np.zeros(n, dtype=bool)
        stale = np.zeros(n, dtype=bool)
        due: list[tuple[int, int, str, int]] = []  # (arrival row, served row, variant, prediction)
        alloc = None
        lo, hi = FEEDBACK_DELAY_ROWS
        for i in range(n):
            while due and due[0][0] <= i:
                _, j, variant, pred = heapq.heappop(due)
                label = int(st.y[j])
                self._reward(variant, float(pred == label))  # from_label: match
                self.feedback[str(j)] = {"label": label, "reward": float(pred == label)}
                self.labels_since_retrain += 1
            if alloc is None or i % REFRESH_ROWS == 0:
                alloc = self.refresh(i)
            variant, _ = alloc.pick(float(self.rng.random()))
            c = self.arms.get(variant, ArmCounts())
            self.arms[variant] = ArmCounts(c.rewards, c.reward_sum, c.reward_sq_sum, c.requests + 1)
            pred = int(self.preds[variant][i])
            correct[i] = pred == st.y[i]
            burn_in[i] = alloc.mode == "burn_in"
            stale[i] = self.added_at_row.get(variant, -1) < st.drift_at
            self.decisions.append({"rid": str(i), "t": self.now(i), "x": [st.rows[i]], "pred": [pred]})
            heapq.heappush(due, (i + int(self.rng.integers(lo, hi + 1)), i, variant, pred))
        return correct, burn_in, stale


# --------------------------------------------------------------------------- baselines


def oracle_correct(policy: Policy, stream: Stream, first_model: Any, seed: int) -> tuple[np.ndarray, list[int]]:
    """XGBoost retrained on the previous window_labels true labels every every_labels rows."""
    every, window = policy.retrain.every_labels, policy.retrain.window_labels
    n = len(stream.y)
    correct = np.zeros(n, dtype=bool)
    model, start, cycles = first_model, 0, []
    for stop in [*range(every, n, every), n]:
        labels, _ = artifacts.predict(model, stream.X[start:stop])
        correct[start:stop] = labels == stream.y[start:stop]
        if stop < n:
            lo = max(0, stop - window)
            model = artifacts.train("xgboost", stream.X[lo:stop], stream.y[lo:stop], seed=seed)
            cycles.append(stop)
        start = stop
    return correct, cycles


# --------------------------------------------------------------------------- one seed


def windowed(correct: np.ndarray) -> list[float]:
    return [float(correct[s:s + WINDOW].mean()) for s in range(0, correct.size, WINDOW)]


def recovery(win: list[float], drift_at: int, retrains: list[int], pre: float) -> tuple[int | None, int | None]:
    """(row where the first post-drift window reaches RECOVER_SHARE of `pre`, retrain cycles
    after the drift that ran before that window began)."""
    for k, acc in enumerate(win):
        start = k * WINDOW
        if start >= drift_at and acc >= RECOVER_SHARE * pre:
            return start, sum(1 for r in retrains if drift_at <= r <= start)
    return None, None


def run_seed(seed: int, rows: int, drift_at: int, policy_file: Path = POLICY_FILE) -> dict[str, Any]:
    t0 = time.perf_counter()
    base = load_policy_file(policy_file)
    work = Path(tempfile.mkdtemp(prefix=f"bench-learning-{seed}-"))
    try:
        policy, refs, models = bootstrap_models(base, seed, work)
        stream = make_stream(policy, seed, rows, drift_at)
        system = System(policy, dict(refs), stream, work / "registry", np.random.default_rng([seed, 1]))
        sys_ok, burn_in, stale = system.run(models)
        # The static champion: whichever bootstrap model is more accurate before the drift.
        pre_acc = {v: float((predictions(m, stream.X[:drift_at]) == stream.y[:drift_at]).mean()) for v, m in models.items()}
        static_name = max(pre_acc, key=pre_acc.get)
        static_ok = predictions(models[static_name], stream.X) == stream.y
        # The oracle starts from the bootstrap XGBoost, then retrains its own.
        first = next(v.name for v in policy.variants if v.train == "xgboost")
        oracle_ok, _ = oracle_correct(policy, stream, models[first], seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    post = slice(drift_at, rows)
    win = {"system": windowed(sys_ok), "static": windowed(static_ok), "oracle": windowed(oracle_ok)}
    pre = float(sys_ok[drift_at - PRE_ROWS:drift_at].mean())
    rec_row, cycles = recovery(win["system"], drift_at, system.retrain_rows, pre)
    admitted = [e for e in system.events if e.get("outcome") == "admitted"]
    return {
        "seed": seed,
        "seconds": time.perf_counter() - t0,
        "static_variant": static_name,
        "pre_drift_accuracy": pre,
        "pre_drift_accuracy_all_rows": float(sys_ok[:drift_at].mean()),
        "recovery_row": rec_row,
        "cycles_to_recover": cycles,
        "recovered_accuracy": None if rec_row is None else float(sys_ok[rec_row:].mean()),
        "system_post_drift_accuracy": float(sys_ok[post].mean()),
        "post_drift_burn_in_share": float(burn_in[post].mean()),
        "post_drift_pre_drift_model_share": float(stale[post].mean()),
        "final_accuracy": float(sys_ok[-PRE_ROWS:].mean()),
        "static_post_drift_accuracy": float(static_ok[post].mean()),
        "oracle_post_drift_accuracy": float(oracle_ok[post].mean()),
        "static_pre_drift_accuracy": float(static_ok[drift_at - PRE_ROWS:drift_at].mean()),
        "oracle_pre_drift_accuracy": float(oracle_ok[drift_at - PRE_ROWS:drift_at].mean()),
        "cumulative_accuracy": {
            "system": float(sys_ok.mean()), "static": float(static_ok.mean()), "oracle": float(oracle_ok.mean())
        },
        "windowed_accuracy": win,
        "windowed_routing": {"burn_in_share": windowed(burn_in), "pre_drift_model_share": windowed(stale)},
        "retrain_rows": system.retrain_rows,
        "challengers_added": [e["variant"] for e in admitted],
        "challengers_added_pre_drift": sum(1 for e in admitted if e["row"] < drift_at),
        "events": system.events,
        "final_status": system.meta.get("status"),
        "final_champion": system.meta.get("champion"),
    }


# --------------------------------------------------------------------------- reporting


def policy_label(path: Path) -> str:
    try:
        return f"`{path.resolve().relative_to(ROOT)}`"
    except ValueError:
        return f"`{path}`"


def mean(xs: list[float]) -> float:
    return float(np.mean(xs))


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def summarise(results: list[dict], rows: int, drift_at: int) -> dict[str, Any]:
    def m(key: str) -> float:
        return mean([r[key] for r in results])

    cycles = [r["cycles_to_recover"] for r in results]
    recovered = [r["recovered_accuracy"] for r in results if r["recovered_accuracy"] is not None]
    met_recover = [c is not None and c <= RECOVER_CYCLES for c in cycles]
    margins = [r["system_post_drift_accuracy"] - r["static_post_drift_accuracy"] for r in results]
    finite = sorted(c for c in cycles if c is not None)
    return {
        "seeds": [r["seed"] for r in results],
        "rows": rows,
        "drift_at": drift_at,
        "pre_drift_accuracy": m("pre_drift_accuracy"),
        # Mean over seeds of the accuracy from the recovery window on (seeds that recovered).
        "recovered_accuracy": mean(recovered) if recovered else None,
        # Median over seeds; None when most seeds never recover.
        "cycles_to_recover": float(np.median(finite)) if len(finite) * 2 > len(cycles) else None,
        "cycles_to_recover_per_seed": cycles,
        "system_post_drift_accuracy": m("system_post_drift_accuracy"),
        "final_accuracy": m("final_accuracy"),
        "static_post_drift_accuracy": m("static_post_drift_accuracy"),
        "oracle_post_drift_accuracy": m("oracle_post_drift_accuracy"),
        "cumulative_accuracy": {k: mean([r["cumulative_accuracy"][k] for r in results]) for k in ("system", "static", "oracle")},
        "windowed_accuracy": {
            k: [mean(col) for col in zip(*(r["windowed_accuracy"][k] for r in results))] for k in ("system", "static", "oracle")
        },
        # Per window, the share of the system's rows routed uniformly (burn-in) and served by a
        # model trained before the drift.
        "windowed_routing": {
            k: [mean(col) for col in zip(*(r["windowed_routing"][k] for r in results))]
            for k in ("burn_in_share", "pre_drift_model_share")
        },
        "post_drift_burn_in_share": m("post_drift_burn_in_share"),
        "post_drift_pre_drift_model_share": m("post_drift_pre_drift_model_share"),
        "window_rows": WINDOW,
        "goals": {
            "recover_90pct_within_3_cycles": {"met": all(met_recover), "seeds_met": sum(met_recover), "seeds": len(results)},
            "beat_static_post_drift_by_15_points": {
                "met": min(margins) >= BEAT_STATIC, "margin_mean": mean(margins), "margin_min": min(margins),
                "seeds_met": sum(x >= BEAT_STATIC for x in margins),
            },
        },
    }


def render(
    summary: dict, results: list[dict], policy: Policy, policy_file: Path, cmd: str, elapsed: float, load_start: float
) -> str:
    s = summary
    rt = policy.retrain
    retrain_rows = results[0]["retrain_rows"]
    g = s["goals"]
    drift_at, rows = s["drift_at"], s["rows"]
    n = len(results)
    retrains_post = [r for r in retrain_rows if r >= drift_at]
    lines = [
        "## Continuous learning through a drift (`bench/learning.py`)",
        "",
        f"- date: {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        (
            f"- command: `{cmd.strip()}` (wall {elapsed:.0f} s, CPU {cpu_seconds():.0f} s; "
            f"load average {load_start:.1f} at start, shared machine)"
        ),
        (
            f"- stream: `make_churn`, {rows:,} rows, concept 0 then concept 1 from row {drift_at:,}; "
            f"{n} seeds (bootstrap seed 7 + seed, so seed 0 has the gateway's default models); "
            f"policy {policy_label(policy_file)}: burn-in {policy.burn_in_rewards} rewards per arm, "
            f"{policy.algorithm}, retrain every {rt.every_labels:,} labels on the newest {rt.window_labels:,} "
            f"({'/'.join(rt.candidates)}), margin {rt.margin}, McNemar p ≤ {rt.max_p_value}, max_variants {rt.max_variants}"
        ),
        (
            "- simulation: offline, no Ray Serve or Redis; the gateway's own `resolve_artifacts`, "
            "`allocate`/`promotion_decision`, `LabelledData.from_decisions`, the retrainer task's `retrain_against_live` "
            f"(best live model on the holdout to beat) into a temporary registry; allocation refreshed every {REFRESH_ROWS} rows, feedback "
            f"{FEEDBACK_DELAY_ROWS[0]}-{FEEDBACK_DELAY_ROWS[1]} rows after its request; a retraining takes no "
            "time; no unit ids, guardrails or PSI trigger"
        ),
        (
            "- (a) system: the gateway's loop; (b) static: the better bootstrap model before the drift, never "
            f"retrained; (c) oracle: XGBoost retrained on the previous {rt.window_labels:,} true labels every "
            f"{rt.every_labels:,} rows, always served"
        ),
        "",
        (f"**Headline** (mean over {n} seeds; pre-drift = the system's last {PRE_ROWS:,} rows before the drift; "
        f"recovery = first {WINDOW}-row window after the drift at ≥ {RECOVER_SHARE:.0%} of it, counting the retrain "
        "cycles after the drift that ran before that window)"),
        "",
        "| measure | value | goal | met |",
        "| --- | --- | --- | --- |",
        f"| pre-drift accuracy (system) | {pct(s['pre_drift_accuracy'])} | | |",
        (
            f"| retrain cycles to recover ≥ 90% of pre-drift (median; per seed) | "
            f"{s['cycles_to_recover'] if s['cycles_to_recover'] is not None else 'never'}; "
            f"{', '.join('never' if c is None else str(c) for c in s['cycles_to_recover_per_seed'])} | ≤ {RECOVER_CYCLES} | "
            f"{'yes' if g['recover_90pct_within_3_cycles']['met'] else '**no**'} "
            f"({g['recover_90pct_within_3_cycles']['seeds_met']}/{n} seeds) |"
        ),
        f"| recovered accuracy (system, from the recovery window to the end) | {pct(s['recovered_accuracy'])} | | |",
        f"| post-drift accuracy: system | {pct(s['system_post_drift_accuracy'])} | | |",
        f"| post-drift accuracy: static champion | {pct(s['static_post_drift_accuracy'])} | | |",
        f"| post-drift accuracy: oracle | {pct(s['oracle_post_drift_accuracy'])} | | |",
        (
            f"| system − static, post-drift (mean; worst seed) | "
            f"{100 * g['beat_static_post_drift_by_15_points']['margin_mean']:+.1f}; "
            f"{100 * g['beat_static_post_drift_by_15_points']['margin_min']:+.1f} points | ≥ +15 points | "
            f"{'yes' if g['beat_static_post_drift_by_15_points']['met'] else '**no**'} "
            f"({g['beat_static_post_drift_by_15_points']['seeds_met']}/{n} seeds) |"
        ),
        f"| system accuracy, last {PRE_ROWS:,} rows | {pct(s['final_accuracy'])} | | |",
        (
            f"| post-drift rows routed uniformly (burn-in) / served by pre-drift models | "
            f"{pct(s['post_drift_burn_in_share'])} / {pct(s['post_drift_pre_drift_model_share'])} | | |"
        ),
        (
            f"| cumulative accuracy, whole stream: system / static / oracle | "
            f"{pct(s['cumulative_accuracy']['system'])} / {pct(s['cumulative_accuracy']['static'])} / "
            f"{pct(s['cumulative_accuracy']['oracle'])} | | |"
        ),
        "",
        (f"**Windowed accuracy** per {WINDOW} rows (mean over seeds); retrain cycles (seed 0) at rows "
        f"{', '.join(f'{r:,}' for r in retrain_rows)}; cycle k after the drift = the k-th of "
        f"{', '.join(f'{r:,}' for r in retrains_post[:4])}, ..."),
        "",
        "| rows | system | static | oracle | system cumulative | system rows in burn-in | system rows on pre-drift models |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    w, route = s["windowed_accuracy"], s["windowed_routing"]
    cum = 0.0
    for k, (a, b, c) in enumerate(zip(w["system"], w["static"], w["oracle"])):
        lo, hi = k * WINDOW, min(rows, (k + 1) * WINDOW)
        cum += a * (hi - lo)
        mark = " ← drift" if lo == drift_at else ""
        lines.append(
            f"| {lo:,}–{hi:,}{mark} | {pct(a)} | {pct(b)} | {pct(c)} | {pct(cum / hi)} | "
            f"{pct(route['burn_in_share'][k])} | {pct(route['pre_drift_model_share'][k])} |"
        )
    lines += [
        "",
        ("**What the system did** (seed 0; window = the labelled rows the retrainer used, of which post-drift; "
        "holdout accuracies are the retrainer's, on the newest quarter)"),
        "",
    ]
    lines += ["| row | event |", "| --- | --- |"]
    for e in results[0]["events"]:
        if e["action"] == "promote":
            lines.append(f"| {e['row']:,} | promoted {e['variant']} |")
        elif e.get("outcome") == "skipped":
            lines.append(f"| {e['row']:,} | retrain skipped ({e['rows']} rows) |")
        else:
            what = f"added {e['variant']}" if e["outcome"] == "admitted" else "rejected"
            retired = f"; retired {', '.join(e['retired'])}" if e.get("retired") else ""
            lines.append(
                f"| {e['row']:,} | retrain on {e['rows']:,} rows ({e['post_drift_rows']:,} post-drift) vs "
                f"{e['champion']} (holdout {pct(e['champion_holdout_accuracy'])}, best candidate "
                f"{pct(e['best_candidate_holdout_accuracy'])}): {what}{retired} |"
            )
    pre_adds = [r["challengers_added_pre_drift"] for r in results]
    if s["post_drift_burn_in_share"] > 0.5:
        # Said only when the figures show it: the usual reason for a slow recovery.
        lines += [
            "",
            (
                f"Reading: {pct(s['post_drift_burn_in_share'])} of the post-drift rows were routed uniformly. Each "
                f"admitted challenger starts without rewards, and allocate() stays uniform until every live arm has "
                f"{policy.burn_in_rewards} rewards, i.e. k × {policy.burn_in_rewards} rows for k arms, longer than "
                f"the {rt.every_labels:,} labels between retrains; the stale champion keeps its title (add_variant "
                "only reopens exploration), so every retrain is compared against it, admits another challenger and "
                "restarts the burn-in, and the champion, never retired, keeps its uniform share."
            ),
        ]
    lines += [
        "",
        (f"Challengers admitted before the drift (stationary world), per seed: {', '.join(map(str, pre_adds))}; "
        f"after it: {', '.join(str(len(r['challengers_added']) - r['challengers_added_pre_drift']) for r in results)}."),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the figures as JSON here")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    ap.add_argument("--rows", type=int, default=14_000, help="rows in the stream (default 14,000)")
    ap.add_argument("--drift-at", type=int, default=6_000, help="first row of concept 1 (default 6,000)")
    ap.add_argument("--policy", type=Path, default=POLICY_FILE, help="policy file (default policies/default.yaml)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes (default 2)")
    ap.add_argument("--no-readme", action="store_true", help="do not update bench/README.md")
    ap.add_argument("--readme", type=Path, default=ROOT / "bench" / "README.md")
    args = ap.parse_args(argv)
    if not PRE_ROWS <= args.drift_at < args.rows:
        ap.error(f"--drift-at must be in [{PRE_ROWS}, --rows)")
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    seeds = list(range(args.seeds))
    if args.jobs > 1 and len(seeds) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            k = len(seeds)
            results = list(pool.map(run_seed, seeds, [args.rows] * k, [args.drift_at] * k, [args.policy] * k))
    else:
        results = [run_seed(s, args.rows, args.drift_at, args.policy) for s in seeds]
    for r in results:
        log(
            f"seed {r['seed']}: {r['seconds']:.0f} s, pre {r['pre_drift_accuracy']:.3f}, post system "
            f"{r['system_post_drift_accuracy']:.3f} static {r['static_post_drift_accuracy']:.3f} oracle "
            f"{r['oracle_post_drift_accuracy']:.3f}, cycles to recover {r['cycles_to_recover']}, "
            f"challengers {r['challengers_added']}"
        )
    elapsed = time.perf_counter() - t_start
    summary = summarise(results, args.rows, args.drift_at)
    summary["wall_seconds"] = elapsed
    summary["per_seed"] = results
    cmd = "python bench/learning.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = render(summary, results, load_policy_file(args.policy), args.policy, cmd, elapsed, load_start)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if not args.no_readme:
        write_readme(args.readme, section, START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
