"""MLflow model URIs in a policy, and the decision taken from an MLmodel file before anything is
loaded (no MLflow server or package needed here; tests/integration/test_mlflow.py has both)."""
from __future__ import annotations

import os

import pytest

from gateway.learning import mlflow_models
from gateway.learning.mlflow_models import MlflowModelError, choose_flavor, parse_mlflow_uri
from gateway.policy import is_mlflow_uri
from gateway.policy import PolicyError, parse_policy
from gateway.sim.churn import FEATURES


@pytest.mark.parametrize(
    ("uri", "fields"),
    [
        ("models:/churn/3", {"kind": "version", "name": "churn", "version": "3", "pinned": True}),
        ("models:/churn model.v2/012", {"kind": "version", "name": "churn model.v2", "version": "12"}),
        ("models:/churn@champion", {"kind": "alias", "name": "churn", "alias": "champion", "pinned": False}),
        ("runs:/0a1b2c3d4e5f/model", {"kind": "run", "run_id": "0a1b2c3d4e5f", "path": "model", "pinned": True}),
        ("runs:/0a1b2c3d4e5f/sub/dir/model/", {"kind": "run", "path": "sub/dir/model"}),
    ],
)
def test_the_three_accepted_forms_parse(uri, fields):
    assert is_mlflow_uri(uri)
    parsed = parse_mlflow_uri(uri)
    for k, v in fields.items():
        assert getattr(parsed, k) == v, k


@pytest.mark.parametrize(
    "uri",
    [
        "models:/churn",  # no version
        "models:/churn/latest",  # not pinned: moves with every registration
        "models:/churn/Production",  # stages are deprecated; an alias says the same
        "models:/m-64e78916081e474fbd23cf0e36fd887f",  # a logged model id, not a registered version
        "models:/churn/1/extra",
        "models:/churn@",
        "runs:/abc",
        "runs:/abc/../../etc",  # must not climb out of the download folder
        "runs://abc/model",
    ],
)
def test_other_forms_are_refused_naming_the_accepted_ones(uri):
    with pytest.raises(MlflowModelError, match=r"models:/<name>/<version>|not a plain relative"):
        parse_mlflow_uri(uri)


def test_plain_artifact_paths_are_not_mlflow_uris():
    assert not is_mlflow_uri("models/churn-xgb.ubj")
    assert not is_mlflow_uri("/abs/models:/x.ubj")


def _policy(model: str, **variant):
    return parse_policy(
        {"experiment": "churn", "features": FEATURES, "variants": [{"name": "a", "model": model, **variant}]}, "p.yaml"
    )


def test_a_policy_accepts_mlflow_uris_and_names_the_field_of_a_bad_one():
    assert _policy("models:/churn@champion").variants[0].model == "models:/churn@champion"
    with pytest.raises(PolicyError) as err:
        _policy("models:/churn/latest")
    assert "variants.0" in str(err.value) and "models:/<name>/<version>" in str(err.value)
    with pytest.raises(PolicyError, match="nothing to train"):
        _policy("models:/churn/1", train="xgboost")


def test_retrain_mlflow_defaults_to_off():
    assert _policy("a.skops").retrain.mlflow is False
    p = parse_policy(
        {"experiment": "churn", "features": FEATURES, "variants": [{"name": "a", "model": "a.skops"}],
         "retrain": {"enabled": True, "mlflow": True}}
    )
    assert p.retrain.mlflow is True


# -- the MLmodel file decides -------------------------------------------------------------------

URI = "models:/churn/1"


def _sklearn(**conf):
    return {"flavors": {"python_function": {"loader_module": "mlflow.sklearn"}, "sklearn": conf}}


def test_skops_sklearn_is_accepted():
    choice = choose_flavor(_sklearn(pickled_model="model.skops", serialization_format="skops"), URI)
    assert (choice.flavor, choice.data, choice.format) == ("sklearn", "model.skops", "skops")


@pytest.mark.parametrize("fmt", ["pickle", "cloudpickle", None])
def test_pickled_sklearn_is_refused_saying_how_to_log_it_safely(fmt):
    conf = {"pickled_model": "model.pkl"} | ({"serialization_format": fmt} if fmt else {})
    with pytest.raises(MlflowModelError) as err:
        choose_flavor(_sklearn(**conf), URI)
    message = str(err.value)
    # No format recorded: MLflow before 3.0, which always pickled.
    assert f"serialised with {fmt or 'pickle'}" in message and URI in message
    assert "serialization_format='skops'" in message


def test_skops_trusted_types_in_the_mlmodel_file_are_not_what_decides():
    # The file is as untrusted as the model: its allowlist is ignored (the gateway's own applies
    # at load), and the choice is the same with or without one.
    conf = {"pickled_model": "model.skops", "serialization_format": "skops", "skops_trusted_types": ["builtins.eval"]}
    assert choose_flavor(_sklearn(**conf), URI).format == "skops"


@pytest.mark.parametrize("data", ["../../x.skops", "/etc/x.skops", "model.pkl", ""])
def test_a_skops_file_path_must_be_plain_and_end_in_skops(data):
    with pytest.raises(MlflowModelError):
        choose_flavor(_sklearn(pickled_model=data, serialization_format="skops"), URI)


def _xgb(**conf):
    return {"flavors": {"xgboost": {"data": "model.ubj", "model_class": "xgboost.sklearn.XGBClassifier",
                                    "model_format": "ubj", **conf}}}


@pytest.mark.parametrize("fmt", ["ubj", "json"])
def test_xgboost_native_formats_are_accepted(fmt):
    choice = choose_flavor(_xgb(model_format=fmt, data=f"model.{fmt}"), URI)
    assert (choice.flavor, choice.data, choice.format) == ("xgboost", f"model.{fmt}", fmt)


def test_xgboost_refusals():
    with pytest.raises(MlflowModelError, match="model_format='ubj'"):
        choose_flavor(_xgb(model_format="xgb", data="model.xgb"), URI)  # the deprecated binary format
    with pytest.raises(MlflowModelError, match="XGBClassifier"):
        choose_flavor(_xgb(model_class="xgboost.core.Booster"), URI)
    with pytest.raises(MlflowModelError, match="XGBClassifier"):
        choose_flavor(_xgb(model_class="os.system"), URI)


def test_other_flavors_are_refused():
    with pytest.raises(MlflowModelError, match=r"flavors \['python_function'\].*never a pickle"):
        choose_flavor({"flavors": {"python_function": {"cloudpickle_version": "3.1"}}}, URI)
    with pytest.raises(MlflowModelError, match="no flavors"):
        choose_flavor({"artifact_path": "model"}, URI)
    with pytest.raises(MlflowModelError, match="no flavors"):
        choose_flavor("not a mapping", URI)



def test_retrain_mlflow_says_what_is_missing_before_the_gateway_starts(monkeypatch):
    import importlib.util

    from gateway.learning.mlflow_logging import check_ready

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if importlib.util.find_spec("mlflow") is None:
        assert "pip install 'ab-auto-promotion[mlflow]'" in check_ready()
        return
    assert "MLFLOW_TRACKING_URI" in check_ready()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert check_ready() is None


def test_a_tracking_uri_s_credentials_never_reach_a_message():
    from gateway.learning.mlflow_models import redact, shown_uri

    uri = "https://alice:s3cret@mlflow.example.com:5000/base"
    assert shown_uri(uri) == "https://mlflow.example.com:5000/base"
    assert shown_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    message = redact(f"GET {uri}/api/2.0/x failed; token s3cret refused", uri)
    assert "s3cret" not in message and "mlflow.example.com:5000/base/api" in message


def test_overlapping_calls_keep_the_retry_limits_until_the_last_one_ends(monkeypatch):
    # Two admin calls in the router's threads: the first to end must not take the limits away
    # from the other, which would then retry for minutes on MLflow's defaults.
    for key in mlflow_models._RETRY_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    first, second = mlflow_models.bounded_retries(), mlflow_models.bounded_retries()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert all(os.environ.get(k) == v for k, v in mlflow_models._RETRY_DEFAULTS.items())
    second.__exit__(None, None, None)
    assert not any(k in os.environ for k in mlflow_models._RETRY_DEFAULTS)


def test_the_users_own_retry_settings_win(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    with mlflow_models.bounded_retries():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9" and "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
