"""Unit tests for gateway.state.experiment_state: the body of GET /v1/experiments/{e}."""
from __future__ import annotations

import json
import math

import pytest

from gateway.policy import parse_policy
from gateway.state import experiment_state
from gateway.store.experiments import ArmCounts, Snapshot

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


def state(policy=None, arms=ARMS, meta=META, history=HISTORY):
    return experiment_state(policy or make_policy(), Snapshot(arms=dict(arms), meta=dict(meta)), list(history))


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
