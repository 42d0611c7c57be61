import numpy as np
import pytest

from gateway.learning.artifacts import train
from gateway.learning.features import FeatureEncoder
from gateway.policy import Feature
from gateway.sim.churn import FEATURES, make_churn

# Measured over 10 seed triples (2000 training rows, 2000 held-out rows each): XGBoost
# 0.925-0.948, logistic regression 0.686-0.724 (gap >= 0.21), XGBoost trained on concept 0 scores
# 0.67-0.71 on concept 1 (drop >= 0.23). With the seeds used here: 0.940 / 0.702 / 0.680.
# The assertions keep a wide margin from those numbers.
MIN_XGB = 0.85
MAX_LOGREG = 0.75
MIN_GAP = 0.12
MIN_DRIFT_DROP = 0.15


@pytest.fixture(scope="module")
def enc() -> FeatureEncoder:
    return FeatureEncoder([Feature(**f) for f in FEATURES])


@pytest.fixture(scope="module")
def data(enc):
    rows, y = make_churn(2000, seed=1)
    test_rows, y_test = make_churn(2000, seed=2)
    drift_rows, y_drift = make_churn(2000, seed=3, concept=1)
    return enc.encode(rows), y, enc.encode(test_rows), y_test, enc.encode(drift_rows), y_drift


@pytest.fixture(scope="module")
def xgb(data):
    X, y, *_ = data
    return train("xgboost", X, y, seed=0)


def test_features_match_the_policy_schema(enc):
    assert [f["name"] for f in FEATURES] == ["tenure", "monthly_charges", "support_calls", "plan"]
    assert enc.width == 6


def test_deterministic_for_a_seed():
    a_rows, a_y = make_churn(300, seed=7)
    b_rows, b_y = make_churn(300, seed=7)
    c_rows, _ = make_churn(300, seed=8)
    assert a_rows == b_rows
    np.testing.assert_array_equal(a_y, b_y)
    assert a_rows != c_rows


def test_rows_and_labels_are_well_formed(enc):
    rows, y = make_churn(1000, seed=0)
    assert len(rows) == 1000 and y.shape == (1000,)
    assert set(np.unique(y)) == {0, 1}
    assert y.dtype.kind == "i"
    for tenure, charges, calls, plan in rows:
        assert isinstance(tenure, float) and 0 <= tenure <= 72
        assert isinstance(charges, float) and 20 <= charges <= 120
        assert isinstance(calls, float) and calls == int(calls) and 0 <= calls <= 10
        assert plan in ("basic", "pro", "enterprise")
    enc.encode(rows)  # the rows pass the policy's own validation


@pytest.mark.parametrize("concept", [0, 1])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_balance(seed, concept):
    _, y = make_churn(2000, seed=seed, concept=concept)
    assert 0.3 <= y.mean() <= 0.7


def test_invalid_arguments():
    with pytest.raises(ValueError):
        make_churn(0, seed=0)
    with pytest.raises(ValueError):
        make_churn(10, seed=0, concept=5)


def test_boosted_trees_clearly_beat_logistic_regression(data, xgb):
    X, y, X_test, y_test, *_ = data
    logreg = train("logistic_regression", X, y, seed=0)
    acc_xgb = (xgb.predict(X_test) == y_test).mean()
    acc_lr = (logreg.predict(X_test) == y_test).mean()
    assert acc_xgb >= MIN_XGB
    assert acc_lr <= MAX_LOGREG
    assert acc_xgb - acc_lr >= MIN_GAP
    assert acc_xgb < 0.995  # label noise keeps everything below 100%


def test_concept_drift_hurts_the_old_model(data, xgb):
    _, _, X_test, y_test, X_drift, y_drift = data
    before = (xgb.predict(X_test) == y_test).mean()
    after = (xgb.predict(X_drift) == y_drift).mean()
    assert before - after >= MIN_DRIFT_DROP
