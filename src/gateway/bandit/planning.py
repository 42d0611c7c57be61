"""Sample-size planning: the fixed-horizon two-proportion test a statistician would size, and
what the gateway's sequential rule needs on the same problem, by seeded simulation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from gateway.bandit.sequential import DEFAULT_ALPHA, DEFAULT_TAU2, sequential_evidence


@dataclass(frozen=True)
class Plan:
    baseline: float
    mde: float
    alpha: float
    power: float
    fixed_horizon_per_variant: int
    fixed_horizon_total: int
    fixed_horizon_days: float | None
    sequential_median_total: float | None
    sequential_promoted_share: float
    sequential_median_days: float | None
    seeds: int
    horizon: int


def fixed_horizon_per_arm(baseline: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-variant sample size of the two-sided two-proportion z-test (pooled variance under
    the null), e.g. 3,841 for 10% vs 12% at alpha 0.05 and power 0.8."""
    p1, p2 = baseline, baseline + mde
    if not (0 < p1 < 1 and 0 < p2 < 1):
        raise ValueError("baseline and baseline + mde must lie strictly between 0 and 1")
    z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    p_bar = (p1 + p2) / 2
    n = (z_a * np.sqrt(2 * p_bar * (1 - p_bar)) + z_b * np.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / mde**2
    return int(np.ceil(n))


def simulate_sequential(
    baseline: float, mde: float, *, alpha: float = DEFAULT_ALPHA, tau2: float = DEFAULT_TAU2,
    seeds: int = 400, horizon: int = 100_000, check_every: int = 50, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: total rewards until the rule promotes variant 1 (the better one when mde > 0;
    50/50 allocation, as top-two Thompson gives two variants), and whether the rule promoted
    any variant within `horizon`."""
    rng = np.random.default_rng(seed)
    rates = np.array([baseline, baseline + mde])
    steps = horizon // (2 * check_every)
    # Successes per check interval for each seed and arm, then running sums.
    s = np.cumsum(rng.binomial(check_every, rates, size=(steps, seeds, 2)), axis=0).astype(float)
    n = (np.arange(1, steps + 1) * check_every).astype(float)[:, None, None] * np.ones((1, seeds, 2))
    leader, _ = sequential_evidence(n, s, alpha, tau2)
    correct = leader == 1
    first = np.where(correct.any(axis=0), correct.argmax(axis=0), -1)
    totals = np.where(first >= 0, (first + 1) * 2 * check_every, np.inf)
    return totals, (leader >= 0).any(axis=0)


def plan(baseline: float, mde: float, daily_traffic: float | None = None, *, alpha: float = 0.05,
         power: float = 0.8, seeds: int = 400, seed: int = 0) -> Plan:
    per_arm = fixed_horizon_per_arm(baseline, mde, alpha, power)
    total = 2 * per_arm
    horizon = max(20 * total, 20_000)
    totals, _ = simulate_sequential(baseline, mde, alpha=alpha, seeds=seeds, horizon=horizon, seed=seed)
    promoted = np.isfinite(totals)
    median = float(np.median(totals)) if promoted.mean() > 0.5 else None
    return Plan(
        baseline=baseline, mde=mde, alpha=alpha, power=power,
        fixed_horizon_per_variant=per_arm, fixed_horizon_total=total,
        fixed_horizon_days=total / daily_traffic if daily_traffic else None,
        sequential_median_total=median,
        sequential_promoted_share=float(promoted.mean()),
        sequential_median_days=median / daily_traffic if (daily_traffic and median is not None) else None,
        seeds=seeds, horizon=horizon,
    )
