"""What an artifact says it takes (its metadata), checked against an experiment's policy before it
is served: names the schema lacks, derived features defined otherwise, a width that does not
match. And a bootstrap trains each variant on its own features."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.learning import artifacts
from gateway.learning.bootstrap import resolve_artifacts
from gateway.learning.variant_features import check_derived, declared_features, feature_record
from gateway.policy import load_policy_file, parse_policy
from gateway.sim.churn import FEATURES

BASE = [f["name"] for f in FEATURES]
POLICY = {
    "experiment": "vf",
    "features": FEATURES,
    "derived": [{"name": "per_month", "op": "ratio", "of": ["monthly_charges", "tenure"]}],
    "variants": [{"name": "a", "model": "a.skops"}],
}


def write_meta(tmp_path: Path, meta: dict) -> Path:
    artifact = tmp_path / "m.ubj"
    (tmp_path / "m.ubj.meta.json").write_text(json.dumps(meta))
    return artifact


def test_features_come_from_the_caller_then_the_metadata_then_nowhere(tmp_path):
    artifact = write_meta(tmp_path, {"features": ["tenure", "per_month"]})
    assert declared_features(artifact, ["plan"]) == ["plan"]
    assert declared_features(artifact, None) == ["tenure", "per_month"]
    assert declared_features(tmp_path / "other.ubj", None) is None
    # Older registry entries record the schema's feature objects: their names.
    old = write_meta(tmp_path, {"features": FEATURES})
    assert declared_features(old, None) == BASE
    bad = write_meta(tmp_path, {"features": "tenure"})
    with pytest.raises(ValueError, match="non-empty list of names"):
        declared_features(bad, None)


def test_a_name_the_schema_lacks_is_named():
    with pytest.raises(ValueError, match="feature 'income' is not in experiment 'vf'"):
        feature_record(parse_policy(POLICY), ["tenure", "income"])


def test_the_record_lists_columns_derived_specs_and_request_inputs():
    rec = feature_record(parse_policy(POLICY), ["plan", "per_month"])
    assert rec["columns"] == ["plan=basic", "plan=pro", "plan=enterprise", "per_month"]
    assert rec["derived"] == [{"name": "per_month", "op": "ratio", "of": ["monthly_charges", "tenure"]}]
    assert rec["inputs"] == ["monthly_charges", "plan", "tenure"]


def test_a_derived_feature_computed_otherwise_than_the_artifact_learned_is_refused(tmp_path):
    policy = parse_policy(POLICY)
    same = write_meta(tmp_path, {"derived": [{"name": "per_month", "op": "ratio", "of": ["monthly_charges", "tenure"]}]})
    check_derived(policy, same)
    other = write_meta(tmp_path, {"derived": [{"name": "per_month", "op": "ratio", "of": ["tenure", "monthly_charges"]}]})
    with pytest.raises(ValueError, match="'per_month': the artifact was trained with"):
        check_derived(policy, other)
    missing = write_meta(tmp_path, {"derived": [{"name": "calls_log", "op": "log", "of": ["support_calls"]}]})
    with pytest.raises(ValueError, match="'calls_log' .* is not declared"):
        check_derived(policy, missing)


def test_a_bootstrap_trains_each_variant_on_its_own_features(tmp_path):
    path = tmp_path / "vf.yaml"
    import yaml

    path.write_text(yaml.safe_dump({
        **POLICY,
        "variants": [{"name": "all", "model": "models/all.skops", "train": "logistic_regression"},
                     {"name": "two", "model": "models/two.ubj", "train": "xgboost", "features": ["tenure", "per_month"]}],
        "bootstrap": {"dataset": "churn", "rows": 300, "seed": 1},
    }))
    refs = resolve_artifacts(load_policy_file(path), path, tmp_path / "state")
    assert artifacts.load_model(refs["all"].path).n_features_in_ == 6
    assert artifacts.load_model(refs["two"].path).n_features_in_ == 2
    meta = json.loads(Path(refs["two"].path + ".meta.json").read_text())
    assert meta["features"] == ["tenure", "per_month"]
