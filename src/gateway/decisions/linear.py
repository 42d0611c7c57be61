"""Linear Thompson sampling's decisions (algorithm linear_thompson), from a snapshot: each
request's traffic shares at its context vector, and the learned models the state shows. Pure;
the math is gateway.bandit.linear_ts's (the model) and linear_routing's (the shares).

A request's context vector is [1, then its first row's values of the policy's `context`
features]. Every live variant has a Bayesian linear model of the reward in that vector (its
counters are the snapshot's `linear`, added by the reward script). The refresh builds a
:class:`LinearRoutes` once per change of the counters (posteriors and the seeded Monte-Carlo
draws); a request then costs one predictive at its vector, and its shares are exactly
linear_routing.linear_shares's for those counters. Promotion is the experiment's overall rule
(allocation.promotion_decision): per-segment promotion has no meaning for numeric context."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.bandit import linear_routing, linear_ts, selection
from gateway.decisions import allocation
from gateway.policy import LinearPriorSettings, Policy
from gateway.store.snapshot import ArmCounts, Snapshot

# A context value beyond this is not learned from (its square and products must stay finite in
# the reward script's sums, which refuses it too).
MAX_CONTEXT_VALUE = 1e100


def is_linear(policy: Policy) -> bool:
    return policy.algorithm == "linear_thompson"


def terms(policy: Policy) -> list[str]:
    """The names of the context vector's entries: the intercept, then the context features."""
    return ["intercept", *policy.context]


def context_of(policy: Policy, row: Any) -> np.ndarray | None:
    """The context vector of a request's first row (validated numbers already); None when a value
    is too large to learn from (the request is then routed by the overall shares)."""
    x = linear_ts.context_vector(row, [f.name for f in policy.features], policy.context)
    return x if bool(np.all(np.abs(x) <= MAX_CONTEXT_VALUE)) else None


def encode(x: np.ndarray) -> str:
    """The vector as the request record keeps it ('lx'), for the reward script (lib/linear.lua)."""
    return ",".join(repr(float(v)) for v in x)


def prior(policy: Policy) -> linear_ts.LinearPrior:
    p = policy.linear_prior or LinearPriorSettings()
    return linear_ts.LinearPrior(ridge=p.ridge, a=p.a0, b=p.b0)


def stats(policy: Policy, snap: Snapshot, names: Sequence[str]) -> linear_ts.LinearStats:
    """The counters of `names` in that order (zeros for a variant not rewarded yet, or whose
    counters have another dimension: kept under an earlier `context`)."""
    d = len(terms(policy))
    out = linear_ts.LinearStats.zeros(len(names), d)
    n, xtx, xty, yty = out.n.copy(), out.xtx.copy(), out.xty.copy(), out.yty.copy()
    for i, v in enumerate(names):
        s = snap.linear.get(v)
        if s is not None and s.d == d:
            n[i], xtx[i], xty[i], yty[i] = s.n[0], s.xtx[0], s.xty[0], s.yty[0]
    return linear_ts.LinearStats(n, xtx, xty, yty)


@dataclass(frozen=True)
class LinearRoutes:
    """The live variants' routing at any context vector, as of one snapshot."""

    names: tuple[str, ...]
    routing: linear_routing.LinearRouting

    def shares(self, x: np.ndarray) -> dict[str, float]:
        return dict(zip(self.names, map(float, self.routing.shares(np.asarray(x, dtype=float)[None, :])[0])))

    def allocation(self, x: np.ndarray) -> allocation.Allocation:
        """The shares at `x` as an Allocation (mode: burn_in while every variant burns in)."""
        young = self.routing.young
        mode = "burn_in" if young.all() else "burn_in_challenger" if young.any() else "linear_thompson"
        return allocation.Allocation(self.shares(x), mode)


def floor(policy: Policy, arms: Mapping[str, ArmCounts], names: Sequence[str]) -> float:
    """The share floor now: allocate()'s schedule (full until every variant has min_samples
    rewards, then decaying with the evidence)."""
    counts = [arms.get(v, ArmCounts()).rewards for v in names]
    return float(selection.floor_schedule(policy.min_weight, counts, policy.promotion.min_samples,
                                          policy.min_weight_final))


def routing(policy: Policy, snap: Snapshot) -> LinearRoutes:
    """The routing of the snapshot's live variants: burn-in by each variant's linear-model
    rewards, then P(best) at the request's vector, floored."""
    live = allocation.live_arms(policy, snap.meta)
    routes = linear_routing.LinearRouting.build(
        prior(policy), stats(policy, snap, live), min_weight=floor(policy, snap.arms, live),
        burn_in=policy.burn_in_rewards,
    )
    return LinearRoutes(tuple(live), routes)


def models(policy: Policy, snap: Snapshot) -> dict[str, Any]:
    """What each variant learned, for the state: its posterior mean coefficients by term (the
    reward it predicts is their sum weighted by the request's values), their standard deviations,
    its rewards and the noise standard deviation (posterior means; None before they exist)."""
    names = [v for v in policy.variant_names if v not in allocation.retired(snap.meta)]
    s = stats(policy, snap, names)
    post = linear_ts.linear_posterior(prior(policy), s)
    labels = terms(policy)
    out: dict[str, Any] = {}
    for i, v in enumerate(names):
        a, b = float(post.a[i]), float(post.b[i])
        # Each coefficient is Student-t (2a degrees of freedom, scale^2 (b / a) Lambda^-1_jj): its
        # variance is (b / (a - 1)) Lambda^-1_jj, finite for a > 1, as is E[sigma2] = b / (a - 1).
        var = b / (a - 1.0) if a > 1.0 else None
        out[v] = {
            "rewards": int(s.n[i]),
            "coefficients": dict(zip(labels, map(float, post.mean[i]))),
            "coefficient_sd": {t: (math.sqrt(var * max(float(c), 0.0)) if var is not None else None)
                               for t, c in zip(labels, np.diag(post.cov[i]))},
            "noise_sd": math.sqrt(var) if var is not None else None,
        }
    return {"terms": labels, "variants": out}
