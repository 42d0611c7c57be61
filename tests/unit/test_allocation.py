"""Unit tests for gateway.decisions.allocation: traffic shares and the promotion check from counters."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.decisions.allocation import (
    Allocation,
    allocate,
    arm_posteriors,
    arms_to_retire,
    discount,
    posterior_means,
    posteriors,
    promotion_decision,
)
from gateway.bandit.selection import floor_schedule
from gateway.policy import PolicyError, parse_policy
from gateway.store.snapshot import ArmCounts

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


def test_an_arm_still_burning_in_gets_the_uniform_share_and_the_others_follow_the_bandit():
    policy = make_policy(min_samples=100)
    # c (a challenger added late) is one reward short: it keeps 1/3 of the traffic, while a and
    # b, far apart, split the other 2/3 by the bandit instead of staying uniform.
    arms = {"a": arm(1000, 0.9), "b": arm(1000, 0.1), "c": arm(99, 0.5)}
    alloc = allocate(policy, arms, {"status": "exploring"})
    assert alloc.mode == "burn_in_challenger"
    assert alloc.shares["c"] == pytest.approx(1 / 3)
    assert alloc.shares["b"] == pytest.approx(policy.min_weight)
    assert alloc.shares["a"] == pytest.approx(2 / 3 - policy.min_weight)
    assert sum(alloc.shares.values()) == pytest.approx(1.0)


def test_two_arms_burning_in_beside_one_mature_arm():
    policy = make_policy(min_samples=100)
    alloc = allocate(policy, {"a": arm(1000, 0.9), "b": arm(5, 0.1), "c": arm(0, 0.5)}, {})
    assert alloc.shares == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})


def test_an_arm_missing_from_the_counters_keeps_burn_in():
    policy = make_policy(min_samples=10)
    alloc = allocate(policy, {"a": arm(500, 0.9), "b": arm(500, 0.1)}, {})
    assert alloc.mode == "burn_in_challenger"
    assert alloc.shares["c"] == pytest.approx(1 / 3)


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
    # A constant floor (min_weight_final = min_weight); the decaying default is tested below.
    policy = make_policy(min_weight=0.05, min_samples=100, min_weight_final=0.05)
    arms = {"a": arm(400, 0.45), "b": arm(400, 0.80), "c": arm(400, 0.40)}
    alloc = allocate(policy, arms, {})
    assert alloc.mode == "thompson"
    assert max(alloc.shares, key=alloc.shares.get) == "b"
    assert alloc.shares["b"] > 0.85
    assert all(w >= 0.05 - 1e-12 for w in alloc.shares.values())
    assert_sums_to_one(alloc.shares)


def test_losing_arms_are_held_at_the_min_weight_floor():
    policy = make_policy(min_weight=0.05, min_samples=100, min_weight_final=0.05)
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


def test_min_duration_also_counts_from_the_newest_challenger():
    policy = make_policy(names=("a", "b"), min_samples=100, promotion={"min_duration_s": 3600})
    arms = {"a": arm(1000, 0.3), "b": arm(1000, 0.7)}
    old_experiment = {"started_at": str(NOW - 7200)}
    fresh = promotion_decision(policy, arms, {**old_experiment, "challenger_at": str(NOW - 60)}, NOW)
    settled = promotion_decision(policy, arms, {**old_experiment, "challenger_at": str(NOW - 3700)}, NOW)
    assert fresh is not None and not fresh.promoted
    assert settled is not None and settled.promoted and settled.variant == "b"


def test_arms_beyond_max_variants_retire_lowest_mean_first_never_the_champion_or_an_unrewarded_one():
    policy = make_policy(names=("a", "b", "c", "d", "e"))
    arms = {"a": arm(100, 0.2), "b": arm(100, 0.9), "c": arm(100, 0.1), "d": arm(100, 0.5), "e": ArmCounts()}
    meta = {"champion": "c"}
    assert arms_to_retire(policy, arms, meta, max_variants=5) == []
    assert arms_to_retire(policy, arms, meta, max_variants=3) == ["a", "d"]
    assert arms_to_retire(policy, arms, {**meta, "retired": '["a"]'}, max_variants=3) == ["d"]


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


# --------------------------------------------------------------------------- gaussian rewards


def garm(n: int, mean: float, sd: float = 1.0) -> ArmCounts:
    """Counters of n rewards with exactly this mean and (population) sd."""
    return ArmCounts(rewards=n, reward_sum=n * mean, reward_sq_sum=n * (mean * mean + sd * sd), requests=n)


def gaussian_policy(names=("a", "b", "c"), **kw):
    return make_policy(names, reward={"type": "gaussian", **kw.pop("reward", {})}, **kw)


def test_gaussian_posteriors_come_from_the_sums_and_squares():
    policy = gaussian_policy(reward={"prior": {"mu": 0, "kappa": 1, "alpha": 1, "beta": 1}})
    post = arm_posteriors(policy, {"a": garm(4, 2.0, 1.0)}, ["a", "b"])
    assert post.reward == "gaussian"
    assert post.fields(0) == pytest.approx({"mu": 1.6, "kappa": 5.0, "alpha": 3.0, "beta": 1 + 2 + 1.6})
    assert post.fields(1) == {"mu": 0.0, "kappa": 1.0, "alpha": 1.0, "beta": 1.0}
    assert posterior_means(policy, {"a": garm(4, 2.0, 1.0)}, ["a", "b"]).tolist() == pytest.approx([1.6, 0.0])
    with pytest.raises(ValueError, match="bernoulli"):
        posteriors(policy, {}, ["a", "b"])


def test_gaussian_rewards_route_to_the_higher_mean_after_burn_in():
    policy = gaussian_policy(min_weight=0.05, min_samples=100, min_weight_final=0.05)
    arms = {"a": garm(99, 5.0), "b": garm(400, 1.0), "c": garm(400, 1.1)}
    young = allocate(policy, arms, {})
    assert young.mode == "burn_in_challenger" and young.shares["a"] == pytest.approx(1 / 3)
    arms["a"] = garm(400, -3.0, 10.0)
    alloc = allocate(policy, arms, {})
    assert alloc.mode == "thompson"
    assert max(alloc.shares, key=alloc.shares.get) == "c"
    assert alloc.shares["a"] == pytest.approx(0.05, abs=1e-12)
    assert_sums_to_one(alloc.shares)


def test_gaussian_top_two_splits_between_the_two_leaders():
    policy = gaussian_policy(min_weight=0.0, min_samples=100, algorithm="top_two_thompson")
    # b leads a (z ~ 2.2), c is hopeless: top-two plays b half the time and a nearly always
    # otherwise, where plain Thompson would give b ~99%.
    arms = {"a": garm(1000, 1.4), "b": garm(1000, 1.5), "c": garm(1000, 0.0)}
    alloc = allocate(policy, arms, {})
    assert alloc.mode == "top_two_thompson"
    assert alloc.shares["b"] == pytest.approx(0.5, abs=1e-3)
    assert alloc.shares["a"] == pytest.approx(0.5, abs=1e-3)
    assert alloc.shares["c"] < 1e-3


def test_gaussian_promotion_uses_the_t_mixture_and_the_sums_of_squares():
    policy = gaussian_policy(names=("a", "b"), min_samples=500)
    arms = {"a": garm(3000, 1.0), "b": garm(3000, 1.15)}
    decision = promotion_decision(policy, arms, {"status": "exploring"}, NOW)
    assert decision is not None and decision.promoted and decision.variant == "b"
    assert "t-mixture" in decision.evidence["sequential"]["method"]
    assert set(decision.evidence["arms"]["b"]) >= {"mu", "kappa", "alpha", "beta"}
    json.dumps(decision.evidence, allow_nan=False)
    # The same means with sd 3 are not yet significant: the spread comes from reward_sq_sum.
    noisy = {"a": garm(3000, 1.0, 3.0), "b": garm(3000, 1.15, 3.0)}
    decision = promotion_decision(policy, noisy, {}, NOW)
    assert decision is not None and not decision.promoted


def test_gaussian_identical_arms_and_no_data_are_inconclusive():
    policy = gaussian_policy(min_samples=100)
    for arms in ({}, {v: garm(5000, 2.0) for v in "abc"}):
        decision = promotion_decision(policy, arms, {}, NOW)
        assert decision is not None and not decision.promoted and decision.variant is None


def test_bernoulli_arm_posteriors_match_posteriors():
    policy = make_policy(prior={"alpha": 2, "beta": 3})
    arms = {"a": arm(10, 0.7), "b": ArmCounts(rewards=10, reward_sum=10.000000001)}
    post = arm_posteriors(policy, arms, ["a", "b", "c"])
    a, b = posteriors(policy, arms, ["a", "b", "c"])
    assert post.reward == "bernoulli"
    assert post.params["alpha"].tolist() == a.tolist() and post.params["beta"].tolist() == b.tolist()
    assert post.fields(0) == {"alpha": pytest.approx(9.0), "beta": pytest.approx(6.0)}


# --------------------------------------------------------------------------- discounted thompson


def drifted(policy, before: dict[str, float], after: dict[str, float], n_before: int, n_after: int, step: int = 50):
    """Cumulative counters of a stream that changes rates, and the discount state a replica
    refreshing every `step` rewards per arm would hold."""
    names = list(before)
    counts = {v: [0, 0.0] for v in names}
    state = None
    for i in range(0, n_before + n_after, step):
        rates = before if i < n_before else after
        for v in names:
            counts[v][0] += step
            counts[v][1] += step * rates[v]
        arms = {v: ArmCounts(rewards=c[0], reward_sum=c[1], requests=c[0]) for v, c in counts.items()}
        state = discount(policy, arms, {}, state)
    return arms, state


def test_discount_is_none_for_other_algorithms():
    assert discount(make_policy(), {"a": arm(10, 0.5)}, {}, None) is None


def test_discounted_thompson_follows_a_drift_that_thompson_does_not():
    policy = make_policy(names=("a", "b"), min_weight=0.01, min_samples=100,
                         algorithm="discounted_thompson", discount=0.999)
    arms, state = drifted(policy, {"a": 0.30, "b": 0.20}, {"a": 0.10, "b": 0.20}, 20_000, 2_000)
    plain = allocate(make_policy(names=("a", "b"), min_weight=0.01, min_samples=100), arms, {})
    disc = allocate(policy, arms, {}, state)
    assert disc.mode == "discounted_thompson"
    assert plain.shares["a"] > 0.9  # the cumulative counters still favour a
    assert disc.shares["b"] > 0.9  # the discounted ones have moved to b
    assert state.names == ("a", "b") and sum(state.effective_rewards().values()) < 1 / (1 - 0.999)


def test_discounted_allocation_with_state_is_idempotent_and_without_it_rebuilds():
    policy = make_policy(names=("a", "b"), min_samples=100, algorithm="discounted_thompson", discount=0.9995)
    arms, state = drifted(policy, {"a": 0.3, "b": 0.2}, {"a": 0.1, "b": 0.2}, 4000, 1000)
    again = discount(policy, arms, {}, state)
    np.testing.assert_array_equal(again.stats.decayed, state.stats.decayed)
    assert allocate(policy, arms, {}, state) == allocate(policy, arms, {}, again)
    # Without a state the whole history is folded in as one batch: valid shares, same mode.
    rebuilt = allocate(policy, arms, {})
    assert rebuilt.mode == "discounted_thompson"
    assert_sums_to_one(rebuilt.shares)


def test_discount_state_follows_arm_changes_and_a_new_gamma():
    policy = make_policy(names=("a", "b", "c"), algorithm="discounted_thompson", discount=0.99)
    arms = {v: arm(100, 0.5) for v in "abc"}
    state = discount(policy, arms, {}, None)
    # c retired: dropped; the others keep their rows.
    state2 = discount(policy, arms, {"retired": json.dumps(["c"])}, state)
    assert state2.names == ("a", "b")
    np.testing.assert_array_equal(state2.stats.decayed, state.stats.decayed[:2])
    # A new discount starts over from the cumulative counters.
    other = policy.model_copy(update={"discount": 0.5})
    fresh = discount(other, arms, {}, state)
    assert fresh.gamma == 0.5
    np.testing.assert_array_equal(fresh.stats.decayed, discount(other, arms, {}, None).stats.decayed)


def test_discount_state_adds_a_challenger_from_zero():
    policy = make_policy(names=("a", "b"), algorithm="discounted_thompson", discount=0.99)
    state = discount(policy, {"a": arm(100, 0.5), "b": arm(100, 0.5)}, {}, None)
    bigger = make_policy(names=("a", "b", "c"), algorithm="discounted_thompson", discount=0.99)
    arms = {"a": arm(100, 0.5), "b": arm(100, 0.5), "c": arm(2, 0.5)}
    state2 = discount(bigger, arms, {}, state)
    assert state2.names == ("a", "b", "c")
    # Two new rewards, all on c: a and b decay by gamma^2, c enters at weight w(2).
    np.testing.assert_allclose(state2.stats.decayed[:2], state.stats.decayed * 0.99**2)
    assert state2.stats.decayed[2, 0] == pytest.approx(2 * (1 + 0.99) / 2)


# --------------------------------------------------------------------------- floor schedule (issue 16)


def test_the_floor_is_full_until_every_arm_has_min_samples_then_decays():
    # burn_in 20 < min_samples 1000: the bandit runs while c still lacks the rule's minimum, and
    # the losers keep the full floor until it has it.
    policy = make_policy(min_weight=0.05, min_samples=1000, burn_in=20)
    arms = {"a": arm(1000, 0.2), "b": arm(1000, 0.9), "c": arm(999, 0.2)}
    shares = allocate(policy, arms, {}).shares
    assert shares["a"] == pytest.approx(0.05, abs=1e-12) and shares["c"] == pytest.approx(0.05, abs=1e-12)
    # Every arm at exactly min_samples: the rule can first decide, the floor is still full.
    arms["c"] = arm(1000, 0.2)
    assert allocate(policy, arms, {}).shares["c"] == pytest.approx(0.05, abs=1e-12)
    # 4x the evidence halves it: 0.05 * sqrt(3 * 1000 / 12_000).
    arms = {"a": arm(4000, 0.2), "b": arm(4000, 0.9), "c": arm(4000, 0.2)}
    shares = allocate(policy, arms, {}).shares
    assert shares["a"] == pytest.approx(0.025, abs=1e-12) and shares["c"] == pytest.approx(0.025, abs=1e-12)
    assert shares["b"] == pytest.approx(0.95, abs=1e-12)
    assert shares["a"] == pytest.approx(floor_schedule(0.05, [4000, 4000, 4000], 1000), abs=1e-12)


def test_the_floor_decays_to_min_weight_final_and_no_lower():
    arms = {"a": arm(10**6, 0.2), "b": arm(10**6, 0.9), "c": arm(10**6, 0.2)}
    # Default bound: min_weight / 10.
    shares = allocate(make_policy(min_weight=0.05, min_samples=100), arms, {}).shares
    assert shares["a"] == pytest.approx(0.005, abs=1e-12) and shares["c"] == pytest.approx(0.005, abs=1e-12)
    shares = allocate(make_policy(min_weight=0.05, min_samples=100, min_weight_final=0.02), arms, {}).shares
    assert shares["a"] == pytest.approx(0.02, abs=1e-12)
    # min_weight_final = min_weight: the constant floor of before.
    shares = allocate(make_policy(min_weight=0.05, min_samples=100, min_weight_final=0.05), arms, {}).shares
    assert shares["a"] == pytest.approx(0.05, abs=1e-12) and shares["b"] == pytest.approx(0.90, abs=1e-12)


def test_a_late_challenger_brings_back_the_full_floor_until_it_has_min_samples():
    policy = make_policy(min_weight=0.05, min_samples=100)
    arms = {"a": arm(100_000, 0.9), "b": arm(100_000, 0.2), "c": arm(0, 0.5)}
    young = allocate(policy, arms, {})
    assert young.mode == "burn_in_challenger"
    assert young.shares["b"] == pytest.approx(0.05, abs=1e-12)
    # Once c has min_samples the rule can judge it: the floor falls back to what the evidence
    # (200,100 rewards against 3 * 100) allows, here the bound.
    arms["c"] = arm(100, 0.0)
    shares = allocate(policy, arms, {}).shares
    assert shares["b"] == pytest.approx(0.005, abs=1e-12) and shares["c"] == pytest.approx(0.005, abs=1e-12)
    assert_sums_to_one(shares)


def test_min_weight_final_is_optional_and_checked():
    assert make_policy().min_weight_final is None
    assert make_policy(min_weight_final=0.002).min_weight_final == 0.002
    for bad in (-0.001, 0.5):
        with pytest.raises(PolicyError, match="min_weight_final"):
            make_policy(min_weight_final=bad)


# --------------------------------------------------------------------------- properties


count_st = st.tuples(st.integers(0, 3000), st.floats(0, 1), st.floats(0.01, 5))


@settings(deadline=None, max_examples=60, derandomize=True, database=None)
@given(
    counts=st.lists(count_st, min_size=3, max_size=3),
    reward=st.sampled_from(["bernoulli", "gaussian"]),
    algorithm=st.sampled_from(["thompson", "top_two_thompson", "discounted_thompson"]),
    min_weight=st.floats(0, 0.3),
    holdout=st.booleans(),
)
def test_shares_sum_to_one_and_respect_the_floor(counts, reward, algorithm, min_weight, holdout):
    fraction = 0.2
    policy = make_policy(
        min_weight=min_weight, min_samples=50, algorithm=algorithm, discount=0.99, reward={"type": reward},
        holdout=("c", fraction) if holdout else None,
    )
    arms = {v: (arm(n, p) if reward == "bernoulli" else garm(n, 10 * p, sd)) for v, (n, p, sd) in zip("abc", counts)}
    alloc = allocate(policy, arms, {})
    assert_sums_to_one(alloc.shares)
    bandit = [v for v in "abc" if not (holdout and v == "c")]
    scale = 1 - fraction if holdout else 1.0
    # The floor the schedule gives for these counters (min_weight until every arm has min_samples).
    floor = floor_schedule(min_weight, [arms[v].rewards for v in bandit], 50, None)
    for v in bandit:
        assert alloc.shares[v] >= scale * floor - 1e-12
    if holdout:
        assert alloc.shares["c"] == fraction


@settings(deadline=None, max_examples=60, derandomize=True, database=None)
@given(
    counts=st.lists(count_st, min_size=3, max_size=3),
    reward=st.sampled_from(["bernoulli", "gaussian"]),
    algorithm=st.sampled_from(["thompson", "top_two_thompson", "discounted_thompson"]),
    min_weight=st.floats(0, 0.3),
    final=st.one_of(st.none(), st.floats(0, 0.3)),
    burn_in=st.one_of(st.none(), st.integers(0, 100)),
    holdout=st.booleans(),
)
def test_shares_respect_the_scheduled_floor(counts, reward, algorithm, min_weight, final, burn_in, holdout):
    fraction = 0.2
    policy = make_policy(
        min_weight=min_weight, min_samples=50, algorithm=algorithm, discount=0.99, reward={"type": reward},
        holdout=("c", fraction) if holdout else None, min_weight_final=final, burn_in=burn_in,
    )
    arms = {v: (arm(n, p) if reward == "bernoulli" else garm(n, 10 * p, sd)) for v, (n, p, sd) in zip("abc", counts)}
    alloc = allocate(policy, arms, {})
    assert_sums_to_one(alloc.shares)
    bandit = [v for v in "abc" if not (holdout and v == "c")]
    scale = 1 - fraction if holdout else 1.0
    floor = floor_schedule(min_weight, [arms[v].rewards for v in bandit], 50, final)
    lowest = min(min_weight / 10 if final is None else final, min_weight)
    for v in bandit:
        assert alloc.shares[v] >= scale * floor - 1e-12
        assert alloc.shares[v] >= scale * lowest - 1e-12
        if min(arms[u].rewards for u in bandit) < 50:
            assert alloc.shares[v] >= scale * min_weight - 1e-12


def test_mc_stats_are_computed_once_per_posterior_and_equal_to_a_fresh_computation(monkeypatch):
    """The dashboard series asks for every experiment's Monte-Carlo figures every 2 s: equal
    posteriors (seeded draws) reuse the figures, other posteriors compute theirs, and a caller
    changing the returned arrays does not change what the next caller gets."""
    from gateway.bandit import beta
    from gateway.decisions import allocation

    policy = make_policy(("a", "b"))
    idle = arm_posteriors(policy, {"a": arm(300, 0.2), "b": arm(300, 0.3)}, ["a", "b"])
    fresh = beta._mc_stats(idle.params["alpha"], idle.params["beta"], beta.DEFAULT_DRAWS, None)
    calls = []
    real = beta._mc_stats
    monkeypatch.setattr(beta, "_mc_stats", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(allocation, "_MC_CACHE", type(allocation._MC_CACHE)())

    pb, el = idle.mc_stats()
    np.testing.assert_array_equal(pb, fresh[0])
    np.testing.assert_array_equal(el, fresh[1])
    pb[:] = -1.0
    again = arm_posteriors(policy, {"a": arm(300, 0.2), "b": arm(300, 0.3)}, ["a", "b"]).mc_stats()
    np.testing.assert_array_equal(again[0], fresh[0])
    assert len(calls) == 1

    moved = arm_posteriors(policy, {"a": arm(301, 0.2), "b": arm(300, 0.3)}, ["a", "b"]).mc_stats()
    assert len(calls) == 2
    assert not np.array_equal(moved[1], fresh[1])


def test_the_mc_stats_memo_is_bounded(monkeypatch):
    from gateway.decisions import allocation

    monkeypatch.setattr(allocation, "_MC_CACHE", type(allocation._MC_CACHE)())
    monkeypatch.setattr(allocation, "_MC_CACHE_SIZE", 3)
    policy = make_policy(("a", "b"))
    for n in range(10, 16):
        arm_posteriors(policy, {"a": arm(n, 0.5), "b": arm(n, 0.5)}, ["a", "b"]).mc_stats()
    assert len(allocation._MC_CACHE) == 3
