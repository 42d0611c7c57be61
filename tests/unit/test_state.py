"""Unit tests for gateway.decisions.state.experiment_state: the body of GET /v1/experiments/{e}."""
from __future__ import annotations

import json
import math

import pytest

from gateway.decisions import allocation
from gateway.policy import parse_policy
from gateway.decisions.state import experiment_state
from gateway.store.snapshot import ArmCounts, Snapshot

STARTED = 1_700_000_000.0


def make_policy(names=("logreg", "xgb", "base"), holdout=("base", 0.1), prior=(2.0, 3.0), min_samples=50):
    data = {
        "experiment": "churn",
        "features": [{"name": "x"}],
        "variants": [{"name": n, "model": f"{n}.m"} for n in names],
        "prior": {"alpha": prior[0], "beta": prior[1]},
        "promotion": {"min_samples": min_samples},
    }
    if holdout:
        data["holdout"] = {"variant": holdout[0], "fraction": holdout[1]}
    return parse_policy(data)


ARMS = {
    # Deliberately not in policy order.
    "xgb": ArmCounts(rewards=120, reward_sum=90.0, requests=150),
    "base": ArmCounts(rewards=60, reward_sum=30.5, requests=70),
    "logreg": ArmCounts(rewards=100, reward_sum=55.0, requests=130),
}
META = {"status": "exploring", "started_at": repr(STARTED)}
HISTORY = [{"t": STARTED, "event": "started"}]


def state(policy=None, arms=ARMS, meta=META, history=HISTORY, discounted=None):
    return experiment_state(
        policy or make_policy(), Snapshot(arms=dict(arms), meta=dict(meta)), list(history), discounted
    )


def by_name(result):
    return {v["name"]: v for v in result["variants"]}


def test_state_is_strict_json():
    text = json.dumps(state(), allow_nan=False)
    assert json.loads(text)["name"] == "churn"


def test_state_of_a_fresh_experiment_is_strict_json():
    result = state(arms={}, meta={})
    json.dumps(result, allow_nan=False)
    assert result["started_at"] is None
    assert result["totals"] == {"requests": 0, "rewards": 0}


def test_state_is_deterministic():
    first = json.dumps(state(), sort_keys=True, allow_nan=False)
    second = json.dumps(state(), sort_keys=True, allow_nan=False)
    assert first == second


def test_variants_are_listed_in_policy_order():
    assert [v["name"] for v in state()["variants"]] == ["logreg", "xgb", "base"]
    other = make_policy(names=("base", "xgb", "logreg"))
    assert [v["name"] for v in state(policy=other)["variants"]] == ["base", "xgb", "logreg"]


def test_posterior_is_prior_plus_rewards():
    variants = by_name(state())
    for name, counts in ARMS.items():
        post = variants[name]["posterior"]
        assert post["alpha"] == pytest.approx(2.0 + counts.reward_sum)
        assert post["beta"] == pytest.approx(3.0 + counts.rewards - counts.reward_sum)


def test_variant_without_counters_shows_the_prior():
    v = by_name(state(arms={"xgb": ARMS["xgb"]}))["logreg"]
    assert v["posterior"] == {"alpha": 2.0, "beta": 3.0}
    assert v["requests"] == 0 and v["rewards"] == 0 and v["reward_sum"] == 0.0
    assert v["mean"] == pytest.approx(2.0 / 5.0)


def test_mean_and_credible_interval_are_consistent():
    for v in state()["variants"]:
        a, b = v["posterior"]["alpha"], v["posterior"]["beta"]
        assert v["mean"] == pytest.approx(a / (a + b))
        lo, hi = v["credible_interval"]
        assert 0.0 <= lo < v["mean"] < hi <= 1.0


def test_traffic_shares_sum_to_one():
    for meta in (META, {"status": "promoted", "champion": "xgb"}, {}):
        shares = [v["traffic_share"] for v in state(meta=meta)["variants"]]
        assert math.fsum(shares) == pytest.approx(1.0, abs=1e-12)


def test_holdout_share_and_role():
    variants = by_name(state())
    assert variants["base"]["role"] == "holdout"
    assert variants["base"]["traffic_share"] == 0.1
    assert variants["logreg"]["role"] == "arm" and variants["xgb"]["role"] == "arm"


def test_holdout_has_no_prob_best_and_arms_do():
    variants = by_name(state())
    assert variants["base"]["prob_best"] is None
    assert variants["base"]["expected_loss"] is None
    pb = [variants[n]["prob_best"] for n in ("logreg", "xgb")]
    assert math.fsum(pb) == pytest.approx(1.0, abs=1e-9)
    assert variants["xgb"]["prob_best"] > variants["logreg"]["prob_best"]


def test_without_holdout_every_variant_is_an_arm():
    result = state(policy=make_policy(holdout=None))
    assert {v["role"] for v in result["variants"]} == {"arm"}


def test_requests_and_rewards_are_copied():
    variants = by_name(state())
    for name, counts in ARMS.items():
        assert variants[name]["requests"] == counts.requests
        assert variants[name]["rewards"] == counts.rewards
        assert variants[name]["reward_sum"] == counts.reward_sum


def test_totals_and_header_fields():
    result = state()
    assert result["totals"] == {"requests": 350, "rewards": 280}
    assert result["experiment"] == "churn"
    assert result["status"] == "exploring"
    assert result["champion"] is None
    assert result["started_at"] == STARTED
    assert result["allocation"] == "thompson"
    assert result["promotion_rule"]["min_samples"] == 50
    assert result["history"] == HISTORY


def test_promoted_state_shows_champion_and_its_share():
    result = state(meta={"status": "promoted", "champion": "xgb", "started_at": repr(STARTED)})
    variants = by_name(result)
    assert result["status"] == "promoted" and result["champion"] == "xgb"
    assert result["allocation"] == "promoted"
    assert variants["xgb"]["traffic_share"] == pytest.approx(0.9)
    assert variants["logreg"]["traffic_share"] == 0.0


def test_burn_in_state_reports_burn_in():
    result = state(policy=make_policy(min_samples=1000))
    assert result["allocation"] == "burn_in"
    variants = by_name(result)
    assert variants["logreg"]["traffic_share"] == pytest.approx(0.45)
    assert variants["xgb"]["traffic_share"] == pytest.approx(0.45)


# --------------------------------------------------------------------------- holdout uplift


def test_no_holdout_no_uplift():
    assert state(policy=make_policy(holdout=None))["holdout_uplift"] is None


def test_uplift_of_the_leader_over_the_holdout():
    result = state()
    up = result["holdout_uplift"]
    variants = by_name(result)
    # No champion yet: the arm most likely to be best (xgb, 92/125 against 57/105).
    assert up["variant"] == "xgb" and up["holdout"] == "base"
    assert up["uplift"] == pytest.approx(variants["xgb"]["mean"] - variants["base"]["mean"], abs=1e-12)
    lo, hi = up["credible_interval"]
    assert lo < up["uplift"] < hi
    # xgb's and base's posteriors: Beta(92, 33) and Beta(32.5, 32.5); their difference has
    # mean 0.236 and sd 0.073, so the 95% interval is about mean +- 0.143.
    assert lo == pytest.approx(0.236 - 1.96 * 0.073, abs=0.005)
    assert hi == pytest.approx(0.236 + 1.96 * 0.073, abs=0.005)
    assert up["prob_positive"] > 0.99


def test_uplift_is_the_champions_once_there_is_one():
    meta = {"status": "promoted", "champion": "logreg", "started_at": repr(STARTED)}
    up = state(meta=meta)["holdout_uplift"]
    assert up["variant"] == "logreg"
    variants = by_name(state(meta=meta))
    assert up["uplift"] == pytest.approx(variants["logreg"]["mean"] - variants["base"]["mean"], abs=1e-12)


def test_uplift_without_any_data_is_centred_on_zero():
    up = state(arms={}, meta={})["holdout_uplift"]
    assert up["uplift"] == 0.0
    lo, hi = up["credible_interval"]
    assert lo < 0 < hi and lo == pytest.approx(-hi, abs=0.02)
    json.dumps(up, allow_nan=False)


# --------------------------------------------------------------------------- gaussian rewards


def gaussian_policy(holdout=("base", 0.1), **extra):
    data = {
        "experiment": "revenue",
        "features": [{"name": "x"}],
        "variants": [{"name": n, "model": f"{n}.m"} for n in ("logreg", "xgb", "base")],
        "reward": {"type": "gaussian", "prior": {"mu": 0.0, "kappa": 1.0, "alpha": 2.0, "beta": 2.0}},
        "promotion": {"min_samples": 50},
        **extra,
    }
    if holdout:
        data["holdout"] = {"variant": holdout[0], "fraction": holdout[1]}
    return parse_policy(data)


def garm(n, mean, sd):
    return ArmCounts(rewards=n, reward_sum=n * mean, reward_sq_sum=n * (mean * mean + sd * sd), requests=n)


GARMS = {"logreg": garm(200, 10.0, 4.0), "xgb": garm(300, 12.0, 4.0), "base": garm(100, 9.0, 4.0)}


def test_gaussian_state_shows_normal_inverse_gamma_posteriors():
    result = state(policy=gaussian_policy(), arms=GARMS)
    json.dumps(result, allow_nan=False)
    assert result["reward_type"] == "gaussian"
    v = by_name(result)
    for name, counts in GARMS.items():
        post = v[name]["posterior"]
        assert set(post) == {"mu", "kappa", "alpha", "beta"}
        assert post["kappa"] == 1.0 + counts.rewards
        assert post["alpha"] == 2.0 + counts.rewards / 2
        assert post["mu"] == pytest.approx(counts.reward_sum / (1.0 + counts.rewards))
        assert v[name]["mean"] == post["mu"]
        lo, hi = v[name]["credible_interval"]
        # Student-t marginal: about mean +- 1.96 * sd / sqrt(n) for this much data.
        half = 1.96 * 4.0 / math.sqrt(counts.rewards)
        assert lo == pytest.approx(post["mu"] - half, rel=0.02)
        assert hi == pytest.approx(post["mu"] + half, rel=0.02)
    assert v["xgb"]["prob_best"] > 0.99
    assert v["base"]["prob_best"] is None


def test_gaussian_holdout_uplift_is_in_reward_units():
    up = state(policy=gaussian_policy(), arms=GARMS)["holdout_uplift"]
    assert up["variant"] == "xgb"
    assert up["uplift"] == pytest.approx(12.0 * 300 / 301 - 9.0 * 100 / 101)
    lo, hi = up["credible_interval"]
    sd = 4.0 * math.sqrt(1 / 300 + 1 / 100)
    assert lo == pytest.approx(up["uplift"] - 1.96 * sd, abs=0.05)
    assert hi == pytest.approx(up["uplift"] + 1.96 * sd, abs=0.05)


def test_gaussian_state_of_a_fresh_experiment_is_strict_json():
    result = state(policy=gaussian_policy(), arms={}, meta={})
    json.dumps(result, allow_nan=False)
    assert by_name(result)["xgb"]["posterior"] == {"mu": 0.0, "kappa": 1.0, "alpha": 2.0, "beta": 2.0}


def test_state_is_deterministic_for_gaussian_rewards():
    first = json.dumps(state(policy=gaussian_policy(), arms=GARMS), sort_keys=True)
    assert first == json.dumps(state(policy=gaussian_policy(), arms=dict(GARMS)), sort_keys=True)


# --------------------------------------------------------------------------- discounted thompson


def test_discount_is_reported_only_for_discounted_thompson():
    assert state()["discount"] is None
    policy = make_policy(min_samples=50).model_copy(update={"algorithm": "discounted_thompson", "discount": 0.99})
    result = state(policy=policy)
    assert result["allocation"] == "discounted_thompson"
    assert result["discount"]["gamma"] == 0.99
    eff = result["discount"]["effective_rewards"]
    assert set(eff) == {"logreg", "xgb"}  # the bandit's arms, not the holdout
    assert 0 < sum(eff.values()) < 1 / (1 - 0.99)


def test_state_shows_the_shares_of_the_replicas_discount_state():
    policy = make_policy(min_samples=50).model_copy(update={"algorithm": "discounted_thompson", "discount": 0.9})
    old = {"logreg": ArmCounts(rewards=100, reward_sum=90.0), "xgb": ArmCounts(rewards=100, reward_sum=10.0)}
    new = {"logreg": ArmCounts(rewards=150, reward_sum=90.0), "xgb": ArmCounts(rewards=150, reward_sum=60.0)}
    replica = allocation.discount(policy, new, META, allocation.discount(policy, old, META, None))
    result = state(policy=policy, arms=new, discounted=replica)
    shares = {v["name"]: v["traffic_share"] for v in result["variants"]}
    assert shares == allocation.allocate(policy, new, META, replica).shares
    # The last 100 rewards (logreg 0/50, xgb 50/50) dominate at gamma 0.9: xgb leads, while
    # the history folded in as one batch (no replica state) still weighs logreg's 90/100.
    assert shares["xgb"] > 0.8
    rebuilt = allocation.allocate(policy, new, META).shares
    assert rebuilt["logreg"] > rebuilt["xgb"]
    assert result["discount"]["effective_rewards"] == pytest.approx(replica.effective_rewards())
