"""Traffic allocation and the promotion check: policy plus counters in, decisions out. Pure
(no I/O), so the router and the tests share one definition."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gateway.bandit import beta, promotion, selection, sequential
from gateway.policy import Policy, Variant
from gateway.store.experiments import ArmCounts


@dataclass(frozen=True)
class Allocation:
    """Traffic shares of every variant (holdout included), summing to 1."""

    shares: dict[str, float]
    mode: str  # burn_in | thompson | promoted | paused

    def pick(self, u: float) -> tuple[str, float]:
        names = list(self.shares)
        weights = np.fromiter(self.shares.values(), dtype=float, count=len(names))
        i = selection.choose(weights, u)
        return names[i], float(weights[i])


def posteriors(policy: Policy, arms: Mapping[str, ArmCounts], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    n = np.array([arms.get(v, ArmCounts()).rewards for v in names], dtype=float)
    s = np.array([arms.get(v, ArmCounts()).reward_sum for v in names], dtype=float)
    # Float sums of fractional rewards can drift a hair outside [0, n].
    s = np.clip(s, 0.0, n)
    return beta.posterior(policy.prior.alpha, policy.prior.beta, n, s)


def effective_policy(policy: Policy, dynamic: Mapping[str, Mapping]) -> Policy:
    """The policy plus the challengers added at run time (in the order they were added)."""
    if not dynamic:
        return policy
    known = set(policy.variant_names)
    added = sorted((v for k, v in dynamic.items() if k not in known), key=lambda v: (v.get("added_at", 0), v["name"]))
    extra = tuple(Variant(name=v["name"], model=v["path"]) for v in added)
    return policy.model_copy(update={"variants": policy.variants + extra})


def retired(meta: Mapping[str, str]) -> set[str]:
    return set(json.loads(meta["retired"])) if meta.get("retired") else set()


def live_arms(policy: Policy, meta: Mapping[str, str]) -> list[str]:
    """The bandit's arms minus those an operator retired."""
    gone = retired(meta)
    return [v for v in policy.bandit_arms if v not in gone]


def _with_holdout(policy: Policy, bandit_shares: Mapping[str, float]) -> dict[str, float]:
    if policy.holdout is None:
        return dict(bandit_shares)
    f = policy.holdout.fraction
    out = {v: (1 - f) * w for v, w in bandit_shares.items()}
    out[policy.holdout.variant] = f
    return {v: out.get(v, 0.0) for v in policy.variant_names}


def allocate(policy: Policy, arms: Mapping[str, ArmCounts], meta: Mapping[str, str]) -> Allocation:
    status = meta.get("status", "exploring")
    live = live_arms(policy, meta)
    champion = meta.get("champion")
    if status == "promoted" and champion in live:
        return Allocation(_with_holdout(policy, {v: float(v == champion) for v in live}), "promoted")
    if status == "paused" and meta.get("frozen_weights"):
        frozen = json.loads(meta["frozen_weights"])
        if set(frozen) == set(policy.variant_names):
            return Allocation({v: float(frozen[v]) for v in policy.variant_names}, "paused")
    counts = [arms.get(v, ArmCounts()).rewards for v in live]
    if min(counts) < policy.burn_in_rewards:
        weights = selection.uniform_weights(len(live))
        mode = "burn_in"
    else:
        a, b = posteriors(policy, arms, live)
        if policy.algorithm == "top_two_thompson":
            weights = selection.apply_floor(sequential.top_two_weights(beta.prob_best(a, b)), policy.min_weight)
        else:
            weights = selection.thompson_weights(a, b, policy.min_weight)
        mode = policy.algorithm
    return Allocation(_with_holdout(policy, dict(zip(live, map(float, weights)))), mode)


def promotion_decision(
    policy: Policy, arms: Mapping[str, ArmCounts], meta: Mapping[str, str], now: float
) -> promotion.Decision | None:
    """The rule's verdict while exploring; None when the experiment is not exploring."""
    if meta.get("status", "exploring") != "exploring":
        return None
    live = live_arms(policy, meta)
    a, b = posteriors(policy, arms, live)
    n = np.array([arms.get(v, ArmCounts()).rewards for v in live], dtype=float)
    started = float(meta.get("started_at", now))
    rule = promotion.PromotionRule(
        prob_best=policy.promotion.prob_best,
        max_expected_loss=policy.promotion.max_expected_loss,
        min_samples=policy.promotion.min_samples,
        min_duration_s=policy.promotion.min_duration_s,
    )
    s = np.clip([arms.get(v, ArmCounts()).reward_sum for v in live], 0.0, n)
    decision = sequential.evaluate_sequential(
        live, a, b, n, s, rule, elapsed_s=now - started, alpha=policy.promotion.alpha, tau2=policy.promotion.tau2
    )
    if decision.outcome == "promote" and decision.variant in guardrail_blocked(meta):
        # Rolled back by a guardrail: only an operator may make it champion again, or the rule
        # and the guardrail would take turns.
        return promotion.Decision(
            "inconclusive", None, f"{decision.variant} was rolled back by a guardrail; an operator may promote it",
            decision.evidence,
        )
    return decision


def guardrail_blocked(meta: Mapping[str, str]) -> set[str]:
    return set(json.loads(meta["guardrail_blocked"])) if meta.get("guardrail_blocked") else set()
