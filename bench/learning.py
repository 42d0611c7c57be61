#!/usr/bin/env python
"""Continuous-learning benchmark: accuracy through an abrupt concept drift.

Usage::

    python bench/learning.py [--json PATH] [--seeds N] [--jobs J] [--shadow-labels N] [--on-graduation explore|promote] [--no-shadow-first] [--no-readme]
    python bench/learning.py --world unit-signal [--seeds N] [--json PATH]   # per-unit aggregates (bench/_unit_world.py)

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

Shadow first (issue 15): the same system with ``retrain.shadow_first: {labels: N}`` (N from
``--shadow-labels``, else the policy's, else the gateway's default), on the same models, stream
and random numbers. An admitted challenger is added with role shadow and leaves exploration
closed (the retrainer's entry, ``add_variant.lua``); every served row is also answered by the
variants then in shadow, and its label updates the paired counts (shadow, served) -> {sw, lw, n}
as ``reward.lua`` does; every ``SHADOW_CHECK_ROWS`` rows (the router's check every second) ``shadow_first.verdicts``
graduates (``set_role.lua``: live, exploration reopens) or retires. Both arms get an exposure
regret: the post-drift rows served by a model less accurate than the best model available at
that row (added, live or in shadow, not yet retired), accuracy measured on fresh concept-1 rows.

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
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _report import cpu_seconds, machine, write_readme  # noqa: E402 (bench/ is on sys.path when run)

from gateway.dataplane.shadow import mirrored
from gateway.decisions import allocation, shadow_first
from gateway.learning.bootstrap import resolve_artifacts
from gateway.learning import artifacts
from gateway.learning.features import FeatureEncoder
from gateway.learning.registry import ModelRegistry
from gateway.learning.retrain import MIN_ROWS, LabelledData, live_refs, retrain_against_live
from gateway.policy import Policy, load_policy_file
from gateway.policy_learning import ShadowFirst

# The retrainer's champion choice and minimum window live in the Ray Serve module (importing
# it loads Ray, ~5 s, but starts nothing).
from gateway.sim.churn import make_churn
from gateway.store.snapshot import ArmCounts, Snapshot

START, END = "<!-- learning:start -->", "<!-- learning:end -->"
POLICY_FILE = ROOT / "policies" / "default.yaml"
REFRESH_ROWS = 10
FEEDBACK_DELAY_ROWS = (20, 200)
T0 = 1_800_000_000.0  # serving time of row 0 (unix s); rows are 10 ms apart (100 req/s)
DT = 0.01
WINDOW = 500  # rows per windowed-accuracy point
PRE_ROWS = 2000  # pre-drift accuracy: the system's last this many rows before the drift
# The router judges shadow-first challengers once a second (upkeep.SHADOW_FIRST_EVERY_S): at
# 100 req/s, every 100 rows.
SHADOW_CHECK_ROWS = 100
# Rows of concept 1 drawn apart from the stream on which every model's post-drift accuracy is
# measured for exposure regret (no model trained on them).
EVAL_ROWS = 10_000
EXPOSURE_GOAL = 0.5  # shadow first: at most half the plain system's exposure regret
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
    added_at_row: dict[str, int] = field(default_factory=dict)  # challenger -> row it was trained and added
    live_at_row: dict[str, int] = field(default_factory=dict)  # challenger -> row it took traffic (or graduated)
    retired_at_row: dict[str, int] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)  # every variant's model, to score it apart
    served: list[str] = field(default_factory=list)  # the variant that served each row
    # Shadow first: the shadows as of the last refresh (DataPlane's rt.shadows), the ones that
    # answered each row still waiting for its label, and the paired counts (shadow, served) ->
    # {sw, lw, n} as reward.lua keeps them.
    shadows: tuple[str, ...] = ()
    shadow_answers: dict[int, tuple[str, ...]] = field(default_factory=dict)
    paired: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    shadow_rewards: dict[str, list[float]] = field(default_factory=dict)

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
        self.shadows = tuple(allocation.shadow_arms(policy, self.meta))
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
        self.models[name] = model
        self.preds[name] = predictions(model, self.stream.X)
        self.added_at_row[name] = i
        self.refs[name] = {"experiment": self.base.experiment, "variant": name, "path": entry["path"], "sha256": entry["sha256"]}
        self.dynamic[name] = {"name": name, "path": entry["path"], "sha256": entry["sha256"], "added_at": now,
                              "parent": champion["variant"], "window": data.window()}
        if self.base.retrain.shadow_first is not None:
            # The retrainer's entry: it answers copies of live requests until it beats the best
            # live model on them; add_variant.lua then leaves exploration closed.
            self.dynamic[name] |= {"role": "shadow", "shadow_first": True}
            event["role"] = "shadow"
        else:
            # add_variant.lua: a fresh prior (no counters yet) and exploration reopens; the
            # champion keeps its title until the rule promotes again.
            self._reopen(now)
            self.live_at_row[name] = i
        event["retired"] = self._retire_extra(i)

    def _reopen(self, now: float) -> None:
        # add_variant.lua and set_role.lua (going live): promoted -> exploring, and the promotion
        # rule's min_duration_s counts from now.
        if self.meta.get("status", "exploring") == "promoted":
            self.meta["status"] = "exploring"
        self.meta["challenger_at"] = repr(now)

    def _retire_extra(self, i: int) -> list[str]:
        """As the retrainer does: the pure decision, then the meta it writes."""
        gone = allocation.arms_to_retire(self.policy, self.arms, self.meta, self.base.retrain.max_variants)
        self._retire(gone, i)
        return gone

    def _retire(self, gone: list[str], i: int) -> None:
        self.meta["retired"] = json.dumps(sorted(allocation.retired(self.meta) | set(gone)))
        self.retired_at_row.update({v: i for v in gone})

    # -- shadow first (reward.lua's paired scoring, the monitor's verdicts) -------------------

    def _score_shadows(self, j: int, served: str, served_right: bool) -> None:
        """reward.lua with a label: every shadow that answered row j, paired with the served one
        (whatever its role is now: the answer is on the request's record)."""
        label = self.stream.y[j]
        for v in self.shadow_answers.pop(j, ()):
            shadow_right = bool(self.preds[v][j] == label)
            c = self.paired.setdefault((v, served), {"sw": 0, "lw": 0, "n": 0})
            c["sw"] += shadow_right and not served_right
            c["lw"] += served_right and not shadow_right
            c["n"] += 1
            # reward.lua: what the shadow would have earned ('match'), for when it goes live; once
            # live (a label that comes after its graduation), its arm's own.
            if not shadow_first.credits_shadow_rewards(self.policy):
                continue
            if allocation.role_overrides(self.meta).get(v) == "live":
                self._reward(v, float(shadow_right))
            else:
                r = self.shadow_rewards.setdefault(v, [0, 0.0])
                r[0] += 1
                r[1] += float(shadow_right)

    def _shadow_first(self, i: int) -> None:
        """promotions.judge_shadows: graduate (set_role.lua: live, exploration reopens) or retire."""
        found = shadow_first.verdicts(self.policy, self.arms, self.meta, self.dynamic, self.paired)
        for verdict in found:
            if verdict.outcome == "wait":
                continue
            if verdict.outcome == "graduate":
                roles = allocation.role_overrides(self.meta) | {verdict.variant: "live"}
                self.meta["roles"] = json.dumps(roles)
                # set_role.lua: the rewards it earned in shadow (from the labels) join its posterior.
                n, s = self.shadow_rewards.pop(verdict.variant, (0, 0.0))
                if n:
                    c = self.arms.get(verdict.variant, ArmCounts())
                    self.arms[verdict.variant] = ArmCounts(c.rewards + n, c.reward_sum + s, c.reward_sq_sum + s, c.requests)
                self._reopen(self.now(i))
                if shadow_first.promotes_on_graduation(self.policy, self.meta, verdict.variant):
                    self._transition("promoted", verdict.variant)  # promotions._promote_graduate
                self.live_at_row[verdict.variant] = i
            else:
                self._retire([verdict.variant], i)
            self.events.append({"row": i, "action": verdict.outcome, "variant": verdict.variant,
                                "reason": verdict.reason, "evidence": verdict.evidence})

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
        self.models.update(models)
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
                self._score_shadows(j, variant, pred == label)
                self.feedback[str(j)] = {"label": label, "reward": float(pred == label)}
                self.labels_since_retrain += 1
            if i % SHADOW_CHECK_ROWS == 0:
                # Before this row's refresh (SHADOW_CHECK_ROWS is a multiple of REFRESH_ROWS), which
                # then routes by the new roles.
                self._shadow_first(i)
            if alloc is None or i % REFRESH_ROWS == 0:
                alloc = self.refresh(i)
            variant, _ = alloc.pick(float(self.rng.random()))
            c = self.arms.get(variant, ArmCounts())
            self.arms[variant] = ArmCounts(c.rewards, c.reward_sum, c.reward_sq_sum, c.requests + 1)
            pred = int(self.preds[variant][i])
            correct[i] = pred == st.y[i]
            burn_in[i] = alloc.mode == "burn_in"
            stale[i] = self.added_at_row.get(variant, -1) < st.drift_at
            self.served.append(variant)
            if self.shadows and mirrored(str(i), self.base.shadow.fraction):
                # Shadow answers arrive off the request path, long before the label (20+ rows).
                self.shadow_answers[i] = self.shadows
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


# --------------------------------------------------------------------------- windows and recovery


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


# --------------------------------------------------------------------------- exposure regret


def with_shadow_first(policy: Policy, spec: ShadowFirst | None) -> Policy:
    """The policy with retrain.shadow_first `spec` (None: removed)."""
    return policy.model_copy(update={"retrain": policy.retrain.model_copy(update={"shadow_first": spec})})


def make_eval(policy: Policy, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh rows of concept 1 (a seed the stream and the bootstrap never use): every model's
    post-drift accuracy is measured here, since scoring a challenger on the stream's rows would
    count the rows it was trained on."""
    s_eval = int(np.random.SeedSequence([seed, 9]).generate_state(1)[0])
    rows, y = make_churn(EVAL_ROWS, s_eval, concept=1)
    return FeatureEncoder(policy.features).encode(rows), y


def best_available(n: int, quality: dict[str, float], available: dict[str, tuple[int, int]]) -> list[str]:
    """Per row, the most accurate model that exists then. `available`: model -> [first row,
    end row) during which it existed, live or in shadow."""
    best, top = [""] * n, np.full(n, -np.inf)
    for v, (lo, hi) in available.items():
        better = np.flatnonzero(quality[v] > top[lo:hi]) + lo
        top[better] = quality[v]
        for i in better:
            best[i] = v
    return best


def exposure_regret(
    served: list[str], quality: dict[str, float], best: list[str], start: int
) -> tuple[np.ndarray, float, np.ndarray]:
    """(whether each row from `start` on was served by a model less accurate than the best one
    available at that row, the sum over those rows of the accuracy shortfall: the expected extra
    errors, and each row's shortfall)."""
    gap = np.array([quality[b] - quality[v] for b, v in zip(best[start:], served[start:])])
    return gap > 0, float(np.sum(gap)), gap


def exposure(system: System, X_eval: np.ndarray, y_eval: np.ndarray) -> dict[str, Any]:
    """The system's exposure regret after the drift; each model's quality on the fresh rows."""
    quality = {v: float(np.mean(predictions(m, X_eval) == y_eval)) for v, m in system.models.items()}
    n, start = len(system.served), system.stream.drift_at
    # Bootstrap models exist (and are live) from row 0; a challenger exists from the row it was
    # added (live or in shadow) until the row it was retired.
    bootstrap = {v.name: 0 for v in system.base.variants}
    available = {v: (system.added_at_row.get(v, 0), system.retired_at_row.get(v, n)) for v in system.models}
    best = best_available(n, quality, available)
    worse, weighted, gap = exposure_regret(system.served, quality, best, start)
    # Of those rows, the ones whose best model took no traffic yet (shadow first's wait, as
    # against the bandit's slowness once it is live).
    live_from = {v: system.live_at_row.get(v, n) for v in system.models} | bootstrap
    waiting = np.array([live_from[b] > i for i, b in enumerate(best[start:], start)])
    rows = int(worse.sum())
    # Worse by more than retrain.margin: the smallest difference the gateway itself calls better
    # (a 0.3-point gap on the fresh rows is within their noise, about ±0.5 points).
    material = int(np.sum(gap > system.base.retrain.margin))
    return {"rows": rows, "share": rows / (n - start), "weighted": weighted, "rows_material": material,
            "margin": system.base.retrain.margin,
            "rows_best_in_shadow": int(np.sum(worse & waiting)), "quality": quality}


def shadow_arm(system: System, ok: np.ndarray, regret: dict[str, Any]) -> dict[str, Any]:
    """The shadow-first arm's figures, measured as the plain system's."""
    drift_at = system.stream.drift_at
    pre = float(ok[drift_at - PRE_ROWS:drift_at].mean())
    win = windowed(ok)
    rec_row, cycles = recovery(win, drift_at, system.retrain_rows, pre)
    return {
        "labels": system.base.retrain.shadow_first.labels,
        "on_graduation": system.base.retrain.shadow_first.on_graduation,
        "pre_drift_accuracy": pre,
        "post_drift_accuracy": float(ok[drift_at:].mean()),
        "recovery_row": rec_row,
        "cycles_to_recover": cycles,
        "exposure": regret,
        "windowed_accuracy": win,
        "retrain_rows": system.retrain_rows,
        "challengers_added": [e["variant"] for e in system.events if e.get("outcome") == "admitted"],
        "graduated": [e["variant"] for e in system.events if e["action"] == "graduate"],
        "retired_in_shadow": [e["variant"] for e in system.events if e["action"] == "retire"],
        "events": system.events,
    }


# --------------------------------------------------------------------------- one seed


def run_seed(
    seed: int, rows: int, drift_at: int, policy_file: Path = POLICY_FILE, shadow_spec: ShadowFirst | None = None
) -> dict[str, Any]:
    """Both arms on one stream: the system as before (shadow first off) and, when
    `shadow_spec` is given, the same system with it as retrain.shadow_first."""
    t0 = time.perf_counter()
    base = load_policy_file(policy_file)
    work = Path(tempfile.mkdtemp(prefix=f"bench-learning-{seed}-"))
    try:
        policy, refs, models = bootstrap_models(base, seed, work)
        stream = make_stream(policy, seed, rows, drift_at)
        # Shadow first off: the simulation ignored it before, so these figures stay as they were.
        system = System(with_shadow_first(policy, None), dict(refs), stream, work / "registry",
                        np.random.default_rng([seed, 1]))
        sys_ok, burn_in, stale = system.run(models)
        X_eval, y_eval = make_eval(policy, seed)
        regret = exposure(system, X_eval, y_eval)
        shadow = None
        if shadow_spec is not None:
            # Same models, stream and random numbers: the arms differ only once a challenger is added.
            sf = System(with_shadow_first(policy, shadow_spec), dict(refs), stream, work / "registry-shadow-first",
                        np.random.default_rng([seed, 1]))
            sf_ok, _, _ = sf.run(models)
            shadow = shadow_arm(sf, sf_ok, exposure(sf, X_eval, y_eval))
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
        "exposure": regret,
        "shadow_first": shadow,
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


def spread(xs: list[float]) -> dict[str, float]:
    return {"mean": mean(xs), "sd": float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0, "min": min(xs), "max": max(xs)}


def slower(cycles: int | None, reference: int | None) -> bool:
    """Whether a recovery after `cycles` retrain cycles (None: never) is slower than `reference`."""
    if cycles is None:
        return reference is not None
    return reference is not None and cycles > reference


def summarise_shadow(results: list[dict]) -> dict[str, Any] | None:
    """Exposure regret and recovery of both arms, seed by seed, and the issue's goal."""
    if any(r["shadow_first"] is None for r in results):
        return None
    plain = [r["exposure"] for r in results]
    sf = [r["shadow_first"]["exposure"] for r in results]
    plain_rows, sf_rows = [e["rows"] for e in plain], [e["rows"] for e in sf]
    plain_material, sf_material = [e["rows_material"] for e in plain], [e["rows_material"] for e in sf]
    # The goal reads "worse" as the gateway does: by more than retrain.margin.
    ratio = mean(sf_material) / mean(plain_material) if mean(plain_material) > 0 else None
    any_gap_ratio = mean(sf_rows) / mean(plain_rows) if mean(plain_rows) > 0 else None
    plain_cycles = [r["cycles_to_recover"] for r in results]
    sf_cycles = [r["shadow_first"]["cycles_to_recover"] for r in results]
    slow = [slower(c, ref) for c, ref in zip(sf_cycles, plain_cycles)]
    finite = sorted(c for c in sf_cycles if c is not None)
    return {
        "labels": results[0]["shadow_first"]["labels"],
        "on_graduation": results[0]["shadow_first"]["on_graduation"],
        "margin": plain[0]["margin"],
        "exposure_rows": {"plain": spread(plain_rows), "shadow_first": spread(sf_rows)},
        "exposure_rows_material": {"plain": spread(plain_material), "shadow_first": spread(sf_material)},
        "exposure_any_gap_ratio": any_gap_ratio,
        "exposure_share": {"plain": mean([e["share"] for e in plain]), "shadow_first": mean([e["share"] for e in sf])},
        "exposure_rows_best_in_shadow": {"plain": mean([e["rows_best_in_shadow"] for e in plain]),
                                         "shadow_first": mean([e["rows_best_in_shadow"] for e in sf])},
        "exposure_weighted": {"plain": spread([e["weighted"] for e in plain]),
                              "shadow_first": spread([e["weighted"] for e in sf])},
        # Ratio of the means over seeds (shadow first / plain).
        "exposure_ratio": ratio,
        "exposure_weighted_ratio": mean([e["weighted"] for e in sf]) / max(mean([e["weighted"] for e in plain]), 1e-12),
        "post_drift_accuracy": {"plain": mean([r["system_post_drift_accuracy"] for r in results]),
                                "shadow_first": mean([r["shadow_first"]["post_drift_accuracy"] for r in results])},
        "cycles_to_recover": {"plain": plain_cycles, "shadow_first": sf_cycles},
        "cycles_to_recover_median": {"shadow_first": float(np.median(finite)) if len(finite) * 2 > len(sf_cycles) else None},
        "recovery_row": {"plain": [r["recovery_row"] for r in results],
                         "shadow_first": [r["shadow_first"]["recovery_row"] for r in results]},
        "goal": {"met": ratio is not None and ratio <= EXPOSURE_GOAL and not any(slow),
                 "exposure_halved": ratio is not None and ratio <= EXPOSURE_GOAL, "seeds_slower": sum(slow)},
    }


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
        "shadow_first": summarise_shadow(results),
    }


def event_rows(events: list[dict]) -> list[str]:
    lines = []
    for e in events:
        if e["action"] == "promote":
            lines.append(f"| {e['row']:,} | promoted {e['variant']} |")
        elif e["action"] in ("graduate", "retire"):
            # Shadow first's verdict, with its reason (the paired counts and McNemar p).
            lines.append(f"| {e['row']:,} | shadow first: {e['action']} {e['variant']}: {e['reason']} |")
        elif e.get("outcome") == "skipped":
            lines.append(f"| {e['row']:,} | retrain skipped ({e['rows']} rows) |")
        else:
            what = f"added {e['variant']}" if e["outcome"] == "admitted" else "rejected"
            what += " in shadow" if e.get("role") == "shadow" else ""
            retired = f"; retired {', '.join(e['retired'])}" if e.get("retired") else ""
            lines.append(
                f"| {e['row']:,} | retrain on {e['rows']:,} rows ({e['post_drift_rows']:,} post-drift) vs "
                f"{e['champion']} (holdout {pct(e['champion_holdout_accuracy'])}, best candidate "
                f"{pct(e['best_candidate_holdout_accuracy'])}): {what}{retired} |"
            )
    return lines


def per_seed(xs: list) -> str:
    return ", ".join("never" if x is None else f"{x:,}" for x in xs)


def shadow_reading(sf: dict, arms: list[dict]) -> list[str]:
    """Said only when the goal is missed: what the figures show drives it."""
    if sf["goal"]["met"]:
        return []
    waited = sf["exposure_rows_best_in_shadow"]["shadow_first"] / max(sf["exposure_rows"]["shadow_first"]["mean"], 1)
    return [
        (f"Reading: shadow first saves exposure only when it keeps out a challenger worse than the live models; "
         f"here, challengers retired in shadow: {sum(len(a['retired_in_shadow']) for a in arms)} of "
         f"{sum(len(a['challengers_added']) for a in arms)} admitted (all seeds), and {pct(waited)} of its exposure "
         f"regret fell while the best "
         f"model waited in shadow (until its paired evidence reached the level, at most {sf['labels']} labels); once "
         "live, a graduate "
         "burns in and gains traffic as a plain challenger does."),
        "",
    ]


def render_shadow(s: dict, results: list[dict]) -> list[str]:
    """The shadow-first comparison (issue 15): exposure regret and recovery of both arms."""
    sf = s["shadow_first"]
    if sf is None:
        return []
    n = len(results)
    rows, w, goal = sf["exposure_rows"], sf["exposure_weighted"], sf["goal"]
    material, margin = sf["exposure_rows_material"], sf["margin"]
    waiting = sf["exposure_rows_best_in_shadow"]
    arms = [r["shadow_first"] for r in results]
    ratio = "–" if sf["exposure_ratio"] is None else f"{sf['exposure_ratio']:.2f}"
    cycles, med = sf["cycles_to_recover"], s["cycles_to_recover"]
    sf_med = sf["cycles_to_recover_median"]["shadow_first"]

    def rows_cell(x: dict) -> str:
        return f"{x['mean']:,.0f} ± {x['sd']:,.0f} ({x['min']:,.0f}–{x['max']:,.0f})"

    lines = [
        (f"**Shadow first** (issue 15; mean over the same {n} seeds, models, streams and random numbers). The second "
         f"arm runs the policy with `retrain.shadow_first: {{labels: {sf['labels']}, on_graduation: {sf['on_graduation']}}}`"
         f"{' (the gateway defaults)' if ShadowFirst(labels=sf['labels'], on_graduation=sf['on_graduation']) == ShadowFirst() else ''}: "
         "an admitted challenger is added "
         "in shadow (exploration stays closed) and answers every served request; when the label comes, reward.lua's "
         "paired counts against the served model and the shadow's own reward (`match`) are updated; every second (every "
         f"{SHADOW_CHECK_ROWS:,} rows at 100 req/s) the router runs `shadow_first.verdicts`: graduate or retire. A graduate "
         "goes live with the rewards it earned in shadow in its posterior (set_role.lua) and, with on_graduation "
         "promote, becomes the champion; with explore it joins the bandit. The first arm, plain, is the system above."),
        "",
        (f"Exposure regret: the post-drift rows served by a model less accurate than the best model available at "
         "that row (a bootstrap model, or a challenger from the row it was added, live or in shadow, until the row "
         f"it was retired); a model's accuracy is measured on {EVAL_ROWS:,} fresh rows of concept 1 that no model "
         "trained on. Accuracy-weighted: the sum over the post-drift rows of (best available − served accuracy), "
         "the expected extra errors."),
        "",
        "| measure | plain | shadow first | shadow first / plain | goal | met |",
        "| --- | --- | --- | --- | --- | --- |",
        (f"| exposure regret: rows served by a model worse by more than retrain.margin ({margin:.0%}) (mean ± sd; "
         f"min–max) | {rows_cell(material['plain'])} | {rows_cell(material['shadow_first'])} | {ratio} | "
         f"≤ {EXPOSURE_GOAL:.2f} | {'yes' if goal['exposure_halved'] else '**no**'} |"),
        (f"| rows served by a model worse by any amount (mean ± sd; min–max) | {rows_cell(rows['plain'])} | "
         f"{rows_cell(rows['shadow_first'])} | {sf['exposure_any_gap_ratio']:.2f} | | |"),
        (f"| exposure regret, share of post-drift rows | {pct(sf['exposure_share']['plain'])} | "
         f"{pct(sf['exposure_share']['shadow_first'])} | | | |"),
        (f"| of which the best available model was still in shadow (rows, mean) | "
         f"{waiting['plain']:,.0f} | {waiting['shadow_first']:,.0f} | | | |"),
        (f"| exposure regret, accuracy-weighted (mean ± sd) | {w['plain']['mean']:.1f} ± {w['plain']['sd']:.1f} | "
         f"{w['shadow_first']['mean']:.1f} ± {w['shadow_first']['sd']:.1f} | {sf['exposure_weighted_ratio']:.2f} | | |"),
        (f"| post-drift accuracy | {pct(sf['post_drift_accuracy']['plain'])} | "
         f"{pct(sf['post_drift_accuracy']['shadow_first'])} | | | |"),
        (f"| retrain cycles to recover (median; per seed) | {med if med is not None else 'never'}; "
         f"{per_seed(cycles['plain'])} | {sf_med if sf_med is not None else 'never'}; {per_seed(cycles['shadow_first'])} "
         f"| | not slower on any seed | {'yes' if goal['seeds_slower'] == 0 else '**no**'} "
         f"({goal['seeds_slower']}/{n} seeds slower) |"),
        (f"| recovery window starts, rows after the drift (per seed) | "
         f"{per_seed([None if r is None else r - s['drift_at'] for r in sf['recovery_row']['plain']])} | "
         f"{per_seed([None if r is None else r - s['drift_at'] for r in sf['recovery_row']['shadow_first']])} | | | |"),
        "",
        (f"Goal (≥ {1 - EXPOSURE_GOAL:.0%} less exposure regret, recovery not slower): "
         f"{'**met**' if goal['met'] else '**not met**'}. Exposure regret per seed, plain: "
         f"{per_seed([r['exposure']['rows_material'] for r in results])}; shadow first: "
         f"{per_seed([r['shadow_first']['exposure']['rows_material'] for r in results])}. Challengers per seed (shadow first) "
         f"added / graduated / retired in shadow: "
         + ", ".join(f"{len(a['challengers_added'])}/{len(a['graduated'])}/{len(a['retired_in_shadow'])}"
                     for a in arms) + "."),
        "",
        *shadow_reading(sf, arms),
        "What shadow first did (seed 0):",
        "",
        "| row | event |",
        "| --- | --- |",
        *event_rows(results[0]["shadow_first"]["events"]),
        "",
    ]
    return lines


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
    # The shadow-first arm's windowed accuracy (mean over seeds), a column of its own.
    sf_win = None if s["shadow_first"] is None else [
        mean(col) for col in zip(*(r["shadow_first"]["windowed_accuracy"] for r in results))
    ]
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
        *render_shadow(s, results),
        (f"**Windowed accuracy** per {WINDOW} rows (mean over seeds); retrain cycles (seed 0) at rows "
        f"{', '.join(f'{r:,}' for r in retrain_rows)}; cycle k after the drift = the k-th of "
        f"{', '.join(f'{r:,}' for r in retrains_post[:4])}, ..."),
        "",
        "| rows | system | static | oracle | system cumulative | system rows in burn-in | system rows on pre-drift models |"
        + (" shadow first |" if sf_win else ""),
        "| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if sf_win else ""),
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
            + (f" {pct(sf_win[k])} |" if sf_win else "")
        )
    lines += [
        "",
        ("**What the system did** (seed 0; window = the labelled rows the retrainer used, of which post-drift; "
        "holdout accuracies are the retrainer's, on the newest quarter)"),
        "",
    ]
    lines += ["| row | event |", "| --- | --- |", *event_rows(results[0]["events"])]
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


def shadow_spec(policy: Policy, labels: int | None, on_graduation: str | None) -> ShadowFirst:
    """The shadow-first arm's settings: as asked, else the policy's, else ShadowFirst's defaults
    (validated as a policy file would be)."""
    spec = policy.retrain.shadow_first or ShadowFirst()
    asked = {k: v for k, v in {"labels": labels, "on_graduation": on_graduation}.items() if v is not None}
    return ShadowFirst.model_validate(spec.model_dump() | asked)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the figures as JSON here")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    ap.add_argument("--rows", type=int, default=14_000, help="rows in the stream (default 14,000)")
    ap.add_argument("--drift-at", type=int, default=6_000, help="first row of concept 1 (default 6,000)")
    ap.add_argument("--policy", type=Path, default=POLICY_FILE, help="policy file (default policies/default.yaml)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes (default 2)")
    ap.add_argument("--shadow-labels", type=int, help="the shadow-first arm's retrain.shadow_first.labels "
                    "(default: the policy's, else the gateway's default)")
    ap.add_argument("--on-graduation", choices=["explore", "promote"], help="the shadow-first arm's "
                    "retrain.shadow_first.on_graduation (default: the policy's, else the gateway's default)")
    ap.add_argument("--no-shadow-first", action="store_true", help="skip the shadow-first arm")
    ap.add_argument("--no-readme", action="store_true", help="do not update bench/README.md")
    ap.add_argument("--readme", type=Path, default=ROOT / "bench" / "README.md")
    ap.add_argument("--world", choices=["drift", "unit-signal"], default="drift",
                    help="drift (default): the concept drift above; unit-signal: a per-unit aggregate carries "
                    "the signal (bench/_unit_world.py, real DataPlane and Redis; prints its figures)")
    ap.add_argument("--unit-before", type=int, default=3000, help="unit-signal: requests before the retraining")
    ap.add_argument("--unit-after", type=int, default=3000, help="unit-signal: requests after the challenger joins")
    ap.add_argument("--units", type=int, default=150, help="unit-signal: distinct unit ids")
    ap.add_argument("--settled", type=float, default=0.6, help="unit-signal: share of units with their own outcome")
    ap.add_argument("--serving-requests", type=int, default=2000,
                    help="unit-signal: requests per serving measurement (0: skip it)")
    args = ap.parse_args(argv)
    if args.world == "unit-signal":
        import _unit_world

        return _unit_world.main(args)
    if not PRE_ROWS <= args.drift_at < args.rows:
        ap.error(f"--drift-at must be in [{PRE_ROWS}, --rows)")
    policy = load_policy_file(args.policy)
    try:
        spec = None if args.no_shadow_first else shadow_spec(policy, args.shadow_labels, args.on_graduation)
    except ValidationError as err:  # the same bounds as in a policy file
        ap.error(f"--shadow-labels: {err.errors()[0]['msg']}")
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    seeds = list(range(args.seeds))
    if args.jobs > 1 and len(seeds) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            k = len(seeds)
            results = list(pool.map(run_seed, seeds, [args.rows] * k, [args.drift_at] * k, [args.policy] * k, [spec] * k))
    else:
        results = [run_seed(s, args.rows, args.drift_at, args.policy, spec) for s in seeds]
    for r in results:
        log(
            f"seed {r['seed']}: {r['seconds']:.0f} s, pre {r['pre_drift_accuracy']:.3f}, post system "
            f"{r['system_post_drift_accuracy']:.3f} static {r['static_post_drift_accuracy']:.3f} oracle "
            f"{r['oracle_post_drift_accuracy']:.3f}, cycles to recover {r['cycles_to_recover']}, "
            f"challengers {r['challengers_added']}, exposure regret {r['exposure']['rows']}"
        )
        if r["shadow_first"]:
            sf = r["shadow_first"]
            log(f"  shadow first: post {sf['post_drift_accuracy']:.3f}, cycles to recover {sf['cycles_to_recover']}, "
                f"exposure regret {sf['exposure']['rows']}, added {sf['challengers_added']}, graduated "
                f"{sf['graduated']}, retired in shadow {sf['retired_in_shadow']}")
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
