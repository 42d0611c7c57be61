#!/usr/bin/env python
"""Bandit benchmark: promotion validity, identification speed and regret.

Usage::

    python bench/bandit.py [--json PATH] [--seeds N] [--quick] [--no-readme]

Simulates the gateway's allocation and promotion loop for many seeds at once
(numpy arrays of shape (seeds, arms)) and reports:

1. A/A (two identical variants at 10%): how often each promotion rule ever
   promotes within 50,000 rewards when checked after every batch of 10
   rewards. "naive" = prob_best >= 0.95 alone; "current" = prob_best >= 0.95
   and expected loss <= 0.0025 (gateway.bandit.promotion); "sequential" =
   gateway.bandit.sequential.evaluate_sequential (mSPRT at alpha plus the
   Bayesian gates).
2. 10% vs 12%: total rewards until the correct promotion (median over seeds,
   never-promoted seeds count as infinite) against the fixed-horizon
   two-proportion sample size, and the wrong-promotion rate.
3. 10% vs 12%, T = 100,000: mean cumulative pseudo-regret (sum over requests
   of mu* - mu_chosen, in expected conversions) of the allocation policies
   without promotion, against the Lai-Robbins bound and a 50/50 split.
4. The same with four variants (10, 10.5, 11, 12%), on half the seeds.
5. The same three with Gaussian rewards (means 1.0 vs 1.1, sd 1: a
   standardized effect of 0.1), on half the seeds: Normal-Inverse-Gamma
   posteriors (gateway.bandit.gaussian.DEFAULT_PRIOR), the sequential rule is
   gateway.bandit.gaussian.evaluate_sequential (Welch t-mixture plus the
   Bayesian gates, expected loss in reward units). A batch's rewards are
   summarised exactly (mean N(mu, sd^2/c), centred sum of squares
   sd^2 chi2(c-1)); prob_best uses the normal approximation to the Student-t
   marginals (df >= 1000 after burn-in).

Fidelity to the gateway (src/gateway/decisions/allocation.py): uniform burn-in until
every arm has ``burn_in`` rewards, then probability-matching Thompson weights
(prob_best of the Beta(1+s, 1+n-s) posteriors) lifted to the floor by the same
rule as gateway.bandit.selection.apply_floor; the floor itself is
gateway.bandit.selection.floor_schedule, imported (``min_weight`` until every arm
has ``min_samples`` rewards, then decaying with the evidence down to
``min_weight / 10``), so the benchmark routes by the gateway's own schedule.
Weights are refreshed and
the promotion rule checked once per batch of 10 rewards (the router refreshes
every 100 ms, i.e. every 10 requests at 100 req/s); within a batch requests
are routed by a multinomial draw from the weights. Simulation shortcuts: the
per-batch prob_best (allocation and the naive/current rules) uses the normal
approximation to the Beta posteriors: closed form for 2 arms (within ~1e-3 of
the Beta answer for the >= 100 rewards per arm present after burn-in);
16-node Gauss-Hermite quadrature for 4 arms (within ~0.03 of Monte-Carlo on
random posteriors, worst when one posterior is much wider than another). The
4-arm runs refresh every 20 rewards to halve that cost. The sequential rule is decided by the real
``evaluate_sequential`` (20,000-draw Monte-Carlo gates) for every seed whose
vectorised mSPRT statistic rejects. MABWiser's Thompson sampling is run per
seed with predict/partial_fit batched by 20 requests, on fewer seeds (it costs
~0.3 ms per call). It and the gateway's rule are compared on the same seeds: each
seed fixes a reward table (the j-th reward of arm a, ``reward_table``) that both
read from, so the paired difference of their regrets is free of the luck of the
rewards, the larger part of either's spread.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.special import ndtr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _report import cpu_seconds, machine, targets_table, write_readme  # noqa: E402 (bench/ is on sys.path when run)

from gateway.bandit import gaussian
from gateway.bandit.beta import posterior
from gateway.bandit.promotion import PromotionRule
from gateway.bandit.selection import floor_schedule
from gateway.bandit.sequential import (
    DEFAULT_ALPHA,
    DEFAULT_TAU2,
    evaluate_sequential,
    mixture_tau2,
    sequential_evidence,
    top_two_weights,
)

START, END = "<!-- bandit:start -->", "<!-- bandit:end -->"
FLOOR_NOTE = ("gateway.bandit.selection.floor_schedule: min_weight 0.01 until every arm has min_samples rewards, "
              "then 0.01 · √(k · min_samples / rewards), at least 0.001")
BATCH = 10
PROB_BEST = 0.95
MAX_LOSS = 0.0025
# Seeds whose normal-approximation prob_best is below this skip the mSPRT (the
# Monte-Carlo gate needs >= 0.95; the approximation is good to ~1e-3).
PRESCREEN = 0.90
_GH_T, _GH_W = np.polynomial.hermite_e.hermegauss(16)
_GH_W = _GH_W / _GH_W.sum()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- statistics


def fixed_horizon_total(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Total rewards (both arms) of the two-sided two-proportion z-test, equal split."""
    za, zb = stats.norm.isf(alpha / 2), stats.norm.isf(1 - power)
    pbar = (p1 + p2) / 2
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return 2 * math.ceil(num**2 / (p1 - p2) ** 2)


def kl_bern(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def lai_robbins(mu: np.ndarray, horizon: int) -> float:
    best = float(mu.max())
    return sum((best - m) / kl_bern(m, best) for m in mu if m < best) * math.log(horizon)


def fixed_horizon_gauss(delta: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Total rewards (both arms) of the two-sided two-sample z-test, equal split."""
    za, zb = stats.norm.isf(alpha / 2), stats.norm.isf(1 - power)
    return 2 * math.ceil(2 * sd * sd * (za + zb) ** 2 / (delta * delta))


def lai_robbins_gauss(mu: np.ndarray, sd: float, horizon: int) -> float:
    """Sum of gap / KL(N(mu, sd^2), N(mu*, sd^2)) * ln T = sum of 2 sd^2 / gap * ln T (known variance;
    with unknown variance the KL is 0.5 ln(1 + gap^2 / sd^2), within 0.5% for gap = 0.1 sd)."""
    best = float(mu.max())
    return sum(2 * sd * sd / (best - m) for m in mu if m < best) * math.log(horizon)


def post_moments(n: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = 1.0 + s, 1.0 + n - s
    t = a + b
    return a / t, a * b / (t * t * (t + 1.0))


def gauss_moments(n: np.ndarray, s: np.ndarray, ss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the NIG posterior's Student-t marginal (gaussian.DEFAULT_PRIOR).

    The variance beta / ((alpha - 1) kappa) is infinite for alpha <= 1 (no data); alpha is
    floored at 1.5 there, which only matters before burn-in, when weights are uniform anyway.
    """
    mu, kappa, alpha, beta = gaussian.posterior(*gaussian.DEFAULT_PRIOR, n, s, ss)
    return mu, beta / (kappa * np.maximum(alpha - 1.0, 0.5))


def prob_best(n: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Normal-approximation P(arm is best) of the Beta posteriors, shape (S, k)."""
    return prob_best_m(*post_moments(n, s))


def prob_best_m(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Normal-approximation P(arm is best) from posterior means and variances, shape (S, k)."""
    sd = np.sqrt(v)
    if m.shape[1] == 2:
        p1 = ndtr((m[:, 1] - m[:, 0]) / np.sqrt(v[:, 0] + v[:, 1]))
        return np.stack([1.0 - p1, p1], axis=1)
    # P_i = E[prod_{j != i} Phi((X_i - m_j) / sd_j)], X_i ~ N(m_i, sd_i^2)
    x = m[:, :, None] + sd[:, :, None] * _GH_T  # (S, k, Q)
    cdf = ndtr((x[:, :, None, :] - m[:, None, :, None]) / sd[:, None, :, None])  # (S, i, j, Q)
    k = m.shape[1]
    cdf[:, np.arange(k), np.arange(k), :] = 1.0
    p = (cdf.prod(axis=2) * _GH_W).sum(axis=-1)
    return p / p.sum(axis=1, keepdims=True)


def loss_two(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Expected loss of each of 2 arms under the normal approximation, (S, 2)."""
    sd = np.sqrt(v[:, 0] + v[:, 1])
    d = m[:, 0] - m[:, 1]  # arm 0 minus arm 1

    def plus(mean: np.ndarray) -> np.ndarray:  # E[X^+], X ~ N(mean, sd^2)
        u = mean / sd
        return sd * np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi) + mean * ndtr(u)

    return np.stack([plus(-d), plus(d)], axis=1)


def apply_floor(w: np.ndarray, floor: float | np.ndarray) -> np.ndarray:
    """Row-wise gateway.bandit.selection.apply_floor; `floor` is one value or one per row."""
    floor = np.broadcast_to(np.asarray(floor, dtype=float).reshape(-1, 1), (w.shape[0], 1))
    if np.all(floor <= 0):
        return w / w.sum(axis=1, keepdims=True)
    w = w / w.sum(axis=1, keepdims=True)
    k = w.shape[1]
    fixed = np.zeros_like(w, dtype=bool)
    out = w
    for _ in range(k + 1):
        free = ~fixed
        remaining = 1.0 - floor * fixed.sum(axis=1, keepdims=True)
        mass = np.where(free, w, 0.0).sum(axis=1, keepdims=True)
        out = np.where(fixed, floor, remaining * w / np.maximum(mass, 1e-300))
        newly = free & (out < floor)
        if not newly.any():
            break
        fixed |= newly
    return out


# --------------------------------------------------------------------------- simulation


@dataclass
class Rule:
    name: str
    kind: str  # naive | current | sequential
    tau2: float = DEFAULT_TAU2
    alpha: float = DEFAULT_ALPHA
    min_samples: int = 500
    first: np.ndarray = field(default=None)  # type: ignore[assignment]
    arm: np.ndarray = field(default=None)  # type: ignore[assignment]
    regret_at: np.ndarray = field(default=None)  # type: ignore[assignment]


@dataclass
class Run:
    mu: np.ndarray
    horizon: int
    regret: np.ndarray
    rules: dict[str, Rule]
    arm_share: np.ndarray
    seconds: float
    # Regret accumulated until every arm had burn_in rewards (the uniform burn-in's part).
    burn_in_regret: np.ndarray = field(default=None)  # type: ignore[assignment]


def reward_table(mu, horizon: int, seed: int, i: int) -> np.ndarray:
    """Seed i's rewards, shape (k, horizon): entry [a, j] is the j-th reward arm a gives."""
    rng = np.random.default_rng([seed, i])
    return rng.random((len(mu), horizon)) < np.asarray(mu, dtype=float)[:, None]


def simulate(
    mu,
    *,
    seeds: int,
    horizon: int,
    policy: str = "thompson",
    burn_in: int = 500,
    min_weight: float = 0.01,
    rules: list[Rule] | None = None,
    seed: int = 0,
    batch: int = BATCH,
    eps: float = 0.1,
    stop_when_decided: bool = False,
    reward: str = "bernoulli",
    sd: float = 1.0,
    min_samples: int | None = None,
    floor_final: float | None = None,
    tables: int | None = None,
) -> Run:
    """`reward="gaussian"`: rewards N(mu, sd^2), NIG posteriors (gaussian.DEFAULT_PRIOR), and
    the sequential rule is gaussian.evaluate_sequential.

    The floor is gateway.bandit.selection.floor_schedule(min_weight, n, min_samples,
    floor_final), min_samples defaulting to burn_in (as a policy's burn-in defaults to its
    promotion.min_samples); floor_final = min_weight: the constant floor the gateway had before.
    `tables` (bernoulli only): rewards come from reward_table(mu, horizon, tables, i) for seed
    i, the tables mabwiser_regret reads, instead of fresh draws."""
    t0 = time.perf_counter()
    mu = np.asarray(mu, dtype=float)
    k = mu.size
    S = seeds
    gauss = reward == "gaussian"
    rng = np.random.default_rng(seed)
    n = np.zeros((S, k))
    s = np.zeros((S, k))
    ss = np.zeros((S, k))

    def moments() -> tuple[np.ndarray, np.ndarray]:
        return gauss_moments(n, s, ss) if gauss else post_moments(n, s)
    regret = np.zeros(S)
    gap = mu.max() - mu
    rules = rules or []
    for r in rules:
        r.first = np.full(S, -1, dtype=np.int64)
        r.arm = np.full(S, -1, dtype=np.int64)
        r.regret_at = np.full(S, np.nan)
    names = [f"arm{i}" for i in range(k)]
    uniform = np.full((S, k), 1.0 / k)
    floor_samples = burn_in if min_samples is None else min_samples
    burn_regret = np.zeros(S)
    cum = None
    if tables is not None:
        if gauss:
            raise ValueError("reward tables are for bernoulli rewards")
        # Successes among each arm's first j rewards, so a batch's are two look-ups.
        cum = np.zeros((S, k, horizon + 1), dtype=np.int32)
        for i in range(S):
            np.cumsum(reward_table(mu, horizon, tables, i), axis=1, out=cum[i, :, 1:])
        rows_, cols_ = np.arange(S)[:, None], np.arange(k)[None, :]
    steps = horizon // batch
    for step in range(steps):
        pb_all = None
        if policy == "uniform":
            w = uniform
        elif policy in ("thompson", "top_two"):
            pb_all = prob_best_m(*moments())
            pb = top_two_weights(pb_all, 0.5) if policy == "top_two" else pb_all
            w = apply_floor(pb, floor_schedule(min_weight, n, floor_samples, floor_final))
            burning = n.min(axis=1) < burn_in
            if burning.any():
                w = np.where(burning[:, None], uniform, w)
        elif policy == "eps_greedy":
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(n > 0, s / np.maximum(n, 1), np.inf)
            # Random tie-break among equal means.
            greedy = np.argmax(means + 1e-12 * rng.random((S, k)), axis=1)
            w = np.full((S, k), eps / k)
            w[np.arange(S), greedy] += 1 - eps
        elif policy == "ucb1":
            t = max(1.0, float(n.sum(axis=1).max()))
            with np.errstate(invalid="ignore", divide="ignore"):
                idx = np.where(n > 0, s / np.maximum(n, 1) + np.sqrt(2 * math.log(t) / np.maximum(n, 1)), np.inf)
            choice = np.argmax(idx + 1e-12 * rng.random((S, k)), axis=1)
            w = np.zeros((S, k))
            w[np.arange(S), choice] = 1.0
        else:
            raise ValueError(policy)
        was_burning = n.min(axis=1) < burn_in
        if k == 2:
            c1 = rng.binomial(batch, np.clip(w[:, 1], 0.0, 1.0))
            counts = np.stack([batch - c1, c1], axis=1)
        else:
            counts = rng.multinomial(batch, w / w.sum(axis=1, keepdims=True))
        if gauss:
            # Exact batch statistics of c normal draws: the mean is N(mu, sd^2 / c) and the
            # centred sum of squares sd^2 chi2(c - 1), independent of it.
            c = counts.astype(float)
            some = c > 0
            xbar = mu + sd * rng.standard_normal((S, k)) / np.sqrt(np.maximum(c, 1.0))
            m2 = sd * sd * rng.chisquare(np.maximum(c - 1.0, 1.0)) * (c > 1)
            n += c
            s += np.where(some, c * xbar, 0.0)
            ss += np.where(some, m2 + c * xbar * xbar, 0.0)
        elif cum is not None:
            at = n.astype(np.int64)
            s += cum[rows_, cols_, at + counts] - cum[rows_, cols_, at]
            n += counts
        else:
            succ = rng.binomial(counts, mu)
            n += counts
            s += succ
        regret += counts @ gap
        burn_regret = np.where(was_burning, regret, burn_regret)
        total = (step + 1) * batch
        if not rules:
            continue
        for r in rules:
            open_ = (r.first < 0) & (n.min(axis=1) >= r.min_samples)
            if not open_.any():
                continue
            if pb_all is None:
                pb_all = prob_best_m(*moments())
            pb = pb_all[open_]
            lead = pb.argmax(axis=1)
            ok = pb.max(axis=1) >= (PROB_BEST if r.kind in ("naive", "current") else PRESCREEN)
            idx = np.flatnonzero(open_)[ok]
            lead = lead[ok]
            if r.kind == "naive":
                r.first[idx], r.arm[idx], r.regret_at[idx] = total, lead, regret[idx]
            elif r.kind == "current":
                m_, v_ = moments()
                el = loss_two(m_[idx], v_[idx])
                good = el[np.arange(lead.size), lead] <= MAX_LOSS
                idx, lead = idx[good], lead[good]
                r.first[idx], r.arm[idx], r.regret_at[idx] = total, lead, regret[idx]
            elif idx.size:
                # Cheap exact pre-screen: evaluate_sequential also requires
                # prob_best >= 0.95, so seeds far below it cannot promote.
                if gauss:
                    leader, _ = gaussian.sequential_evidence(n[idx], s[idx], ss[idx], r.alpha, r.tau2)
                else:
                    leader, _ = sequential_evidence(n[idx], s[idx], r.alpha, r.tau2)
                for i in idx[leader >= 0]:
                    rule = PromotionRule(PROB_BEST, MAX_LOSS, r.min_samples)
                    if gauss:
                        post = gaussian.posterior(*gaussian.DEFAULT_PRIOR, n[i], s[i], ss[i])
                        d = gaussian.evaluate_sequential(
                            names, post, n[i], s[i], ss[i], rule, 0.0, alpha=r.alpha, tau2=r.tau2
                        )
                    else:
                        a, b = posterior(1.0, 1.0, n[i], s[i])
                        d = evaluate_sequential(names, a, b, n[i], s[i], rule, 0.0, alpha=r.alpha, tau2=r.tau2)
                    if d.promoted:
                        r.first[i], r.arm[i], r.regret_at[i] = total, names.index(d.variant), regret[i]
        if stop_when_decided and all((r.first >= 0).all() for r in rules):
            break
    share = n / n.sum(axis=1, keepdims=True)
    return Run(mu, horizon, regret, {r.name: r for r in rules}, share.mean(axis=0), time.perf_counter() - t0,
               burn_regret)


def mabwiser_regret(mu, *, seeds: int, horizon: int, batch: int = 20, seed: int = 0) -> np.ndarray:
    """MABWiser's Thompson sampling per seed; seed i's rewards come from reward_table(mu,
    horizon, seed, i), the table simulate(..., tables=seed) reads too."""
    from mabwiser.mab import MAB, LearningPolicy

    mu = np.asarray(mu, dtype=float)
    arms = list(range(mu.size))
    gap = mu.max() - mu
    out = np.zeros(seeds)
    for i in range(seeds):
        table = reward_table(mu, horizon, seed, i)
        used = np.zeros(mu.size, dtype=np.int64)
        mab = MAB(arms, LearningPolicy.ThompsonSampling(), seed=seed * 1_000_003 + i)
        mab.fit([], [])  # untrained arms, Beta(1, 1) priors
        ctx = np.zeros((batch, 1))
        reg = 0.0
        for _ in range(horizon // batch):
            dec = np.asarray(mab.predict(ctx), dtype=int)
            rew = np.empty(batch, dtype=int)
            for a in arms:
                pick = dec == a
                c = int(pick.sum())
                rew[pick] = table[a, used[a]:used[a] + c]
                used[a] += c
            mab.partial_fit(dec, rew)
            reg += gap[dec].sum()
        out[i] = reg
    return out


# --------------------------------------------------------------------------- reporting


def rate_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Rate with a Clopper-Pearson 95% interval."""
    k, n = int(x.sum()), x.size
    lo = stats.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return k / n, float(lo), float(hi)


def fmt_rate(x: np.ndarray) -> str:
    r, lo, hi = rate_ci(x)
    return f"{100 * r:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def median_stop(rule: Rule) -> float:
    t = np.where(rule.first >= 0, rule.first, np.inf).astype(float)
    return float(np.median(t))


def fmt_stop(x: float, horizon: int) -> str:
    return f"> {horizon:,}" if not math.isfinite(x) else f"{x:,.0f}"


def mean_se(x: np.ndarray) -> str:
    return f"{x.mean():,.1f} ± {x.std(ddof=1) / math.sqrt(x.size):,.1f}"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the headline figures as JSON here")
    ap.add_argument("--seeds", type=int, default=500, help="seeds per simulation (default 500)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 60 seeds, no README update")
    ap.add_argument("--no-readme", action="store_true", help="do not update bench/README.md")
    ap.add_argument("--readme", type=Path, default=ROOT / "bench" / "README.md")
    args = ap.parse_args(argv)
    seeds = 60 if args.quick else args.seeds
    # ~0.7 s of CPU per MABWiser seed, in the second process while the main one simulates.
    mab_seeds = 4 if args.quick else max(10, min(200, seeds // 2))
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    mu2 = np.array([0.10, 0.12])
    T = 100_000
    # MABWiser is per-request Python: run it in a second process meanwhile.
    pool = ProcessPoolExecutor(max_workers=1)
    mab_future = pool.submit(mabwiser_regret, mu2, seeds=mab_seeds, horizon=T, seed=11)
    alpha = DEFAULT_ALPHA
    out: dict[str, object] = {"seeds": seeds}
    rows: list[str] = []

    def rules(min_samples: int = 500, taus: tuple[float, ...] = (DEFAULT_TAU2,), k: int = 2) -> list[Rule]:
        rs = [Rule("naive", "naive", min_samples=min_samples)]
        if k == 2:  # the expected-loss shortcut is closed-form for two arms only
            rs.append(Rule("current", "current", min_samples=min_samples))
        for t in taus:
            rs.append(Rule(f"seq tau2={t:g}", "sequential", tau2=t, alpha=alpha, min_samples=min_samples))
        return rs

    seq = f"seq tau2={DEFAULT_TAU2:g}"

    # ---- 1. A/A validity
    aa_h = 50_000
    log("A/A, 2 arms ...")
    aa = simulate([0.10, 0.10], seeds=seeds, horizon=aa_h, rules=rules(), seed=1)
    log(f"  {aa.seconds:.0f}s")
    aa_small = simulate([0.10, 0.10], seeds=seeds, horizon=aa_h, burn_in=100, rules=rules(100), seed=2)
    aa_tt = simulate([0.10, 0.10], seeds=seeds, horizon=aa_h, policy="top_two", rules=rules(), seed=3)
    log(f"  variants {aa_small.seconds + aa_tt.seconds:.0f}s")
    out["aa_false_promotion_rate"] = float((aa.rules[seq].first >= 0).mean())
    out["naive_aa_false_promotion_rate"] = float((aa.rules["naive"].first >= 0).mean())
    out["current_aa_false_promotion_rate"] = float((aa.rules["current"].first >= 0).mean())

    # ---- 2 + 3. 10% vs 12%: identification and regret
    fh = fixed_horizon_total(0.10, 0.12)
    lr2 = lai_robbins(mu2, T)
    taus = (DEFAULT_TAU2 / 4, DEFAULT_TAU2, DEFAULT_TAU2 * 4)
    log("10% vs 12%, Thompson ...")
    ts = simulate(mu2, seeds=seeds, horizon=T, rules=rules(), seed=4)
    log(f"  {ts.seconds:.0f}s")
    ts_small = simulate(mu2, seeds=seeds, horizon=T, burn_in=100, rules=rules(100), seed=5)
    ts_classic = simulate(mu2, seeds=seeds, horizon=T, burn_in=0, min_weight=0.0, seed=6)
    # What each part of the gateway's rule costs, on ts's seed: the constant floor it had before
    # (floor_final = min_weight) and no floor at all (the burn-in alone).
    ts_const = simulate(mu2, seeds=seeds, horizon=T, seed=4, floor_final=0.01)
    ts_nofloor = simulate(mu2, seeds=seeds, horizon=T, min_weight=0.0, seed=4)
    # The headline median gets twice the seeds: its standard error is ~290
    # rewards at 500 seeds, ~200 at 1000 (the stopping-time density is flat).
    id_seeds = 2 * seeds
    tt = simulate(mu2, seeds=id_seeds, horizon=T, policy="top_two", rules=rules(taus=taus), seed=7,
                  stop_when_decided=True)
    log(f"  variants {ts_small.seconds + ts_classic.seconds + tt.seconds:.0f}s")
    uni = simulate(mu2, seeds=seeds, horizon=T, policy="uniform", seed=8)
    eg = simulate(mu2, seeds=seeds, horizon=T, policy="eps_greedy", seed=9)
    ucb = simulate(mu2, seeds=seeds, horizon=T, policy="ucb1", seed=10)
    log(f"  baselines {uni.seconds + eg.seconds + ucb.seconds:.0f}s")

    def ident(run: Run, name: str) -> tuple[float, float]:
        r = run.rules[name]
        wrong = (r.first >= 0) & (r.arm != int(np.argmax(run.mu)))
        return median_stop(r), float(wrong.mean())

    med_tt, wrong_tt = ident(tt, seq)
    med_ts, wrong_ts = ident(ts, seq)
    out["fixed_horizon_samples"] = fh
    out["seeds_identification"] = id_seeds
    out["median_samples_to_promotion"] = med_tt if math.isfinite(med_tt) else None
    out["wrong_promotion_rate"] = wrong_tt
    out["median_samples_to_promotion_thompson"] = med_ts if math.isfinite(med_ts) else None
    out["wrong_promotion_rate_thompson"] = wrong_ts
    out["regret_thompson"] = float(ts.regret.mean())
    out["regret_thompson_burn_in_100"] = float(ts_small.regret.mean())
    out["regret_thompson_classic"] = float(ts_classic.regret.mean())
    out["regret_lai_robbins"] = lr2
    out["regret_uniform"] = float(uni.regret.mean())
    out["regret_epsilon_greedy"] = float(eg.regret.mean())
    out["regret_ucb1"] = float(ucb.regret.mean())

    def with_promotion(run: Run, name: str) -> np.ndarray:
        """Regret to T when the promoted arm takes all traffic after promotion."""
        r = run.rules[name]
        gap = run.mu.max() - run.mu
        done = r.first >= 0
        after = np.where(done, gap[np.maximum(r.arm, 0)] * (run.horizon - r.first), 0.0)
        return np.where(done, r.regret_at + after, run.regret)

    out["regret_thompson_with_promotion"] = float(with_promotion(ts, seq).mean())
    out["regret_top_two_with_promotion"] = float(with_promotion(tt, seq).mean())

    # ---- 4. four variants
    mu4 = np.array([0.10, 0.105, 0.11, 0.12])
    s4 = max(seeds // 2, 30) if not args.quick else seeds
    log("4 variants ...")
    aa4 = simulate([0.10] * 4, seeds=s4, horizon=aa_h, rules=rules(k=4), seed=12, batch=2 * BATCH)
    ts4 = simulate(mu4, seeds=s4, horizon=T, rules=rules(k=4), seed=13, batch=2 * BATCH)
    # Only regret *with* promotion is reported for these two: stop once all seeds promoted.
    tt4 = simulate(mu4, seeds=s4, horizon=T, policy="top_two", rules=rules(k=4), seed=14, stop_when_decided=True, batch=2 * BATCH)
    uni4 = simulate(mu4, seeds=s4, horizon=T, policy="uniform", rules=rules(k=4), seed=15, stop_when_decided=True, batch=2 * BATCH)
    log(f"  {aa4.seconds + ts4.seconds + tt4.seconds + uni4.seconds:.0f}s")
    # The gateway's rule on MABWiser's seeds: the same reward tables (seed 11), so paired.
    same = simulate(mu2, seeds=mab_seeds, horizon=T, seed=20, tables=11)
    same_const = simulate(mu2, seeds=mab_seeds, horizon=T, seed=20, tables=11, floor_final=0.01)
    mab = mab_future.result()
    pool.shutdown()
    out["regret_mabwiser_thompson"] = float(mab.mean())
    out["mabwiser_seeds"] = mab_seeds
    out["regret_thompson_same_seeds"] = float(same.regret.mean())
    out["regret_minus_mabwiser_same_seeds"] = float((same.regret - mab).mean())
    out["regret_minus_mabwiser_same_seeds_se"] = float((same.regret - mab).std(ddof=1) / math.sqrt(mab_seeds))
    out["regret_thompson_constant_floor"] = float(ts_const.regret.mean())
    out["regret_thompson_no_floor"] = float(ts_nofloor.regret.mean())
    out["regret_thompson_burn_in_part"] = float(ts.burn_in_regret.mean())
    lr4 = lai_robbins(mu4, T)
    # Reference: equal split over 4 arms, 12% vs 11% at alpha/3 two-sided (Bonferroni), power 0.8.
    fh4 = fixed_horizon_total(0.11, 0.12, alpha=0.05 / 3) * 2
    med4, wrong4 = ident(tt4, seq)
    med4_ts, wrong4_ts = ident(ts4, seq)
    out["four_arms"] = {
        "aa_false_promotion_rate": float((aa4.rules[seq].first >= 0).mean()),
        "naive_aa_false_promotion_rate": float((aa4.rules["naive"].first >= 0).mean()),
        "median_samples_to_promotion_top_two": med4 if math.isfinite(med4) else None,
        "wrong_promotion_rate_top_two": wrong4,
        "median_samples_to_promotion_thompson": med4_ts if math.isfinite(med4_ts) else None,
        "wrong_promotion_rate_thompson": wrong4_ts,
        "regret_thompson": float(ts4.regret.mean()),
        "regret_lai_robbins": lr4,
        "fixed_horizon_samples": fh4,
        "regret_uniform": float(uni4.regret.mean()),
        "seeds": s4,
    }
    # Uniform's regret to T in expectation (uni4 stops once every seed has promoted).
    uni4_regret = float((mu4.max() - mu4).mean() * T)
    out["four_arms"]["regret_uniform"] = uni4_regret
    for key, value in (
        ("aa_false_promotion_rate", out["four_arms"]["aa_false_promotion_rate"]),
        ("naive_aa_false_promotion_rate", out["four_arms"]["naive_aa_false_promotion_rate"]),
        ("median_samples_to_promotion", out["four_arms"]["median_samples_to_promotion_top_two"]),
        ("wrong_promotion_rate", wrong4),
        ("median_samples_to_promotion_thompson", out["four_arms"]["median_samples_to_promotion_thompson"]),
        ("wrong_promotion_rate_thompson", wrong4_ts),
        ("fixed_horizon_samples", fh4),
        ("regret_thompson", float(ts4.regret.mean())),
        ("regret_lai_robbins", lr4),
        ("regret_uniform", uni4_regret),
        ("seeds", s4),
    ):
        out[f"four_arm_{key}"] = value

    # ---- 5. gaussian rewards: means 1.0 vs 1.1, sd 1 (standardized effect 0.1)
    g_mu, g_sd = np.array([1.0, 1.1]), 1.0
    gs = max(seeds // 2, 30) if not args.quick else seeds
    g_fh = fixed_horizon_gauss(float(g_mu[1] - g_mu[0]), g_sd)
    # promotion.tau2 as a policy would set it for this effect: the mixture tuned for the
    # fixed-horizon size per arm (the default 0.004 is tuned for 10% -> 12%); both are shown.
    g_tau = round(mixture_tau2(g_fh / 2), 4)
    g_seq = f"seq tau2={g_tau:g}"
    g_taus = (DEFAULT_TAU2, g_tau)
    log("gaussian rewards ...")
    g_aa = simulate([1.0, 1.0], seeds=gs, horizon=aa_h, rules=rules(taus=g_taus), seed=16, reward="gaussian",
                    sd=g_sd)
    g_tt = simulate(g_mu, seeds=gs, horizon=T, policy="top_two", rules=rules(taus=g_taus), seed=17,
                    stop_when_decided=True, reward="gaussian", sd=g_sd)
    g_ts = simulate(g_mu, seeds=gs, horizon=T, rules=rules(taus=g_taus), seed=18, reward="gaussian", sd=g_sd)
    g_uni = simulate(g_mu, seeds=gs, horizon=T, policy="uniform", seed=19, reward="gaussian", sd=g_sd)
    log(f"  {g_aa.seconds + g_tt.seconds + g_ts.seconds + g_uni.seconds:.0f}s")
    g_lr = lai_robbins_gauss(g_mu, g_sd, T)
    g_med, g_wrong = ident(g_tt, g_seq)
    g_med_ts, g_wrong_ts = ident(g_ts, g_seq)
    out["gaussian_tau2"] = g_tau
    for key, value in (
        ("aa_false_promotion_rate", float((g_aa.rules[g_seq].first >= 0).mean())),
        ("aa_false_promotion_rate_default_tau2", float((g_aa.rules[seq].first >= 0).mean())),
        ("naive_aa_false_promotion_rate", float((g_aa.rules["naive"].first >= 0).mean())),
        ("median_samples_to_promotion", g_med if math.isfinite(g_med) else None),
        ("wrong_promotion_rate", g_wrong),
        ("median_samples_to_promotion_thompson", g_med_ts if math.isfinite(g_med_ts) else None),
        ("wrong_promotion_rate_thompson", g_wrong_ts),
        ("fixed_horizon_samples", g_fh),
        ("regret_thompson", float(g_ts.regret.mean())),
        ("regret_thompson_with_promotion", float(with_promotion(g_ts, g_seq).mean())),
        ("regret_top_two_with_promotion", float(with_promotion(g_tt, g_seq).mean())),
        ("regret_lai_robbins", g_lr),
        ("regret_uniform", float(g_uni.regret.mean())),
        ("seeds", gs),
    ):
        out[f"gaussian_{key}"] = value
    elapsed = time.perf_counter() - t_start
    out["elapsed_s"] = round(elapsed, 1)

    # ---- report
    def rule_row(label: str, run: Run, name: str) -> str:
        return f"| {label} | {name} | {fmt_rate(run.rules[name].first >= 0)} |"

    rows.append(f"**1. A/A, two identical variants at 10%**, horizon {aa_h:,} rewards, rule checked every "
                f"{BATCH} rewards, {seeds} seeds. Rate of ever promoting (95% Clopper-Pearson interval).")
    rows.append("")
    rows.append("| allocation | rule | false promotions |")
    rows.append("| --- | --- | --- |")
    for label, run in (("Thompson, burn-in 500, min_samples 500", aa),
                       ("Thompson, burn-in 100, min_samples 100", aa_small),
                       ("top-two Thompson (β=0.5), min_samples 500", aa_tt)):
        for name in ("naive", "current", seq):
            rows.append(rule_row(label, run, name))
    rows.append(f"| 4 identical variants, Thompson, {s4} seeds, checked every {2 * BATCH} | naive | {fmt_rate(aa4.rules['naive'].first >= 0)} |")
    rows.append(f"| 4 identical variants, Thompson, {s4} seeds, checked every {2 * BATCH} | {seq} | {fmt_rate(aa4.rules[seq].first >= 0)} |")
    rows.append("")
    rows.append("naive = prob_best ≥ 0.95 alone; current = prob_best ≥ 0.95 and expected loss ≤ 0.0025 "
                f"(gateway.bandit.promotion.evaluate); seq = evaluate_sequential: mSPRT at α = {alpha} "
                "and the current gates.")
    rows.append("")
    rows.append(f"**2. 10% vs 12%: rewards until the correct promotion**, horizon {T:,}, {id_seeds} seeds for "
                f"top-two, {seeds} for Thompson "
                f"(never promoted counts as ∞). Fixed-horizon two-proportion test (α = 0.05 two-sided, "
                f"power 0.8): **{fh:,}** rewards in total.")
    rows.append("")
    rows.append("| allocation | rule | median rewards to promotion | promoted by T | wrong promotions |")
    rows.append("| --- | --- | --- | --- | --- |")
    for label, run, names in (
        ("top-two Thompson (β=0.5) = 50/50 for 2 arms", tt, ("naive", "current") + tuple(f"seq tau2={t:g}" for t in taus)),
        ("Thompson, burn-in 500", ts, ("naive", "current", seq)),
        ("Thompson, burn-in 100, min_samples 100", ts_small, ("naive", "current", seq)),
    ):
        for name in names:
            r = run.rules[name]
            med, _ = ident(run, name)
            rows.append(f"| {label} | {name} | {fmt_stop(med, T)} | {100 * (r.first >= 0).mean():.1f}% | "
                        f"{fmt_rate((r.first >= 0) & (r.arm != 1))} |")
    rows.append("")
    rows.append(f"**3. 10% vs 12%: cumulative regret at T = {T:,}** (expected conversions lost, mean ± s.e.), "
                f"{seeds} seeds; Lai-Robbins bound Δ/KL·ln T = **{lr2:.1f}**.")
    rows.append("")
    rows.append("| policy | regret | ÷ Lai-Robbins | traffic on 12% arm |")
    rows.append("| --- | --- | --- | --- |")
    reg_rows = [
        ("Thompson (gateway: burn-in 500, floor 0.01 decaying to 0.001)", ts.regret, ts.arm_share[1]),
        ("… of which during the burn-in (uniform until each arm has 500)", ts.burn_in_regret, float("nan")),
        ("Thompson (burn-in 500, constant floor 0.01: the gateway before)", ts_const.regret, ts_const.arm_share[1]),
        ("Thompson (burn-in 500, no floor)", ts_nofloor.regret, ts_nofloor.arm_share[1]),
        ("Thompson (burn-in 100, floor 0.01 decaying to 0.001)", ts_small.regret, ts_small.arm_share[1]),
        ("Thompson (classic: no burn-in, no floor)", ts_classic.regret, ts_classic.arm_share[1]),
        (f"MABWiser ThompsonSampling ({mab_seeds} seeds, batches of 20)", mab, float("nan")),
        (f"gateway's rule on MABWiser's {mab_seeds} seeds (same rewards)", same.regret, same.arm_share[1]),
        (f"constant floor 0.01 on MABWiser's {mab_seeds} seeds (same rewards)", same_const.regret,
         same_const.arm_share[1]),
        ("ε-greedy (ε = 0.1)", eg.regret, eg.arm_share[1]),
        ("UCB1", ucb.regret, ucb.arm_share[1]),
        ("uniform 50/50", uni.regret, uni.arm_share[1]),
        ("Thompson + sequential promotion", with_promotion(ts, seq), float("nan")),
        ("top-two (β=0.5) + sequential promotion", with_promotion(tt, seq), float("nan")),
    ]
    for label, x, share in reg_rows:
        sh = "–" if not math.isfinite(share) else f"{100 * share:.1f}%"
        rows.append(f"| {label} | {mean_se(x)} | {x.mean() / lr2:.2f} | {sh} |")
    rows.append("")
    rows.append(f"Floor: {FLOOR_NOTE}. Same seeds: seed i's rewards are one table (the j-th reward of each "
                f"arm) that MABWiser and the gateway's rule both read, so their difference is paired; "
                f"gateway − MABWiser = **{mean_se(same.regret - mab)}** conversions "
                f"(constant floor 0.01 − MABWiser: {mean_se(same_const.regret - mab)}).")
    rows.append("")
    rows.append(f"**4. Four variants (10, 10.5, 11, 12%)**, {s4} seeds, T = {T:,}, refresh every {2 * BATCH} "
                f"rewards; Lai-Robbins bound "
                f"**{lr4:.1f}**. Reference fixed design: equal split, 12% vs 11% at α/3 two-sided, power 0.8: "
                f"{fh4:,} rewards in total.")
    rows.append("")
    rows.append("| allocation | median rewards to promotion (seq) | wrong promotions | regret (no promotion) | regret with promotion |")
    rows.append("| --- | --- | --- | --- | --- |")
    for label, run in (("Thompson, burn-in 500", ts4), ("top-two Thompson (β=0.5)", tt4), ("uniform", uni4)):
        med, _ = ident(run, seq)
        r = run.rules[seq]
        no_promo = mean_se(run.regret) if run is ts4 else "–"
        rows.append(f"| {label} | {fmt_stop(med, T)} | {fmt_rate((r.first >= 0) & (r.arm != 3))} | "
                    f"{no_promo} | {mean_se(with_promotion(run, seq))} |")
    rows.append("")

    rows.append(f"**5. Gaussian rewards, means 1.0 vs 1.1, sd 1** (standardized effect 0.1; NIG posteriors, "
                f"the sequential rule is `gaussian.evaluate_sequential`, a one-sided Welch t-mixture), {gs} seeds, refresh every "
                f"{BATCH} rewards; A/A: both means 1.0, horizon {aa_h:,}; fixed-horizon two-sample z-test "
                f"(α = 0.05 two-sided, power 0.8): **{g_fh:,}** rewards in total; Lai-Robbins bound "
                f"Σ 2σ²/Δ · ln T = **{g_lr:.1f}** (reward units). The headline rule uses "
                f"tau2 = mixture_tau2({g_fh // 2:,}) = {g_tau:g}, tuned for this effect as a policy's "
                f"promotion.tau2 would be; current = prob_best ≥ 0.95 and expected loss ≤ {MAX_LOSS} "
                "(reward units).")
    rows.append("")
    rows.append("| run | rule | A/A false promotions | median rewards to promotion | promoted by T | wrong promotions |")
    rows.append("| --- | --- | --- | --- | --- | --- |")
    for name in ("naive", "current", seq, g_seq):
        rows.append(f"| A/A, Thompson, burn-in 500 | {name} | {fmt_rate(g_aa.rules[name].first >= 0)} | – | – | – |")
    for label, run in (("1.0 vs 1.1, top-two (β=0.5)", g_tt), ("1.0 vs 1.1, Thompson, burn-in 500", g_ts)):
        for name in ("naive", "current", seq, g_seq):
            r = run.rules[name]
            med, _ = ident(run, name)
            rows.append(f"| {label} | {name} | – | {fmt_stop(med, T)} | {100 * (r.first >= 0).mean():.1f}% | "
                        f"{fmt_rate((r.first >= 0) & (r.arm != 1))} |")
    rows.append("")
    rows.append(f"| policy (gaussian, T = {T:,}) | regret (reward units, mean ± s.e.) | ÷ Lai-Robbins | traffic on the better arm |")
    rows.append("| --- | --- | --- | --- |")
    for label, x, share in (
        ("Thompson (gateway: burn-in 500, floor 0.01 decaying to 0.001)", g_ts.regret, g_ts.arm_share[1]),
        ("uniform 50/50", g_uni.regret, g_uni.arm_share[1]),
        (f"Thompson + sequential promotion ({g_seq})", with_promotion(g_ts, g_seq), float("nan")),
        (f"top-two (β=0.5) + sequential promotion ({g_seq})", with_promotion(g_tt, g_seq), float("nan")),
    ):
        sh = "–" if not math.isfinite(share) else f"{100 * share:.1f}%"
        rows.append(f"| {label} | {mean_se(x)} | {x.mean() / g_lr:.2f} | {sh} |")
    rows.append("")

    # ---- targets, judged from the numbers above
    aa_rate = out["aa_false_promotion_rate"]
    reg_ts = float(ts.regret.mean())
    uni_reg = float(uni.regret.mean())

    diff = same.regret - mab
    diff_hi = float(diff.mean() + 1.96 * diff.std(ddof=1) / math.sqrt(diff.size))
    targets = [
        ("A/A false promotions (Thompson, seq), ≤ 5%", f"{100 * aa_rate:.1f}%", aa_rate <= 0.05),
        (f"Thompson regret ≤ MABWiser's on the same {mab_seeds} seeds (gateway − MABWiser ≤ 0)",
         f"{diff.mean():.1f} (95% CI up to {diff_hi:.1f})", float(diff.mean()) <= 0),
        ("median rewards to correct promotion, top-two, ≤ fixed horizon " + f"{fh:,}",
         fmt_stop(med_tt, T), med_tt <= fh),
        ("median rewards to correct promotion, Thompson, ≤ " + f"{fh:,}", fmt_stop(med_ts, T), med_ts <= fh),
        ("wrong promotions (top-two and Thompson), ≤ 5%",
         f"{100 * wrong_tt:.1f}% / {100 * wrong_ts:.1f}%", max(wrong_tt, wrong_ts) <= 0.05),
        (f"Thompson regret ≤ 2 × Lai-Robbins = {2 * lr2:.0f}", f"{reg_ts:.1f}", reg_ts <= 2 * lr2),
        (f"Thompson regret ≥ 4 × below 50/50 ({uni_reg:.0f})", f"{uni_reg / reg_ts:.1f}×", uni_reg / reg_ts >= 4),
    ]
    # Figure 4 of the issue: the same targets with four variants and with gaussian rewards.
    g_aa_rate = out["gaussian_aa_false_promotion_rate"]
    g_reg = float(g_ts.regret.mean())
    g_uni_reg = float(g_uni.regret.mean())
    reg4 = float(ts4.regret.mean())
    aa4_rate = out["four_arm_aa_false_promotion_rate"]
    targets += [
        ("4 variants: A/A false promotions (seq), ≤ 5%", f"{100 * aa4_rate:.1f}%", aa4_rate <= 0.05),
        (f"4 variants: median rewards to correct promotion, top-two, ≤ reference fixed design {fh4:,}",
         fmt_stop(med4, T), med4 <= fh4),
        ("4 variants: wrong promotions (top-two / Thompson), ≤ 5%",
         f"{100 * wrong4:.1f}% / {100 * wrong4_ts:.1f}%", max(wrong4, wrong4_ts) <= 0.05),
        (f"4 variants: Thompson regret ≤ 2 × Lai-Robbins = {2 * lr4:.0f}", f"{reg4:.1f}", reg4 <= 2 * lr4),
        (f"4 variants: Thompson regret ≥ 4 × below uniform ({uni4_regret:.0f})", f"{uni4_regret / reg4:.1f}×",
         uni4_regret / reg4 >= 4),
        (f"gaussian: A/A false promotions (Thompson, {g_seq}), ≤ 5%", f"{100 * g_aa_rate:.1f}%",
         g_aa_rate <= 0.05),
        (f"gaussian: median rewards to correct promotion, top-two, ≤ fixed horizon {g_fh:,}",
         fmt_stop(g_med, T), g_med <= g_fh),
        (f"gaussian: median rewards to correct promotion, Thompson, ≤ {g_fh:,}", fmt_stop(g_med_ts, T),
         g_med_ts <= g_fh),
        ("gaussian: wrong promotions (top-two / Thompson), ≤ 5%",
         f"{100 * g_wrong:.1f}% / {100 * g_wrong_ts:.1f}%", max(g_wrong, g_wrong_ts) <= 0.05),
        (f"gaussian: Thompson regret ≤ 2 × Lai-Robbins = {2 * g_lr:.0f}", f"{g_reg:.1f}", g_reg <= 2 * g_lr),
        (f"gaussian: Thompson regret ≥ 4 × below 50/50 ({g_uni_reg:.0f})", f"{g_uni_reg / g_reg:.1f}×",
         g_uni_reg / g_reg >= 4),
    ]
    rows += targets_table("**Targets**", targets)

    cmd = "python bench/bandit.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = [
        "## Bandit promotion and regret (`bench/bandit.py`)",
        "",
        f"- date: {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        (
            f"- command: `{cmd.strip()}` (wall {elapsed:.0f} s, CPU {cpu_seconds():.0f} s; "
            f"load average {load_start:.1f} at start, shared machine)"
        ),
        (
            f"- simulation: all seeds vectorised; weights refreshed and rules checked every {BATCH} "
            f"rewards ({2 * BATCH} for 4 arms); uniform burn-in then probability-matching Thompson weights with the gateway's "
            f"floor ({FLOOR_NOTE}); prob_best by normal approximation in the loop, sequential "
            "decisions by the real `evaluate_sequential`. Regret is pseudo-regret Σ(μ* − μ_chosen)."
        ),
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
