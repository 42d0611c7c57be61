import math

import numpy as np
import pytest

from gateway.learning.artifacts import predict, train
from gateway.monitoring.drift import (
    PSI_MODERATE,
    PSI_SIGNIFICANT,
    bin_edges,
    feature_drift,
    level,
    prediction_drift,
    psi,
    psi_categorical,
)
from gateway.learning.features import FeatureEncoder
from gateway.policy import parse_policy
from gateway.sim.churn import FEATURES, make_churn


@pytest.fixture(scope="module")
def policy():
    return parse_policy({"experiment": "churn", "features": FEATURES, "variants": [{"name": "a", "model": "a.ubj"}]})


def _shifted(rows, **changes):
    names = [f["name"] for f in FEATURES]
    out = []
    for row in rows:
        row = list(row)
        for name, fn in changes.items():
            j = names.index(name)
            row[j] = fn(row[j])
        out.append(row)
    return out


def test_same_distribution_is_near_zero_and_a_shift_is_large():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    assert psi(ref, rng.normal(0, 1, 5000)) < 0.02
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    assert psi(ref, rng.normal(1, 1, 5000)) > PSI_SIGNIFICANT  # a one-sd shift
    assert psi(ref, rng.normal(0, 2, 5000)) > PSI_SIGNIFICANT  # a wider spread
    assert psi(ref, rng.normal(0.1, 1, 5000)) < PSI_MODERATE  # a small nudge


def test_psi_matches_the_formula_on_hand_made_bins():
    expected = np.arange(100.0)  # deciles at 9.9, 19.8, ..., 89.1 (linear interpolation)
    np.testing.assert_allclose(bin_edges(expected, 10), 9.9 * np.arange(1, 10))
    actual = np.concatenate([np.full(50, 5.0), np.full(50, 95.0)])  # half in the first decile, half in the last
    e = np.full(10, 0.1)
    a = np.array([0.5] + [1e-4] * 8 + [0.5])
    assert psi(expected, actual) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))


def test_values_outside_the_reference_range_still_count():
    ref = np.linspace(0, 1, 1000)
    assert psi(ref, np.full(500, 7.0)) > 5  # everything beyond the top edge


def test_discrete_and_constant_references():
    rng = np.random.default_rng(1)
    calls = np.minimum(rng.poisson(3.0, 4000), 10)
    assert psi(calls, np.minimum(rng.poisson(3.0, 4000), 10)) < 0.02
    assert psi(calls, np.minimum(rng.poisson(5.0, 4000), 10)) > PSI_SIGNIFICANT
    const = np.full(100, 2.0)
    assert psi(const, np.full(50, 2.0)) == pytest.approx(0.0, abs=1e-12)
    assert psi(const, np.full(50, 3.0)) > PSI_SIGNIFICANT  # above the constant
    assert psi(const, np.full(50, 1.0)) > PSI_SIGNIFICANT  # below it


def test_bad_inputs():
    with pytest.raises(ValueError):
        psi([], [1.0])
    with pytest.raises(ValueError):
        psi([1.0, math.nan], [1.0])
    with pytest.raises(ValueError):
        psi([1.0, 2.0], [1.0], bins=1)
    with pytest.raises(ValueError):
        psi_categorical([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        psi_categorical({"a": 0}, {"a": 5})
    with pytest.raises(TypeError):
        psi_categorical({"a": 1}, [1])


def test_categorical_psi():
    assert psi_categorical({"a": 50, "b": 50}, {"b": 500, "a": 500}) == pytest.approx(0.0, abs=1e-12)
    want = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi_categorical([50, 50], [80, 20]) == pytest.approx(want)
    # A category never seen in the reference: its share is floored at epsilon, so it weighs heavily.
    assert psi_categorical({"a": 100}, {"a": 70, "new": 30}) > PSI_SIGNIFICANT


def test_levels():
    assert [level(x) for x in (0.0, 0.099, 0.1, 0.249, 0.25, 3.0)] == [
        "stable", "stable", "moderate", "moderate", "significant", "significant"
    ]


def test_feature_drift_on_churn_rows(policy):
    train_rows, _ = make_churn(3000, seed=1)
    same, _ = make_churn(3000, seed=2)
    drift = feature_drift(policy, train_rows, same)
    assert set(drift) == {"tenure", "monthly_charges", "support_calls", "plan"}
    assert max(drift.values()) < PSI_MODERATE
    # Concept drift changes the labelling rule, not the inputs: PSI cannot see it.
    concept1, _ = make_churn(3000, seed=3, concept=1)
    assert max(feature_drift(policy, train_rows, concept1).values()) < PSI_MODERATE
    # Shift one input's distribution directly: only that feature moves.
    older = _shifted(same, tenure=lambda t: min(72.0, t + 30.0))
    drift = feature_drift(policy, train_rows, older)
    assert drift["tenure"] > PSI_SIGNIFICANT
    assert max(v for k, v in drift.items() if k != "tenure") < PSI_MODERATE
    upsold = _shifted(same, plan=lambda p: "enterprise" if p == "basic" else p)
    drift = feature_drift(policy, train_rows, upsold)
    assert drift["plan"] > PSI_SIGNIFICANT
    assert max(v for k, v in drift.items() if k != "plan") < PSI_MODERATE
    # Rows as objects keyed by feature name work too.
    names = [f["name"] for f in FEATURES]
    as_dicts = [dict(zip(names, r, strict=True)) for r in older]
    assert feature_drift(policy, train_rows, as_dicts) == feature_drift(policy, train_rows, older)


def test_prediction_drift(policy):
    enc = FeatureEncoder(policy.features)
    rows, y = make_churn(1500, seed=4)
    model = train("logistic_regression", enc.encode(rows), y)
    ref_rows, _ = make_churn(2000, seed=5)
    same_rows, _ = make_churn(2000, seed=6)
    # Pricier contracts: the model predicts churn far more often.
    pricier = _shifted(same_rows, monthly_charges=lambda c: c + 40.0)
    ref_labels, ref_scores = predict(model, enc.encode(ref_rows))
    same_labels, same_scores = predict(model, enc.encode(same_rows))
    new_labels, new_scores = predict(model, enc.encode(pricier))
    assert prediction_drift(ref_scores, same_scores) < PSI_MODERATE
    assert prediction_drift(ref_labels, same_labels) < PSI_MODERATE
    assert prediction_drift(ref_scores, new_scores) > PSI_SIGNIFICANT
    assert prediction_drift(ref_labels, new_labels) > PSI_SIGNIFICANT
    # Labels are compared as classes: 1 and 1.0 are the same class.
    assert prediction_drift([0, 1, 1, 0], [0.0, 1.0, 1.0, 0.0]) == pytest.approx(0.0, abs=1e-12)
    assert prediction_drift(["no", "yes"], ["no", "no", "yes", "yes"]) == pytest.approx(0.0, abs=1e-12)
    assert prediction_drift([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.2], kind="score") > 0
