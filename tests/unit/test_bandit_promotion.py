"""Unit tests for gateway.bandit.promotion (automatic promotion decisions).

All Monte-Carlo work uses the default fixed seed, so decisions are
deterministic. The clear-winner and identical-arm cases sit far from the
thresholds (see the comments), so they would hold for any seed too.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from gateway.bandit import Decision, PromotionRule, evaluate, posterior

RULE = PromotionRule(
    prob_best=0.95, max_expected_loss=0.001, min_samples=1000, min_duration_s=3600
)
NAMES = ["control", "candidate"]


def _arms(n, s):
    a, b = posterior(1.0, 1.0, n=n, s=s)
    return a, b, np.asarray(n, dtype=float)


def _assert_json_plain(evidence):
    # Strict JSON (no NaN/inf) and a lossless round trip of plain types.
    text = json.dumps(evidence, allow_nan=False, sort_keys=True)
    assert json.loads(text) == evidence


def test_promotes_clearly_better_arm():
    # 10% vs 14% on 5000 each: z ~ 6.2, prob_best ~ 1 - 1e-10, loss ~ 0.
    a, b, n = _arms([5000, 5000], [500, 700])
    d = evaluate(NAMES, a, b, n, RULE, elapsed_s=7200)
    assert d.outcome == "promote"
    assert d.variant == "candidate"
    assert d.promoted
    assert "candidate" in d.reason
    arm = d.evidence["arms"]["candidate"]
    assert arm["prob_best"] >= 0.95
    assert arm["expected_loss"] <= 0.001
    assert arm["rewards"] == 5000 and isinstance(arm["rewards"], int)
    assert arm["alpha"] == 701.0 and arm["beta"] == 4301.0
    assert arm["mean"] == pytest.approx(701 / 5002)
    assert d.evidence["rule"] == {
        "prob_best": 0.95,
        "max_expected_loss": 0.001,
        "min_samples": 1000,
        "min_duration_s": 3600.0,
    }
    assert d.evidence["candidate"] == "candidate"
    _assert_json_plain(d.evidence)


def test_promotes_among_three_arms():
    a, b, n = _arms([4000, 4000, 4000], [400, 600, 420])
    d = evaluate(["a", "b", "c"], a, b, n, RULE, elapsed_s=1e5)
    assert (d.outcome, d.variant) == ("promote", "b")
    assert set(d.evidence["arms"]) == {"a", "b", "c"}
    probs = [d.evidence["arms"][k]["prob_best"] for k in ("a", "b", "c")]
    assert sum(probs) == pytest.approx(1.0, abs=1e-12)
    _assert_json_plain(d.evidence)


def test_decision_is_deterministic():
    a, b, n = _arms([3000, 3000], [300, 330])
    d1 = evaluate(NAMES, a, b, n, RULE, elapsed_s=7200)
    d2 = evaluate(NAMES, a, b, n, RULE, elapsed_s=7200)
    assert d1 == d2
    assert json.dumps(d1.evidence, sort_keys=True) == json.dumps(d2.evidence, sort_keys=True)


def test_inconclusive_with_too_few_samples():
    # Clear effect, but one arm is under min_samples.
    a, b, n = _arms([5000, 999], [500, 300])
    d = evaluate(NAMES, a, b, n, RULE, elapsed_s=7200)
    assert d.outcome == "inconclusive"
    assert d.variant is None
    assert "too few samples" in d.reason and "candidate=999" in d.reason
    assert "control" not in d.reason
    # Statistics are still reported for dashboards.
    assert d.evidence["arms"]["candidate"]["prob_best"] > 0.99
    _assert_json_plain(d.evidence)


def test_inconclusive_before_min_duration():
    a, b, n = _arms([5000, 5000], [500, 700])
    d = evaluate(NAMES, a, b, n, RULE, elapsed_s=3599.0)
    assert d.outcome == "inconclusive"
    assert "min duration" in d.reason
    assert evaluate(NAMES, a, b, n, RULE, elapsed_s=3600.0).outcome == "promote"


def test_inconclusive_for_identical_arms_with_large_samples():
    # Same data on both arms: prob_best ~ 0.5 (MC SE ~0.0035 at 20k draws).
    a, b, n = _arms([50_000, 50_000], [5_000, 5_000])
    d = evaluate(NAMES, a, b, n, RULE, elapsed_s=1e6)
    assert d.outcome == "inconclusive"
    assert "prob_best" in d.reason
    for arm in d.evidence["arms"].values():
        assert arm["prob_best"] == pytest.approx(0.5, abs=0.02)
    _assert_json_plain(d.evidence)


def test_inconclusive_when_expected_loss_too_high():
    # prob_best passes a lax threshold but the loss bound is stricter than the data allows.
    rule = PromotionRule(prob_best=0.6, max_expected_loss=1e-6, min_samples=100)
    a, b, n = _arms([1000, 1000], [100, 110])
    d = evaluate(NAMES, a, b, n, rule, elapsed_s=0.0)
    assert d.outcome == "inconclusive"
    assert "expected loss" in d.reason


@pytest.mark.parametrize(
    "field",
    ["alpha", "beta", "n_rewards", "elapsed_s"],
)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_inconclusive_on_non_finite_input(field, bad):
    a, b, n = _arms([5000, 5000], [500, 700])
    kwargs = {"alpha": a.copy(), "beta": b.copy(), "n_rewards": n.copy(), "elapsed_s": 7200.0}
    if field == "elapsed_s":
        kwargs["elapsed_s"] = bad
    else:
        kwargs[field][1] = bad
    d = evaluate(NAMES, rule=RULE, **kwargs)
    assert d.outcome == "inconclusive"
    assert d.variant is None
    assert "non-finite" in d.reason and field in d.reason
    _assert_json_plain(d.evidence)  # NaN/inf become null


def test_inconclusive_on_invalid_posterior():
    d = evaluate(NAMES, [0.0, 5.0], [1.0, 5.0], [2000, 2000], RULE, elapsed_s=1e5)
    assert d.outcome == "inconclusive" and "invalid posterior" in d.reason
    d = evaluate(NAMES, [5.0, 5.0], [5.0, 5.0], [-1, 2000], RULE, elapsed_s=1e5)
    assert d.outcome == "inconclusive" and "negative" in d.reason


@pytest.mark.parametrize("k", [0, 1])
def test_inconclusive_with_fewer_than_two_arms(k):
    names = ["only"][:k]
    d = evaluate(names, [10.0] * k, [10.0] * k, [5000] * k, RULE, elapsed_s=1e5)
    assert d.outcome == "inconclusive"
    assert "at least 2 arms" in d.reason
    _assert_json_plain(d.evidence)


def test_programming_errors_raise():
    with pytest.raises(ValueError):
        evaluate(["a", "a"], [1, 1], [1, 1], [1, 1], RULE, elapsed_s=0)
    with pytest.raises(ValueError):
        evaluate(["a", "b"], [1, 1, 1], [1, 1], [1, 1], RULE, elapsed_s=0)


def test_evidence_json_with_fractional_rewards_and_explicit_rng():
    a, b = posterior(1, 1, n=[2000, 2000], s=[1000.25, 1200.5])
    d = evaluate(
        NAMES,
        a,
        b,
        [2000, 2000],
        PromotionRule(0.95, 0.01, 1000),
        elapsed_s=10,
        draws=5000,
        rng=np.random.default_rng(5),
    )
    assert d.outcome == "promote" and d.variant == "candidate"
    assert d.evidence["draws"] == 5000
    for arm in d.evidence["arms"].values():
        assert all(type(v) in (int, float) for v in arm.values())
    _assert_json_plain(d.evidence)


def test_rule_and_decision_are_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RULE.prob_best = 0.5  # type: ignore[misc]
    d = Decision("inconclusive", None, "r", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.outcome = "promote"  # type: ignore[misc]
    for bad in (
        dict(prob_best=0.0, max_expected_loss=0.1, min_samples=1),
        dict(prob_best=1.5, max_expected_loss=0.1, min_samples=1),
        dict(prob_best=0.9, max_expected_loss=-1, min_samples=1),
        dict(prob_best=0.9, max_expected_loss=0.1, min_samples=-1),
        dict(prob_best=0.9, max_expected_loss=0.1, min_samples=1, min_duration_s=-5),
    ):
        with pytest.raises(ValueError):
            PromotionRule(**bad)
