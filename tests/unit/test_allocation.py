"""Unit tests for gateway.allocation: traffic shares and the promotion check from counters."""
from __future__ import annotations

import json
import math

import pytest

from gateway.allocation import Allocation, allocate, posteriors, promotion_decision
from gateway.policy import parse_policy
from gateway.store.experiments import ArmCounts

NOW = 1_700_000_000.0


def make_policy(names=("a", "b", "c"), *, holdout=None, min_weight=0.05, min_samples=100, burn_in=None, **extra):
    data = {
        "experiment": "exp",
        "features": [{"name": "x"}],
        "variants": [{"name": n, "model": f"{n}.m"} for n in names],
        "min_weight": min_weight,
        "promotion": {"min_samples": min_samples, **extra.pop("promotion", {})},
        **extra,
    }
    if holdout is not None:
        data["holdout"] = {"variant": holdout[0], "fraction": holdout[1]}
    if burn_in is not None:
        data["burn_in"] = burn_in
    return parse_policy(data)


def arm(n: int, rate: float) -> ArmCounts:
    return ArmCounts(rewards=n, reward_sum=n * rate, requests=n)


def assert_sums_to_one(shares: dict[str, float]) -> None:
    assert math.fsum(shares.values()) == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------- burn-in


def test_no_data_is_burn_in_with_uniform_shares():
    policy = make_policy()
    alloc = allocate(policy, {}, {})
    assert alloc.mode == "burn_in"
    assert list(alloc.shares) == ["a", "b", "c"]
    assert alloc.shares == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})


def test_burn_in_stays_uniform_until_every_arm_has_enough_rewards():
    policy = make_policy(min_samples=100)
    # a and b are far apart, but c is one reward short: still uniform.
    arms = {"a": arm(1000, 0.9), "b": arm(1000, 0.1), "c": arm(99, 0.5)}
    alloc = allocate(policy, arms, {"status": "exploring"})
    assert alloc.mode == "burn_in"
    assert alloc.shares == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})


def test_an_arm_missing_from_the_counters_keeps_burn_in():
    policy = make_policy(min_samples=10)
    alloc = allocate(policy, {"a": arm(500, 0.9), "b": arm(500, 0.1)}, {})
    assert alloc.mode == "burn_in"


def test_burn_in_ends_once_every_arm_reaches_it():
    policy = make_policy(min_samples=100)
    arms = {"a": arm(100, 0.9), "b": arm(100, 0.1), "c": arm(100, 0.5)}
    alloc = allocate(policy, arms, {})
    assert alloc.mode == "thompson"


def test_explicit_burn_in_overrides_min_samples():
    policy = make_policy(min_samples=1000, burn_in=20)
    arms = {"a": arm(20, 0.9), "b": arm(20, 0.1), "c": arm(20, 0.5)}
    assert allocate(policy, arms, {}).mode == "thompson"


def test_burn_in_counts_rewards_not_requests():
    policy = make_policy(min_samples=100)
    arms = {v: ArmCounts(rewards=5, reward_sum=4.0, requests=10_000) for v in "abc"}
    assert allocate(policy, arms, {}).mode == "burn_in"


# --------------------------------------------------------------------------- thompson


def test_after_burn_in_the_clearly_better_arm_gets_most_traffic():
    policy = make_policy(min_weight=0.05, min_samples=100)
    arms = {"a": arm(400, 0.45), "b": arm(400, 0.80), "c": arm(400, 0.40)}
    alloc = allocate(policy, arms, {})
    assert alloc.mode == "thompson"
    assert max(alloc.shares, key=alloc.shares.get) == "b"
    assert alloc.shares["b"] > 0.85
    assert all(w >= 0.05 - 1e-12 for w in alloc.shares.values())
    assert_sums_to_one(alloc.shares)


def test_losing_arms_are_held_at_the_min_weight_floor():
    policy = make_policy(min_weight=0.05, min_samples=100)
    arms = {"a": arm(1000, 0.2), "b": arm(1000, 0.9), "c": arm(1000, 0.2)}
    shares = allocate(policy, arms, {}).shares
    assert shares["a"] == pytest.approx(0.05, abs=1e-12)
    assert shares["c"] == pytest.approx(0.05, abs=1e-12)
    assert shares["b"] == pytest.approx(0.90, abs=1e-12)


def test_identical_arms_share_traffic_roughly_equally():
    policy = make_policy(min_samples=100)
    arms = {v: arm(500, 0.5) for v in "abc"}
    shares = allocate(policy, arms, {}).shares
    for w in shares.values():
        assert w == pytest.approx(1 / 3, abs=0.03)
    assert_sums_to_one(shares)


def test_allocation_is_deterministic_for_equal_counters():
    policy = make_policy(min_samples=100)
    arms = {"a": arm(300, 0.55), "b": arm(300, 0.6), "c": arm(300, 0.5)}
    assert allocate(policy, arms, {}) == allocate(policy, dict(arms), {})


def test_shares_sum_to_one_in_every_mode():
    policy = make_policy(min_samples=100, holdout=("c", 0.2))
    arms = {"a": arm(300, 0.55), "b": arm(300, 0.6), "c": arm(300, 0.5)}
    frozen = json.dumps({"a": 0.3, "b": 0.5, "c": 0.2})
    for arms_, meta in (
        ({}, {}),
        (arms, {}),
        (arms, {"status": "promoted", "champion": "b"}),
        (arms, {"status": "paused", "frozen_weights": frozen}),
    ):
        assert_sums_to_one(allocate(policy, arms_, meta).shares)


# --------------------------------------------------------------------------- promoted / paused


def test_promoted_champion_gets_all_bandit_traffic():
    policy = make_policy()
    arms = {"a": arm(400, 0.9), "b": arm(400, 0.1), "c": arm(400, 0.5)}
    alloc = allocate(policy, arms, {"status": "promoted", "champion": "b"})
    assert alloc.mode == "promoted"
    assert alloc.shares == {"a": 0.0, "b": 1.0, "c": 0.0}


def test_promoted_with_holdout_keeps_the_holdout_fraction():
    policy = make_policy(holdout=("c", 0.1))
    alloc = allocate(policy, {}, {"status": "promoted", "champion": "a"})
    assert alloc.mode == "promoted"
    assert alloc.shares == pytest.approx({"a": 0.9, "b": 0.0, "c": 0.1})
    assert list(alloc.shares) == ["a", "b", "c"]


def test_promoted_to_an_unknown_champion_does_not_route_to_it():
    policy = make_policy()
    alloc = allocate(policy, {}, {"status": "promoted", "champion": "ghost"})
    assert "ghost" not in alloc.shares
    assert alloc.mode != "promoted"
    assert_sums_to_one(alloc.shares)


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5])
def test_holdout_gets_exactly_its_fraction_and_the_rest_sums_to_one_minus_it(fraction):
    policy = make_policy(names=("a", "b", "h"), holdout=("h", fraction), min_samples=50)
    for arms in ({}, {"a": arm(200, 0.7), "b": arm(200, 0.3), "h": arm(200, 0.9)}):
        shares = allocate(policy, arms, {}).shares
        assert shares["h"] == fraction
        assert math.fsum(v for k, v in shares.items() if k != "h") == pytest.approx(1 - fraction, abs=1e-12)


def test_holdout_counters_do_not_affect_the_bandit():
    policy = make_policy(names=("a", "b", "h"), holdout=("h", 0.1), min_samples=50)
    # The holdout has no rewards yet: burn-in is about bandit arms only.
    arms = {"a": arm(200, 0.7), "b": arm(200, 0.3)}
    alloc = allocate(policy, arms, {})
    assert alloc.mode == "thompson"
    assert alloc.shares["a"] > alloc.shares["b"]
    assert alloc.shares["h"] == 0.1


def test_paused_with_frozen_weights_returns_those():
    policy = make_policy()
    frozen = {"a": 0.2, "b": 0.7, "c": 0.1}
    arms = {"a": arm(400, 0.9), "b": arm(400, 0.1), "c": arm(400, 0.5)}
    alloc = allocate(policy, arms, {"status": "paused", "frozen_weights": json.dumps(frozen)})
    assert alloc.mode == "paused"
    assert alloc.shares == frozen
    assert list(alloc.shares) == ["a", "b", "c"]


def test_paused_with_weights_for_other_variants_is_not_used():
    policy = make_policy()
    frozen = json.dumps({"a": 0.5, "z": 0.5})
    alloc = allocate(policy, {}, {"status": "paused", "frozen_weights": frozen})
    assert alloc.mode != "paused"
    assert set(alloc.shares) == {"a", "b", "c"}


# --------------------------------------------------------------------------- pick


def test_pick_returns_the_variant_at_the_cdf_point_and_its_share():
    alloc = Allocation({"a": 0.2, "b": 0.5, "c": 0.3}, "thompson")
    assert alloc.pick(0.0) == ("a", 0.2)
    assert alloc.pick(0.1999) == ("a", 0.2)
    assert alloc.pick(0.2) == ("b", 0.5)
    assert alloc.pick(0.6999) == ("b", 0.5)
    assert alloc.pick(0.7) == ("c", 0.3)
    assert alloc.pick(0.9999999) == ("c", 0.3)


def test_pick_never_returns_a_zero_share_variant():
    alloc = allocate(make_policy(holdout=("c", 0.1)), {}, {"status": "promoted", "champion": "a"})
    picked = {alloc.pick(u / 1000)[0] for u in range(1000)}
    assert picked == {"a", "c"}
    for u in (0.0, 0.5, 0.8999, 0.9, 0.999):
        name, propensity = alloc.pick(u)
        assert propensity == alloc.shares[name] > 0


def test_pick_frequencies_match_shares():
    alloc = Allocation({"a": 0.25, "b": 0.25, "c": 0.5}, "thompson")
    n = 1000
    counts = {"a": 0, "b": 0, "c": 0}
    for i in range(n):
        counts[alloc.pick((i + 0.5) / n)[0]] += 1
    assert counts == {"a": 250, "b": 250, "c": 500}


# --------------------------------------------------------------------------- posteriors


def test_posteriors_are_prior_plus_counts():
    policy = make_policy(prior={"alpha": 2, "beta": 3})
    a, b = posteriors(policy, {"a": arm(10, 0.7), "b": ArmCounts()}, ["a", "b", "c"])
    assert a.tolist() == pytest.approx([2 + 7, 2, 2])
    assert b.tolist() == pytest.approx([3 + 3, 3, 3])


def test_posteriors_tolerate_float_drift_in_reward_sums():
    policy = make_policy()
    arms = {"a": ArmCounts(rewards=10, reward_sum=10.000000001), "b": ArmCounts(rewards=10, reward_sum=-1e-12)}
    a, b = posteriors(policy, arms, ["a", "b"])
    assert a.tolist() == pytest.approx([11, 1])
    assert b.tolist() == pytest.approx([1, 11])
    assert (b > 0).all()


# --------------------------------------------------------------------------- promotion_decision


@pytest.mark.parametrize("status", ["promoted", "paused", "stopped"])
def test_promotion_decision_is_none_unless_exploring(status):
    policy = make_policy(names=("a", "b"), min_samples=100)
    arms = {"a": arm(1000, 0.9), "b": arm(1000, 0.1)}
    assert promotion_decision(policy, arms, {"status": status, "champion": "a"}, NOW) is None


def test_promotes_the_clearly_better_arm_once_min_samples_reached():
    policy = make_policy(names=("a", "b"), min_samples=300)
    arms = {"a": arm(300, 0.40), "b": arm(300, 0.70)}
    decision = promotion_decision(policy, arms, {"status": "exploring"}, NOW)
    assert decision is not None and decision.promoted
    assert decision.variant == "b"


def test_does_not_promote_before_min_samples_on_every_arm():
    policy = make_policy(names=("a", "b"), min_samples=300)
    arms = {"a": arm(299, 0.40), "b": arm(2000, 0.70)}
    decision = promotion_decision(policy, arms, {}, NOW)
    assert decision is not None and not decision.promoted
    assert decision.variant is None
    assert "a=299" in decision.reason


def test_identical_arms_are_inconclusive():
    policy = make_policy(names=("a", "b", "c"), min_samples=100)
    arms = {v: arm(5000, 0.5) for v in "abc"}
    decision = promotion_decision(policy, arms, {"status": "exploring"}, NOW)
    assert decision is not None
    assert not decision.promoted and decision.variant is None


def test_min_duration_is_measured_from_started_at():
    policy = make_policy(names=("a", "b"), min_samples=100, promotion={"min_duration_s": 3600})
    arms = {"a": arm(1000, 0.3), "b": arm(1000, 0.7)}
    early = promotion_decision(policy, arms, {"started_at": str(NOW - 60)}, NOW)
    late = promotion_decision(policy, arms, {"started_at": str(NOW - 7200)}, NOW)
    assert early is not None and not early.promoted
    assert late is not None and late.promoted and late.variant == "b"


def test_the_holdout_is_never_promoted():
    policy = make_policy(names=("a", "b", "h"), holdout=("h", 0.1), min_samples=100)
    arms = {"a": arm(1000, 0.3), "b": arm(1000, 0.6), "h": arm(1000, 0.95)}
    decision = promotion_decision(policy, arms, {}, NOW)
    assert decision is not None and decision.promoted
    assert decision.variant == "b"
    assert "h" not in decision.evidence["arms"]


def test_promotion_evidence_is_json_serialisable():
    policy = make_policy(names=("a", "b"), min_samples=100)
    decision = promotion_decision(policy, {"a": arm(100, 0.3), "b": arm(100, 0.7)}, {}, NOW)
    assert decision is not None
    json.dumps(decision.evidence, allow_nan=False)
