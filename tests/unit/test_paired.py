"""The paired e-values shadow first decides on: anytime-valid (checked after every row, equal
models cross 1/alpha at most alpha of the time), and powerful when one model is better."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.bandit.paired import log_e_values, mcnemar_p_value
from gateway.decisions import shadow_first
from gateway.policy import parse_policy
from gateway.store.snapshot import ArmCounts


def _ever_crosses(p: float, rows: int, runs: int, alpha: float, seed: int) -> tuple[float, float]:
    """Share of runs in which each e-value ever reaches 1/alpha, checked after every discordant row."""
    rng = np.random.default_rng(seed)
    wins = np.cumsum(rng.random((runs, rows)) < p, axis=1)
    better = worse = 0
    for run in wins:
        crossed = [log_e_values(int(w), i + 1 - int(w)) for i, w in enumerate(run)]
        better += any(b >= math.log(1 / alpha) for b, _ in crossed)
        worse += any(w >= math.log(1 / alpha) for _, w in crossed)
    return better / runs, worse / runs


def test_equal_models_cross_at_most_alpha_of_the_time_however_often_checked():
    # 400 seeded runs of 300 discordant rows, checked after each: a valid e-value crosses with
    # probability <= 0.05; the bound below (0.05 + 3 sd of a 400-run share) fails < 0.2% of seeds.
    better, worse = _ever_crosses(0.5, 300, 400, 0.05, seed=1)
    assert better <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 400)
    assert worse <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 400)


def test_a_better_model_is_found_and_never_called_worse():
    better, worse = _ever_crosses(0.75, 300, 100, 0.05, seed=2)
    assert better == 1.0 and worse == 0.0


def test_e_values_are_symmetric_and_one_with_no_evidence():
    assert log_e_values(0, 0) == pytest.approx((0.0, 0.0))
    b, w = log_e_values(30, 10)
    assert log_e_values(10, 30) == pytest.approx((w, b))
    assert mcnemar_p_value(0, 0) == 1.0 and mcnemar_p_value(10, 0) == pytest.approx(0.5**10)


POLICY = parse_policy({
    "experiment": "sf", "features": [{"name": "x"}],
    "variants": [{"name": "a", "model": "a.skops"}, {"name": "b", "model": "b.skops"}],
    "retrain": {"max_p_value": 0.05, "shadow_first": {"labels": 100}},
})
DYNAMIC = {"c": {"name": "c", "path": "c.skops", "role": "shadow", "shadow_first": True}}


def _verdict(wins: int, losses: int, n: int) -> shadow_first.ShadowVerdict:
    from gateway.decisions.allocation import effective_policy

    arms = {"a": ArmCounts(rewards=100, reward_sum=60.0), "b": ArmCounts(rewards=100, reward_sum=40.0)}
    paired = {("c", "a"): {"sw": wins, "lw": losses, "n": n}}
    (v,) = shadow_first.verdicts(effective_policy(POLICY, DYNAMIC), arms, {"status": "exploring"}, DYNAMIC, paired)
    return v


def test_verdicts_graduate_early_retire_early_and_retire_at_the_limit():
    assert _verdict(12, 0, 30).outcome == "graduate"  # before `labels`: the evidence is in
    assert _verdict(0, 12, 30).outcome == "retire"
    assert _verdict(3, 2, 30).outcome == "wait"
    late = _verdict(6, 4, 100)
    assert late.outcome == "retire" and "within 100 labels" in late.reason
    assert late.evidence["against"] == "a"  # the live arm with the higher posterior mean
