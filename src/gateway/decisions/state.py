"""What GET /v1/experiments/{e} shows: status, champion, and per variant the posterior, mean,
credible interval, probability to be best, expected loss, traffic share and counts; with a
holdout, the uplift of the champion (or the leader) over it."""
from __future__ import annotations

from typing import Any

import numpy as np

from gateway.bandit import contextual
from gateway.decisions import allocation, linear, segments
from gateway.policy import Policy
from gateway.store.snapshot import ArmCounts, Snapshot

# Monte-Carlo draws and seed of the holdout uplift's credible interval: fixed, so the same
# counters always give the same figures (standard error of a 2.5% quantile ~ 0.002 sd).
UPLIFT_DRAWS = 20_000
UPLIFT_SEED = 0


def holdout_uplift(
    policy: Policy, post: allocation.ArmPosteriors, names: list[str], variant: str, level: float = 0.95
) -> dict[str, Any]:
    """Posterior of (mean reward of `variant`) - (mean reward of the holdout): its mean (the
    difference of the posterior means), an equal-tailed credible interval and the probability
    that it is positive, by seeded Monte-Carlo from the two independent posteriors."""
    assert policy.holdout is not None
    held = policy.holdout.variant
    pair = post.take([names.index(variant), names.index(held)])
    draws = pair.sample(UPLIFT_DRAWS, np.random.default_rng(UPLIFT_SEED))
    diff = draws[:, 0] - draws[:, 1]
    means = pair.mean()
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(diff, [tail, 1.0 - tail])
    return {
        "variant": variant,
        "holdout": held,
        "uplift": float(means[0] - means[1]),
        "credible_interval": [float(lo), float(hi)],
        "prob_positive": float(np.mean(diff > 0)),
    }


def experiment_state(
    policy: Policy,
    snap: Snapshot,
    history: list[dict],
    discounted: allocation.DiscountState | None = None,
    routed: contextual.SegmentAllocation | None = None,
) -> dict[str, Any]:
    """`discounted`: the replica's discounted counters (discounted_thompson), so the traffic
    shares shown are the ones it routes with."""
    names = policy.variant_names
    # P(best) and expected loss compare the bandit's arms (retired ones too, as they stood);
    # a shadow variant takes no traffic, so it has neither.
    shadows = set(allocation.shadow_arms(policy, snap.meta))
    held = policy.holdout.variant if policy.holdout else None
    live = [v for v in names if v != held and v not in shadows]
    post = allocation.arm_posteriors(policy, snap.arms, names)
    means = post.mean()
    lo, hi = post.credible_interval(0.95)
    live_idx = [names.index(v) for v in live]
    # Seeded inside gateway.bandit: the same counters always give the same figures.
    pb, el = post.take(live_idx).mc_stats()
    pbest = dict(zip(live, pb.tolist()))
    loss = dict(zip(live, el.tolist()))
    alloc = allocation.allocate(policy, snap.arms, snap.meta, discounted)
    holdout = policy.holdout.variant if policy.holdout else None
    variants = []
    for i, v in enumerate(names):
        counts = snap.arms.get(v, ArmCounts())
        variants.append(
            {
                "name": v,
                "role": "holdout" if v == holdout else "shadow" if v in shadows else "arm",
                "posterior": post.fields(i),
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
    champion = snap.meta.get("champion")
    uplift = None
    if policy.holdout is not None:
        # The champion when there is one, else the live arm most likely to be best.
        in_play = [v for v in allocation.live_arms(policy, snap.meta) if v in pbest]
        leader = champion if champion in pbest else max(in_play, key=lambda v: pbest[v], default=None)
        if leader is not None:
            uplift = holdout_uplift(policy, post, names, leader)
    disc = allocation.discount(policy, snap.arms, snap.meta, discounted)
    return {
        "name": policy.experiment,
        "experiment": policy.experiment,
        "status": snap.meta.get("status", "exploring"),
        "champion": champion,
        "reward_type": policy.reward.type,
        "allocation": alloc.mode,
        "started_at": float(snap.meta["started_at"]) if "started_at" in snap.meta else None,
        "promotion_rule": policy.promotion.model_dump(),
        "variants": variants,
        "holdout_uplift": uplift,
        "discount": None if disc is None else {"gamma": disc.gamma, "effective_rewards": disc.effective_rewards()},
        "history": history,
        # contextual_thompson: the routing table (segment -> champion, or its shares).
        "segments": segments.table(policy, snap, routed) if segments.is_contextual(policy) else None,
        # linear_thompson: what each variant's linear model learned (coefficients by context term).
        "linear": linear.models(policy, snap) if linear.is_linear(policy) else None,
        "totals": {
            "requests": int(np.sum([c.requests for c in snap.arms.values()])) if snap.arms else 0,
            "rewards": int(np.sum([c.rewards for c in snap.arms.values()])) if snap.arms else 0,
        },
    }
