"""Retraining with feature sets: `retrain.candidates` may try a feature set (raw and derived
features the champion does not use), each candidate trains and is judged on the columns serving
would give it, and the admitted challenger's registry entry says which features it takes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gateway.learning import artifacts
from gateway.learning.candidates import evaluate_candidates
from gateway.learning.registry import ModelRegistry
from gateway.learning.retrain import LabelledData, retrain_against_live
from gateway.learning.views import FeatureView
from gateway.policy import PolicyError, parse_policy
from gateway.sim.churn import FEATURES, make_churn

BASE = [f["name"] for f in FEATURES]
SET = {"algorithm": "xgboost", "features": [*BASE, "age_band"]}


def policy(**retrain):
    return parse_policy({
        "experiment": "rf",
        "features": [*FEATURES, {"name": "age"}],
        "derived": [{"name": "age_band", "op": "bucket", "of": ["age"], "bins": [30, 50]}],
        "variants": [{"name": "champ", "model": "c.ubj", "features": BASE}],
        "retrain": {"enabled": True, "max_p_value": None, **retrain},
    })


def world(n: int, seed: int) -> LabelledData:
    """Churn rows plus `age`; the label is the middle age band (30-50), which no churn feature
    carries: a model without age_band cannot learn it."""
    rows, _ = make_churn(n, seed)
    age = np.random.default_rng(seed + 100).uniform(18, 80, n)
    y = ((age >= 30) & (age < 50)).astype(int)
    return LabelledData([dict(zip(BASE, r)) | {"age": float(a)} for r, a in zip(rows, age)], y, np.arange(n, dtype=float))


@pytest.fixture(scope="module")
def champion():
    data = world(1000, 1)
    return artifacts.train("xgboost", FeatureView(policy()).matrix(BASE, data.X), data.y)


def test_a_feature_set_candidate_is_judged_on_its_own_columns_and_wins():
    p = policy(candidates=["xgboost", SET])
    r = evaluate_candidates(p, world(1200, 2), None, seed=0)
    label = "xgboost[tenure,monthly_charges,support_calls,plan,age_band]"
    assert set(r.candidates) == {"xgboost", label}
    # `xgboost` alone takes the policy's features, `age` among them: it learns the band too.
    assert r.candidates[label].metrics["accuracy"] > 0.97
    assert r.candidates[label].to_dict()["features"] == SET["features"]
    assert "features" not in r.candidates["xgboost"].to_dict()


def test_the_admitted_challenger_records_the_features_it_takes(tmp_path, champion):
    p = policy(candidates=[SET])
    path = tmp_path / "champ.ubj"
    sha = artifacts.save_model(champion, path)
    live = [{"experiment": "rf", "variant": "champ", "path": str(path), "sha256": sha, "features": BASE}]
    out = retrain_against_live(p, world(1200, 3), live, ModelRegistry(tmp_path / "reg"), seed=0)
    assert out["admitted"], out["result"]["reason"]
    assert out["entry"]["features"] == SET["features"] and out["entry"]["feature_set"] is True
    champ_acc = out["result"]["champion"]["accuracy"]
    won = out["result"]["candidates"]["xgboost[tenure,monthly_charges,support_calls,plan,age_band]"]
    assert won["metrics"]["accuracy"] - champ_acc > 0.2  # the band carries the signal
    meta = json.loads((tmp_path / "reg" / "rf" / f"{out['entry']['name']}.ubj.meta.json").read_text())
    assert meta["features"] == SET["features"]
    assert meta["columns"][-4:] == ["plan=basic", "plan=pro", "plan=enterprise", "age_band"]
    assert meta["derived"] == [{"name": "age_band", "op": "bucket", "of": ["age"], "bins": [30.0, 50.0]}]
    assert meta["inputs"] == sorted([*BASE, "age"])
    # The registered model takes exactly those columns, as the router will select them.
    model = artifacts.load_model(tmp_path / "reg" / "rf" / f"{out['entry']['name']}.ubj")
    assert model.n_features_in_ == len(meta["columns"])


def test_a_candidate_naming_a_feature_the_policy_lacks_is_refused():
    with pytest.raises(PolicyError, match=r"retrain.candidates\[0\].features: 'income' is not a feature"):
        policy(candidates=[{"algorithm": "xgboost", "features": ["income"]}])


def test_feature_set_candidates_survive_the_trip_to_the_deployments():
    from gateway.policy import Policy

    p = policy(candidates=["xgboost", SET])
    assert Policy.model_validate(p.model_dump(mode="json")) == p
