#!/usr/bin/env python
"""Contextual routing benchmark: per-segment Thompson sampling in a churn world (issue 16).

Usage::

    python bench/contextual.py [--seeds N] [--ext-seeds N] [--horizon T] [--quick] [--json PATH] [--no-readme]

The world. Two churn models serve the default experiment's requests (features of
``gateway.sim.churn``); the reward is 1 when the model's prediction is right. Both are trained
by the gateway's own recipes (``gateway.learning.artifacts.train``) on the bootstrap data set
(``make_churn(4000, seed=7)``): the logistic regression on its basic-plan customers (a
basic-plan specialist), XGBoost on its pro and enterprise customers plus the first 80
basic-plan ones (a premium-plan model that has seen few basic customers). Their accuracy per
plan, measured on 200,000 fresh rows (``make_churn(200000, seed=12345)``), makes the world:
the logistic regression is better on the basic plan (by about 3 points), XGBoost on pro and
enterprise (by about 45). (With both trained on all rows, XGBoost wins every plan and there
is nothing to route.) Routing sees only the plan, so a request's reward given its plan and the
model is Bernoulli with that plan's accuracy: the benchmark draws plans with
``make_churn``'s frequencies (45/35/20%) and rewards from those rates, which is the same
distribution as streaming real rows. Every policy runs on the same per-seed streams (plans and
both models' potential rewards drawn up front), so differences between policies are paired.

Policies (T = 50,000 requests per seed):

* contextual Thompson (``gateway.bandit.contextual``): one segment per plan, Beta(1, 1)
  prior, each segment's posterior shrunk toward the variant's overall one (``strength`` 20),
  uniform in a segment until both variants have 200 rewards there (the default policy's
  burn-in), then probability matching floored at ``min_weight`` 0.01; refreshed every 10
  requests like the router; per-segment promotion by ``segment_decisions`` (mSPRT at
  alpha / 3 plus the default policy's gates) moves a segment's traffic to its champion.
  Variants: without promotion; burn-in and min_samples 50; burn-in 0 (shrinkage alone, fixed
  or empirical-Bayes strength); no burn-in and no floor (classic Thompson sampling).
* non-contextual Thompson + promotion: the gateway today (``allocate`` + ``evaluate_sequential``).
* our linear Thompson sampling (``gateway.bandit.linear_ts``) on the plan one-hot, with the
  gateway's burn-in (200 rewards per variant overall) and floor, and without them.
* the best single model (XGBoost, always) and the per-segment oracle (regret 0).
* Vowpal Wabbit ``--cb_explore_adf -q SA`` (shared feature: the plan; action feature: the
  model; cost -reward, learning after every request) with its default exploration
  (epsilon-greedy 0.05) and with ``--squarecb`` (VW's wiki: a reduction to regression with
  optimal guarantees, competitive in its large-scale bake-off); MABWiser ``LinTS`` on the plan
  one-hot (its default alpha 1, and alpha 0.25, about the noise sd of these rewards),
  predicting and fitting in batches of 10 like our refresh. These run per request in Python,
  on the first ``--ext-seeds`` seeds of the same streams.

Regret is pseudo-regret against the per-segment oracle: the sum over requests of
(best accuracy for the request's plan - accuracy of the model served). A/A: both models
equal within each plan (XGBoost's accuracy); how often any segment is ever promoted within T.

Simulation shortcuts (ours only): seeds are vectorised; P(best) of two Beta (or Student-t)
posteriors uses the normal approximation (within ~1e-3 of the exact value once a variant has
200 rewards; ``bench/bandit.py``); the shares, the shrinkage and the decisions are the real
functions: ``shrunk_beta`` on the arrays, ``segment_decisions`` confirms every promotion the
vectorised mSPRT pre-screen proposes. The vectorised shares are checked against
``segment_shares`` / ``linear_shares`` on snapshots (reported).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402
from scipy.special import ndtr  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import cpu_seconds, machine, targets_table, write_readme  # noqa: E402

from gateway.bandit.beta import posterior  # noqa: E402
from gateway.bandit.contextual import (  # noqa: E402
    DEFAULT_STRENGTH,
    empirical_strength,
    segment_shares,
    shrunk_beta,
)
from gateway.bandit.linear_routing import linear_shares  # noqa: E402
from gateway.bandit.linear_ts import LinearPrior, LinearStats, linear_posterior, predictive  # noqa: E402
from gateway.bandit.promotion import PromotionRule  # noqa: E402
from gateway.bandit.segment_promotion import segment_decisions  # noqa: E402
from gateway.policy import Policy  # noqa: E402
from gateway.bandit.sequential import DEFAULT_ALPHA, DEFAULT_TAU2, evaluate_sequential, sequential_evidence  # noqa: E402

START, END = "<!-- contextual:start -->", "<!-- contextual:end -->"
PLANS = ("basic", "pro", "enterprise")
PLAN_P = np.array([0.45, 0.35, 0.20])  # gateway.sim.churn.make_churn's plan frequencies
ARMS = ("logreg", "xgb")
BATCH = 10
BURN_IN = 200  # the default policy's promotion.min_samples, also its burn-in
# Contextual routing's per-segment burn-in and promotion minimum, and the shrinkage strength: the
# gateway's defaults (Policy.segment_burn_in, Policy.context_strength).
SEGMENT_BURN_IN = Policy.model_fields["segment_burn_in"].default
STRENGTH = Policy.model_fields["context_strength"].default
MIN_WEIGHT = 0.01
PROB_BEST, MAX_LOSS = 0.95, 0.0025
PRESCREEN = 0.90
STREAM_SEED, POLICY_SEED = 2024, 7


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the world


def churn_world() -> tuple[np.ndarray, dict]:
    """Per-plan accuracy of the two models, shape (plans, arms), and how they were made."""
    from gateway.learning import artifacts
    from gateway.learning.features import FeatureEncoder
    from gateway.policy import Feature
    from gateway.sim.churn import FEATURES, make_churn

    enc = FeatureEncoder([Feature(**f) for f in FEATURES])
    rows, y = make_churn(4000, 7)
    X = enc.encode(rows)
    plan = np.array([r[3] for r in rows])
    basic = np.flatnonzero(plan == "basic")
    lr = artifacts.train("logistic_regression", X[basic], y[basic], seed=7)
    keep = np.concatenate([np.flatnonzero(plan != "basic"), basic[:80]])
    xgb = artifacts.train("xgboost", X[keep], y[keep], seed=7)
    rt, yt = make_churn(200_000, 12_345)
    Xt = enc.encode(rt)
    pt = np.array([r[3] for r in rt])
    rates = np.zeros((len(PLANS), len(ARMS)))
    for j, model in enumerate((lr, xgb)):
        pred = model.predict(Xt)
        for p, name in enumerate(PLANS):
            m = pt == name
            rates[p, j] = float((pred[m] == yt[m]).mean())
    info = {"train_rows": {"logreg": int(basic.size), "xgb": int(keep.size)}, "test_rows": 200_000}
    return rates, info


def one_stream(rates: np.ndarray, i: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Seed i's stream: plans (T,) and both arms' potential 0/1 rewards (T, k)."""
    rng = np.random.default_rng([STREAM_SEED, i])
    plan = rng.choice(len(PLAN_P), size=horizon, p=PLAN_P).astype(np.int8)
    rewards = rng.random((horizon, rates.shape[1])) < rates[plan]
    return plan, rewards


def streams(rates: np.ndarray, seeds: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    plans = np.empty((seeds, horizon), dtype=np.int8)
    rew = np.empty((seeds, horizon, rates.shape[1]), dtype=bool)
    for i in range(seeds):
        plans[i], rew[i] = one_stream(rates, i, horizon)
    return plans, rew


# --------------------------------------------------------------------------- our policies


@dataclass
class Rule:
    name: str
    scope: str  # segment | overall
    n_segments: int  # Bonferroni divisor (segment scope)
    active: bool  # its promotions move traffic
    min_samples: int = BURN_IN
    first: np.ndarray = field(default=None)  # type: ignore[assignment]  (S, P) or (S,)
    champion: np.ndarray = field(default=None)  # type: ignore[assignment]


@dataclass
class Run:
    name: str
    regret: np.ndarray
    reward: np.ndarray
    rules: dict[str, Rule]
    seconds: float
    snapshots: list = field(default_factory=list)


def _moments(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = a + b
    return a / t, a * b / (t * t * (t + 1.0))


def _p1(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Normal-approximation P(arm 1 is best) of two arms (last axis)."""
    return ndtr((m[..., 1] - m[..., 0]) / np.sqrt(np.maximum(v[..., 0] + v[..., 1], 1e-300)))


def simulate(
    name: str,
    plans: np.ndarray,
    rew: np.ndarray,
    rates: np.ndarray,
    *,
    mode: str = "contextual",  # contextual | pooled | linear
    burn_in: int = BURN_IN,
    min_weight: float = MIN_WEIGHT,
    strength: float | str = DEFAULT_STRENGTH,
    rules: list[Rule] | None = None,
    seed: int = 0,
    snap_steps: tuple[int, ...] = (),
    snap_seeds: int = 6,
) -> Run:
    t0 = time.perf_counter()
    S, T = plans.shape
    P, k = rates.shape
    assert k == 2, "the vectorised simulation is written for two arms"
    rng = np.random.default_rng([POLICY_SEED, seed])
    seg_n = np.zeros((S, P, k))
    seg_s = np.zeros((S, P, k))
    regret = np.zeros(S)
    reward = np.zeros(S)
    gap = rates.max(axis=1, keepdims=True) - rates
    sidx = np.arange(S)[:, None]
    rules = rules or []
    for r in rules:
        shape = (S, P) if r.scope == "segment" else (S,)
        r.first = np.full(shape, -1, dtype=np.int64)
        r.champion = np.full(shape, -1, dtype=np.int64)
    prior = LinearPrior()
    eye = np.eye(P)
    snaps = []
    for step in range(T // BATCH):
        on, os_ = seg_n.sum(axis=1), seg_s.sum(axis=1)
        # ---- share of arm 1 per seed and segment, (S, P)
        if mode == "contextual":
            w_s = empirical_strength(seg_n, seg_s)[:, None, :] if strength == "auto" else strength
            a, b = shrunk_beta(1.0, 1.0, on[:, None, :], os_[:, None, :], seg_n, seg_s, w_s)
            w1 = np.clip(_p1(*_moments(a, b)), min_weight, 1.0 - min_weight)
            w1 = np.where((seg_n < burn_in).any(axis=-1), 0.5, w1)
        elif mode == "pooled":
            a, b = posterior(1.0, 1.0, on, os_)
            w = np.clip(_p1(*_moments(a, b)), min_weight, 1.0 - min_weight)
            w = np.where((on < burn_in).any(axis=-1), 0.5, w)
            w1 = np.repeat(w[:, None], P, axis=1)
        elif mode == "linear":
            # One-hot contexts: X'X is diagonal with the per-plan counts, X'y the per-plan sums,
            # y'y the reward sum (0/1 rewards): the exact sufficient statistics.
            st = LinearStats(on, np.einsum("spk,pq->skpq", seg_n, eye), np.swapaxes(seg_s, 1, 2), os_)
            loc, scale, df = predictive(linear_posterior(prior, st), eye)  # (S, P, k), (S, k)
            var = scale * scale * (df / np.maximum(df - 2.0, 1e-9))[:, None, :]
            w = np.clip(_p1(loc, var), min_weight, 1.0 - min_weight)
            w1 = np.where((on < burn_in).any(axis=-1)[:, None], 0.5, w)
        else:
            raise ValueError(mode)
        for r in rules:
            if not r.active:
                continue
            if r.scope == "segment":
                w1 = np.where(r.champion >= 0, r.champion.astype(float), w1)
            else:
                w1 = np.where((r.champion >= 0)[:, None], r.champion[:, None].astype(float), w1)
        if step in snap_steps:
            snaps.append((step, seg_n[:snap_seeds].copy(), seg_s[:snap_seeds].copy(), w1[:snap_seeds].copy()))
        # ---- route and reward a batch of requests
        lo = step * BATCH
        pl = plans[:, lo:lo + BATCH].astype(np.intp)
        u = rng.random((S, BATCH))
        arm = (u >= 1.0 - w1[sidx, pl]).astype(np.intp)  # choose(): arm 0 owns [0, w0)
        got = rew[sidx, lo + np.arange(BATCH)[None, :], arm]
        regret += gap[pl, arm].sum(axis=1)
        reward += got.sum(axis=1)
        flat = ((sidx * P + pl) * k + arm).ravel()
        seg_n += np.bincount(flat, minlength=S * P * k).reshape(S, P, k)
        seg_s += np.bincount(flat, weights=got.ravel().astype(float), minlength=S * P * k).reshape(S, P, k)
        total = lo + BATCH
        # ---- promotion rules, checked every batch
        for r in rules:
            _check_rule(r, seg_n, seg_s, total)
    return Run(name, regret, reward, {r.name: r for r in rules}, time.perf_counter() - t0, snaps)


def _check_rule(r: Rule, seg_n: np.ndarray, seg_s: np.ndarray, total: int) -> None:
    if r.scope == "segment":
        n, s = seg_n, seg_s
        level = DEFAULT_ALPHA / r.n_segments
    else:
        n, s = seg_n.sum(axis=1), seg_s.sum(axis=1)
        level = DEFAULT_ALPHA
    rule = PromotionRule(PROB_BEST, MAX_LOSS, r.min_samples)
    open_ = (r.first < 0) & (n.min(axis=-1) >= r.min_samples)
    if not open_.any():
        return
    p1 = _p1(*_moments(1.0 + s, 1.0 + n - s))
    open_ &= np.maximum(p1, 1.0 - p1) >= PRESCREEN
    idx = np.argwhere(open_)
    if idx.size == 0:
        return
    sel = tuple(idx.T)
    leader, _ = sequential_evidence(n[sel], s[sel], level, DEFAULT_TAU2)
    for row in idx[leader >= 0]:
        i = tuple(row)
        if r.scope == "segment":
            key = PLANS[i[1]]
            d = segment_decisions(list(ARMS), {key: (n[i], s[i])}, rule, 0.0, alpha=DEFAULT_ALPHA,
                                  n_segments=r.n_segments)[key]
        else:
            a, b = posterior(1.0, 1.0, n[i], s[i])
            d = evaluate_sequential(list(ARMS), a, b, n[i], s[i], rule, 0.0, alpha=level, tau2=DEFAULT_TAU2)
        if d.promoted:
            r.first[i], r.champion[i] = total, ARMS.index(d.variant)


def fidelity(run: Run, mode: str, strength: float | str = DEFAULT_STRENGTH, burn_in: int = BURN_IN) -> float:
    """Largest |vectorised share - the real function's share| over the run's snapshots."""
    worst = 0.0
    for _, seg_n, seg_s, w1 in run.snapshots:
        for j in range(seg_n.shape[0]):
            on, os_ = seg_n[j].sum(axis=0), seg_s[j].sum(axis=0)
            if mode == "contextual":
                alloc = segment_shares(ARMS, (on, os_), {p: (seg_n[j, i], seg_s[j, i]) for i, p in enumerate(PLANS)},
                                       min_weight=MIN_WEIGHT, burn_in=burn_in, strength=strength)
                real = np.array([alloc.shares[p]["xgb"] for p in PLANS])
            else:
                st = LinearStats(on, np.einsum("pk,pq->kpq", seg_n[j], np.eye(len(PLANS))), seg_s[j].T, os_)
                real = linear_shares(LinearPrior(), st, np.eye(len(PLANS)), min_weight=MIN_WEIGHT, burn_in=burn_in,
                                     draws=20_000)[:, 1]
            worst = max(worst, float(np.abs(real - w1[j]).max()))
    return worst


# --------------------------------------------------------------------------- external libraries


def vw_regret(rates: np.ndarray, seeds: list[int], horizon: int, explore: str) -> np.ndarray:
    import vowpalwabbit

    gap = rates.max(axis=1, keepdims=True) - rates
    out = np.zeros((len(seeds), 2))
    shared = [f"shared |S plan={p}" for p in PLANS]
    actions = [f"|A model={a}" for a in ARMS]
    for row, i in enumerate(seeds):
        plan, rew = one_stream(rates, i, horizon)
        rng = np.random.default_rng([POLICY_SEED, 1000 + i])
        vw = vowpalwabbit.Workspace(f"--cb_explore_adf -q SA --quiet --random_seed {i} {explore}")
        reg = got = 0.0
        us = rng.random(horizon)
        for t in range(horizon):
            p = int(plan[t])
            ex = [shared[p], *actions]
            pmf = vw.predict(ex)
            a = 0 if us[t] < pmf[0] else 1
            r = float(rew[t, a])
            ex[1 + a] = f"0:{-r}:{pmf[a]} {actions[a]}"
            vw.learn(ex)
            reg += gap[p, a]
            got += r
        vw.finish()
        out[row] = reg, got
    return out


def mab_regret(rates: np.ndarray, seeds: list[int], horizon: int, alpha: float) -> np.ndarray:
    from mabwiser.mab import MAB, LearningPolicy

    gap = rates.max(axis=1, keepdims=True) - rates
    out = np.zeros((len(seeds), 2))
    eye = np.eye(len(PLANS))
    for row, i in enumerate(seeds):
        plan, rew = one_stream(rates, i, horizon)
        mab = MAB([0, 1], LearningPolicy.LinTS(alpha=alpha, l2_lambda=1.0), seed=1000 + i)
        mab.fit([], [], contexts=np.empty((0, len(PLANS))))
        reg = got = 0.0
        for lo in range(0, horizon, BATCH):
            pl = plan[lo:lo + BATCH].astype(np.intp)
            ctx = eye[pl]
            dec = np.asarray(mab.predict(ctx), dtype=np.intp).reshape(-1)
            r = rew[lo + np.arange(pl.size), dec]
            mab.partial_fit(dec, r.astype(int), ctx)
            reg += gap[pl, dec].sum()
            got += r.sum()
        out[row] = reg, got
    return out


def external(kind: str, arg, rates: np.ndarray, seeds: list[int], horizon: int) -> tuple[str, np.ndarray, float]:
    t0 = time.perf_counter()
    res = vw_regret(rates, seeds, horizon, arg) if kind == "vw" else mab_regret(rates, seeds, horizon, arg)
    return kind, res, time.perf_counter() - t0


# --------------------------------------------------------------------------- reporting


def rate_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Rate with a Clopper-Pearson 95% interval."""
    k, n = int(x.sum()), x.size
    lo = stats.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return k / n, float(lo), float(hi)


def fmt_rate(x: np.ndarray) -> str:
    r, lo, hi = rate_ci(np.asarray(x, dtype=bool))
    return f"{100 * r:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def mean_se(x: np.ndarray) -> str:
    x = np.asarray(x, dtype=float)
    se = x.std(ddof=1) / math.sqrt(x.size) if x.size > 1 else float("nan")
    return f"{x.mean():,.1f} ± {se:,.1f}"


def spread(x: np.ndarray) -> str:
    q = np.percentile(x, [5, 50, 95])
    return f"{q[1]:,.0f} [{q[0]:,.0f}, {q[2]:,.0f}]"


def median_first(first: np.ndarray, horizon: int) -> str:
    t = np.where(first >= 0, first, np.inf).astype(float)
    m = float(np.median(t))
    return f"> {horizon:,}" if not math.isfinite(m) else f"{m:,.0f}"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=500, help="seeds of our (vectorised) policies, >= 200 (default 500)")
    ap.add_argument("--ext-seeds", type=int, default=40, help="seeds of Vowpal Wabbit and MABWiser (default 40)")
    ap.add_argument("--horizon", type=int, default=50_000, help="requests per seed (default 50,000)")
    ap.add_argument("--workers", type=int, default=2, help="processes for the per-request libraries (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 40 seeds, 4 external, T = 20,000, no README")
    ap.add_argument("--json", type=Path, help="write the headline figures as JSON here")
    ap.add_argument("--no-readme", action="store_true", help="do not update bench/README.md")
    ap.add_argument("--readme", type=Path, default=ROOT / "bench" / "README.md")
    args = ap.parse_args(argv)
    S = 40 if args.quick else args.seeds
    N = 4 if args.quick else args.ext_seeds
    T = 20_000 if args.quick else args.horizon
    if T % BATCH:
        ap.error(f"--horizon must be a multiple of {BATCH}")
    N = min(N, S)
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]

    log("training the two churn models ...")
    rates, info = churn_world()
    best = rates.argmax(axis=1)
    log("  per-plan accuracy " + ", ".join(f"{p}: {rates[i, 0]:.4f}/{rates[i, 1]:.4f}" for i, p in enumerate(PLANS)))
    assert best[0] == 0 and (best[1:] == 1).all(), "the world needs logreg best on basic, xgb on the others"

    ext_seeds = list(range(N))
    jobs = [("vw", "--epsilon 0.05"), ("vw", "--squarecb"), ("mab", 1.0), ("mab", 0.25)]
    pool = ProcessPoolExecutor(max_workers=max(1, args.workers))
    # Each library's seeds in chunks, so the workers stay busy to the end.
    chunks = max(1, args.workers)
    futures = []
    for kind, arg in jobs:
        for c in range(chunks):
            part = ext_seeds[c::chunks]
            if part:
                futures.append(((kind, arg, tuple(part)), pool.submit(external, kind, arg, rates, part, T)))

    log(f"streams: {S} seeds x {T:,} requests ...")
    plans, rew = streams(rates, S, T)
    n_seg = len(PLANS)
    snap = (30, 80, 200, 600, 1500)

    def seg_rules(min_samples: int = BURN_IN, uncorrected: bool = False) -> list[Rule]:
        rs = [Rule("bonferroni", "segment", n_seg, True, min_samples)]
        if uncorrected:
            rs.append(Rule("uncorrected", "segment", 1, False, min_samples))
        return rs

    # key: (label, simulate() arguments); the first is the headline (the default policy's settings).
    specs: dict[str, tuple[str, dict]] = {
        "ctx": (f"**contextual Thompson** (the gateway's defaults): segment_burn_in {SEGMENT_BURN_IN}, floor 0.01, "
                f"strength {STRENGTH:g}, per-segment promotion (min_samples {SEGMENT_BURN_IN})",
                dict(burn_in=SEGMENT_BURN_IN, strength=STRENGTH, rules=seg_rules(SEGMENT_BURN_IN))),
        "ctx_nopromo": ("contextual Thompson as above, no promotion", dict(burn_in=SEGMENT_BURN_IN, strength=STRENGTH)),
        "ctx_b200": ("contextual Thompson, burn-in 200 per segment (the overall burn-in; the gateway before), floor "
                     "0.01, strength 20, promotion (min_samples 200)", dict(rules=seg_rules(), snap_steps=snap)),
        "ctx_b50": ("contextual Thompson, burn-in 50, floor 0.01, strength 20, promotion with min_samples 50",
                    dict(burn_in=50, rules=seg_rules(50))),
        "ctx_b0": ("contextual Thompson, burn-in 0 (shrinkage alone), floor 0.01, strength 20, promotion "
                   "(min_samples 200)", dict(burn_in=0, rules=seg_rules(), snap_steps=snap)),
        "ctx_b0_auto": ("contextual Thompson, burn-in 0, floor 0.01, empirical-Bayes strength, promotion "
                        "(min_samples 200)", dict(burn_in=0, strength="auto", rules=seg_rules())),
        "ctx_b0_s1": ("contextual Thompson, burn-in 0, floor 0.01, strength 1 (next to no shrinkage), promotion "
                      "(min_samples 200)", dict(burn_in=0, strength=1.0, rules=seg_rules())),
        "ctx_classic": ("contextual Thompson, no burn-in, no floor, strength 20, no promotion",
                        dict(burn_in=0, min_weight=0.0)),
        "ctx_classic_auto": ("contextual Thompson, no burn-in, no floor, empirical-Bayes strength, no promotion",
                             dict(burn_in=0, min_weight=0.0, strength="auto")),
        "ctx_classic_s1": ("contextual Thompson, no burn-in, no floor, strength 1, no promotion",
                           dict(burn_in=0, min_weight=0.0, strength=1.0)),
        "pooled": ("non-contextual Thompson + promotion (the gateway today: burn-in 200, floor 0.01)",
                   dict(mode="pooled", rules=[Rule("overall", "overall", 1, True)])),
        "linear": ("our linear TS (`linear_ts`, plan one-hot): burn-in 200, floor 0.01, no promotion",
                   dict(mode="linear", snap_steps=snap)),
        "linear_classic": ("our linear TS (plan one-hot): no burn-in, no floor", dict(mode="linear", burn_in=0,
                                                                                     min_weight=0.0)),
    }
    runs: dict[str, Run] = {}
    for j, (key, (_, kw)) in enumerate(specs.items()):
        kw = {"mode": "contextual", **kw}
        log(f"{key} ...")
        runs[key] = simulate(key, plans, rew, rates, seed=j, **kw)
        log(f"  {runs[key].seconds:.0f}s")
    gap = rates.max(axis=1, keepdims=True) - rates
    oracle_reward, single_regret = np.zeros(S), np.zeros(S)
    for lo in range(0, S, 50):  # chunks of seeds: (seeds, T) index arrays are large
        pl = plans[lo:lo + 50].astype(np.intp)
        oracle_reward[lo:lo + 50] = np.take_along_axis(rew[lo:lo + 50], best[pl][..., None], axis=2).sum(axis=(1, 2))
        single_regret[lo:lo + 50] = gap[pl, 1].sum(axis=1)
    single_reward = rew[:, :, 1].sum(axis=1).astype(float)

    log("A/A ...")
    aa_rates = np.repeat(rates[:, 1:2], 2, axis=1)
    del plans, rew
    aa_plans, aa_rew = streams(aa_rates, S, T)
    aa_specs = {
        f"segment_burn_in {SEGMENT_BURN_IN} (the default)": dict(burn_in=SEGMENT_BURN_IN, strength=STRENGTH,
                                                             rules=seg_rules(SEGMENT_BURN_IN, uncorrected=True)),
        "burn-in 200, min_samples 200": dict(rules=seg_rules(uncorrected=True)),
        "burn-in 50, min_samples 50": dict(burn_in=50, rules=seg_rules(50, uncorrected=True)),
        "burn-in 0, empirical-Bayes strength, min_samples 200": dict(burn_in=0, strength="auto",
                                                                     rules=seg_rules(uncorrected=True)),
    }
    aa_runs: dict[str, Run] = {}
    for j, (label, kw) in enumerate(aa_specs.items()):
        aa_runs[label] = simulate(label, aa_plans, aa_rew, aa_rates, mode="contextual", seed=20 + j, **kw)
    del aa_plans, aa_rew
    log(f"  {sum(r.seconds for r in aa_runs.values()):.0f}s")

    fid_ctx = fidelity(runs["ctx_b200"], "contextual")
    fid_ctx0 = fidelity(runs["ctx_b0"], "contextual", burn_in=0)
    fid_lin = fidelity(runs["linear"], "linear")

    log("waiting for Vowpal Wabbit and MABWiser ...")
    ext: dict[tuple, np.ndarray] = {}
    ext_seconds: dict[tuple, float] = {}
    for (kind, arg, part), fut in futures:
        _, res, sec = fut.result()
        full = ext.setdefault((kind, arg), np.zeros((N, 2)))
        full[list(part)] = res
        ext_seconds[(kind, arg)] = ext_seconds.get((kind, arg), 0.0) + sec
    pool.shutdown()
    elapsed = time.perf_counter() - t_start

    # ---- report
    rows: list[str] = []
    out: dict[str, object] = {"seeds": S, "ext_seeds": N, "horizon": T, "rates": rates.tolist()}
    rows.append(f"**The world**: per-plan accuracy of the two models (reward = prediction right), measured on "
                f"{info['test_rows']:,} fresh rows; plans drawn 45/35/20%. Logistic regression trained on the "
                f"bootstrap set's {info['train_rows']['logreg']:,} basic-plan rows, XGBoost on its "
                f"{info['train_rows']['xgb']:,} pro/enterprise rows plus 80 basic ones "
                "(`gateway.learning.artifacts.train`; trained on all rows, XGBoost wins every plan). Rewards are "
                "drawn per plan from these rates: the same distribution as streaming real rows, since routing "
                "sees only the plan.")
    rows.append("")
    rows.append("| plan | traffic | logreg | xgb | best | gap |")
    rows.append("| --- | --- | --- | --- | --- | --- |")
    for i, p in enumerate(PLANS):
        rows.append(f"| {p} | {100 * PLAN_P[i]:.0f}% | {100 * rates[i, 0]:.2f}% | {100 * rates[i, 1]:.2f}% | "
                    f"{ARMS[best[i]]} | {100 * (rates[i].max() - rates[i].min()):.2f} pts |")
    oracle_rate = float((PLAN_P * rates.max(axis=1)).sum())
    rows.append("")
    rows.append(f"Expected accuracy: oracle {100 * oracle_rate:.2f}%, always xgb {100 * float(PLAN_P @ rates[:, 1]):.2f}%, "
                f"always logreg {100 * float(PLAN_P @ rates[:, 0]):.2f}%.")
    rows.append("")
    rows.append(f"**Regret against the per-segment oracle at T = {T:,}** (pseudo-regret: expected correct "
                "predictions lost, Σ best accuracy of the request's plan − accuracy of the model served; mean ± s.e. "
                "and median [5%, 95%] over seeds, all on the same streams; reward: correct predictions, mean per "
                f"seed). The last column restricts every policy to the {N} seeds the libraries ran on.")
    rows.append("")
    rows.append(f"| policy | seeds | regret | median [5%, 95%] | reward | regret, first {N} seeds |")
    rows.append("| --- | --- | --- | --- | --- | --- |")

    def row(label: str, reg: np.ndarray, rwd: np.ndarray, seeds: int) -> None:
        rows.append(f"| {label} | {seeds} | {mean_se(reg)} | {spread(reg)} | {rwd.mean():,.0f} | "
                    f"{mean_se(reg[:N])} |")

    for key, (label, _) in specs.items():
        row(label, runs[key].regret, runs[key].reward, S)
    row("best single model (xgb, always: what promotion reaches at best without context)", single_regret,
        single_reward, S)
    rows.append(f"| per-segment oracle | {S} | 0 | 0 | {oracle_reward.mean():,.0f} | 0 |")
    ext_labels = {
        ("vw", "--epsilon 0.05"): "Vowpal Wabbit `--cb_explore_adf -q SA` (default exploration: ε-greedy 0.05)",
        ("vw", "--squarecb"): "Vowpal Wabbit `--cb_explore_adf -q SA --squarecb`",
        ("mab", 1.0): "MABWiser `LinTS` (plan one-hot, α = 1: its default)",
        ("mab", 0.25): "MABWiser `LinTS` (plan one-hot, α = 0.25 ≈ the rewards' noise sd)",
    }
    for key, res in ext.items():
        rows.append(f"| {ext_labels[key]} | {N} | {mean_se(res[:, 0])} | {spread(res[:, 0])} | "
                    f"{res[:, 1].mean():,.0f} | {mean_se(res[:, 0])} |")
    rows.append("")
    rows.append(f"**Paired on the first {N} seeds** (same streams): each of our policies minus each library, "
                "mean ± s.e. of the per-seed difference (negative: ours lower).")
    rows.append("")
    compare_keys = ["ctx", "ctx_b200", "ctx_b50", "ctx_b0_auto", "ctx_b0_s1", "ctx_classic_s1", "linear_classic"]
    short_ext = {("vw", "--epsilon 0.05"): "VW ε-greedy 0.05", ("vw", "--squarecb"): "VW SquareCB",
                 ("mab", 1.0): "MABWiser LinTS α = 1", ("mab", 0.25): "MABWiser LinTS α = 0.25"}
    rows.append("| ours − | " + " | ".join(short_ext[k] for k in ext) + " |")
    rows.append("| --- |" + " --- |" * len(ext))
    comparisons: dict[str, dict] = {}
    for ok_key in compare_keys:
        ours = runs[ok_key].regret[:N]
        cells = []
        for key, res in ext.items():
            diff = ours - res[:, 0]
            comparisons[f"{ok_key} vs {key[0]} {key[1]}"] = {
                "ours": float(ours.mean()), "theirs": float(res[:, 0].mean()), "diff_mean": float(diff.mean()),
                "diff_se": float(diff.std(ddof=1) / math.sqrt(N)) if N > 1 else None,
            }
            cells.append(mean_se(diff))
        rows.append(f"| {ok_key}: {specs[ok_key][0].split(':')[0].replace('**', '')} | " + " | ".join(cells) + " |")
    rows.append("")
    rows.append("Keys: ctx = the headline (the gateway's defaults); ctx_b200 = burn-in 200 per segment; ctx_b50 = burn-in 50; ctx_b0_auto = burn-in 0 with empirical-Bayes "
                "strength (floor kept); ctx_b0_s1 = burn-in 0, strength 1 (floor kept); ctx_classic_s1 = no "
                "burn-in, no floor, strength 1; linear_classic = our linear TS without burn-in or floor.")
    rows.append("")

    burn_cost = BURN_IN * float((rates.max(axis=1) - rates.min(axis=1)).sum())
    rows.append(f"Reading: a uniform burn-in of {BURN_IN} rewards per variant *per segment* costs at least "
                f"{BURN_IN} × Σ gaps = **{burn_cost:,.0f}** here (the worse model serves {BURN_IN} requests in each "
                f"plan, {BURN_IN} × 0.47 in pro alone), most of ctx_b200's {runs['ctx_b200'].regret.mean():,.0f}; "
                f"hence the gateway's segment_burn_in of {SEGMENT_BURN_IN} "
                f"({SEGMENT_BURN_IN * float((rates.max(axis=1) - rates.min(axis=1)).sum()):,.0f}). "
                "Per-segment promotion then stops the floor's cost in pro "
                f"and enterprise (without it: {runs['ctx_nopromo'].regret.mean():,.0f}).")
    rows.append("")

    # per-segment promotion
    rows.append(f"**Per-segment promotion** ({S} seeds, rule checked every {BATCH} requests: mSPRT at α/3 = "
                f"{DEFAULT_ALPHA / 3:.4f} per segment plus the default gates, prob_best ≥ 0.95 and expected loss "
                "≤ 0.0025, `min_samples` rewards per variant in the segment). Promoted by T, wrong champions "
                "(95% Clopper-Pearson), median requests (all plans) to the promotion.")
    rows.append("")
    rows.append("| run | basic (logreg best) | pro (xgb best) | enterprise (xgb best) | any segment wrong |")
    rows.append("| --- | --- | --- | --- | --- |")
    wrong_rates: dict[str, float] = {}
    for key in ("ctx", "ctx_b200", "ctx_b50", "ctx_b0", "ctx_b0_auto", "ctx_b0_s1"):
        r = runs[key].rules["bonferroni"]
        cells = []
        wrong_any = np.zeros(S, dtype=bool)
        for i in range(n_seg):
            done = r.first[:, i] >= 0
            wrong = done & (r.champion[:, i] != best[i])
            wrong_any |= wrong
            cells.append(f"{100 * done.mean():.1f}%, wrong {100 * wrong.mean():.1f}%, median "
                         f"{median_first(r.first[:, i], T)}")
        wrong_rates[key] = float(wrong_any.mean())
        rows.append(f"| {key} | " + " | ".join(cells) + f" | {fmt_rate(wrong_any)} |")
    pr = runs["pooled"].rules["overall"]
    rows.append("")
    rows.append(f"The non-contextual gateway promoted {ARMS[1]} overall in {100 * (pr.champion == 1).mean():.1f}% of "
                f"seeds (median {median_first(pr.first, T)} requests), {ARMS[0]} in "
                f"{100 * (pr.champion == 0).mean():.1f}%.")
    rows.append("")

    # A/A
    rows.append(f"**A/A per segment**: both models at XGBoost's accuracy in every plan, {S} seeds, T = {T:,}, "
                "contextual Thompson with per-segment promotion (floor 0.01). Rate of ever promoting (95% "
                "Clopper-Pearson). The uncorrected rule (α per segment) is tracked alongside; only the corrected "
                "one's promotions move traffic.")
    rows.append("")
    rows.append("| run | rule | any segment | basic | pro | enterprise |")
    rows.append("| --- | --- | --- | --- | --- | --- |")
    aa_rates_out: dict[str, dict[str, float]] = {}
    for label, run in aa_runs.items():
        for name, text in (("bonferroni", "α/3 per segment (`segment_decisions`)"),
                           ("uncorrected", "α per segment (no correction)")):
            f = run.rules[name].first >= 0
            aa_rates_out.setdefault(label, {})[name] = float(f.any(axis=1).mean())
            rows.append(f"| {label} | {text} | {fmt_rate(f.any(axis=1))} | " +
                        " | ".join(fmt_rate(f[:, i]) for i in range(n_seg)) + " |")
    rows.append("")
    rows.append(f"Fidelity of the vectorised shares (normal approximation) to the real functions on "
                f"{len(snap)} snapshots × 6 seeds (steps {', '.join(str(BATCH * s) for s in snap)}): largest "
                f"difference from `segment_shares` (20,000 draws) **{fid_ctx:.4f}** with burn-in 200, "
                f"**{fid_ctx0:.4f}** with burn-in 0 (young segments, few rewards, where the normal "
                f"approximation of a Beta is rough); from `linear_shares` (20,000 draws) **{fid_lin:.4f}**.")
    rows.append("")

    head = runs["ctx"].regret[:N].mean()
    vw_best = min(float(v[:, 0].mean()) for k, v in ext.items() if k[0] == "vw")
    mab_best = min(float(v[:, 0].mean()) for k, v in ext.items() if k[0] == "mab")
    aa_worst = max(v["bonferroni"] for v in aa_rates_out.values())
    wrong_worst = max(wrong_rates.values())

    best_ours = min(compare_keys, key=lambda k: runs[k].regret[:N].mean())
    targets = [
        (f"headline regret ≤ Vowpal Wabbit's (better of the two explorations), same {N} seeds",
         f"{head:,.1f} vs {vw_best:,.1f}", head <= vw_best),
        (f"headline regret ≤ MABWiser LinTS's (better of the two α), same {N} seeds",
         f"{head:,.1f} vs {mab_best:,.1f}", head <= mab_best),
        (f"best of our variants ({best_ours}) ≤ both libraries", f"{runs[best_ours].regret[:N].mean():,.1f}",
         runs[best_ours].regret[:N].mean() <= min(vw_best, mab_best)),
        ("headline regret < the best single model's", f"{runs['ctx'].regret.mean():,.1f} vs "
         f"{single_regret.mean():,.1f}", runs["ctx"].regret.mean() < single_regret.mean()),
        ("A/A per segment: false promotions (any segment) ≤ 5%, worst of the A/A runs", f"{100 * aa_worst:.1f}%",
         aa_worst <= 0.05),
        ("wrong segment champions (any segment) ≤ 5%, worst of the promoting runs", f"{100 * wrong_worst:.1f}%",
         wrong_worst <= 0.05),
    ]
    rows += targets_table("**Targets**", targets)

    out.update({
        "regret": {k: float(v.regret.mean()) for k, v in runs.items()},
        "regret_first_ext_seeds": {k: float(v.regret[:N].mean()) for k, v in runs.items()},
        "regret_best_single": float(single_regret.mean()),
        "regret_external": {f"{k[0]} {k[1]}": float(v[:, 0].mean()) for k, v in ext.items()},
        "comparisons": comparisons,
        "aa_false_promotion_any_segment": aa_rates_out,
        "wrong_segment_champion_any": wrong_rates,
        "fidelity": {"contextual_burn_in_200": fid_ctx, "contextual_burn_in_0": fid_ctx0, "linear": fid_lin},
        "targets": {label: bool(ok) for label, _, ok in targets},
        "elapsed_s": round(elapsed, 1),
        "external_seconds": {f"{k[0]} {k[1]}": round(v, 1) for k, v in ext_seconds.items()},
    })
    short = {"vw": "VW", "mab": "MABWiser LinTS α ="}
    ext_cpu = ", ".join(f"{short[k[0]]} {k[1]}: {v:.0f} s" for k, v in ext_seconds.items())
    cmd = "python bench/contextual.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = [
        "## Contextual routing in a churn world (`bench/contextual.py`)",
        "",
        f"- date: {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        (f"- command: `{cmd.strip()}` (wall {elapsed:.0f} s, CPU {cpu_seconds():.0f} s; load average "
         f"{load_start:.1f} at start, shared machine)"),
        (f"- simulation: our policies vectorised over {S} seeds, shares refreshed and rules checked every {BATCH} "
         "requests, P(best) by the normal approximation, shrinkage, posteriors and decisions by the real functions "
         "(`gateway.bandit.contextual`, `gateway.bandit.linear_ts`); Vowpal Wabbit 9 and MABWiser 2.7 per request "
         f"(MABWiser in batches of {BATCH}) on the first {N} seeds of the same streams ({ext_cpu} of CPU)."),
        "",
    ]
    section = "\n".join(header + rows)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    if not (args.quick or args.no_readme):
        write_readme(args.readme, section, START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
