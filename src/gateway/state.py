"""What GET /v1/experiments/{e} shows: status, champion, and per variant the posterior, mean,
credible interval, probability to be best, expected loss, traffic share and counts."""
from __future__ import annotations

from typing import Any

import numpy as np

from gateway import allocation
from gateway.bandit import beta
from gateway.policy import Policy
from gateway.store.experiments import ArmCounts, Snapshot


def experiment_state(policy: Policy, snap: Snapshot, history: list[dict]) -> dict[str, Any]:
    names = policy.variant_names
    live = policy.bandit_arms
    a, b = allocation.posteriors(policy, snap.arms, names)
    means = beta.mean(a, b)
    lo, hi = beta.credible_interval(a, b, 0.95)
    live_idx = [names.index(v) for v in live]
    # Seeded inside beta.*: the same counters always give the same figures.
    pbest = dict(zip(live, beta.prob_best(a[live_idx], b[live_idx]).tolist()))
    loss = dict(zip(live, beta.expected_loss(a[live_idx], b[live_idx]).tolist()))
    alloc = allocation.allocate(policy, snap.arms, snap.meta)
    holdout = policy.holdout.variant if policy.holdout else None
    variants = []
    for i, v in enumerate(names):
        counts = snap.arms.get(v, ArmCounts())
        variants.append(
            {
                "name": v,
                "role": "holdout" if v == holdout else "arm",
                "posterior": {"alpha": float(a[i]), "beta": float(b[i])},
                "mean": float(means[i]),
                "credible_interval": [float(lo[i]), float(hi[i])],
                "prob_best": pbest.get(v),
                "expected_loss": loss.get(v),
                "traffic_share": alloc.shares.get(v, 0.0),
                "requests": counts.requests,
                "rewards": counts.rewards,
                "reward_sum": counts.reward_sum,
            }
        )
    return {
        "name": policy.experiment,
        "experiment": policy.experiment,
        "status": snap.meta.get("status", "exploring"),
        "champion": snap.meta.get("champion"),
        "allocation": alloc.mode,
        "started_at": float(snap.meta["started_at"]) if "started_at" in snap.meta else None,
        "promotion_rule": policy.promotion.model_dump(),
        "variants": variants,
        "history": history,
        "totals": {
            "requests": int(np.sum([c.requests for c in snap.arms.values()])) if snap.arms else 0,
            "rewards": int(np.sum([c.rewards for c in snap.arms.values()])) if snap.arms else 0,
        },
    }
