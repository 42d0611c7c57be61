"""How MLflow's errors reach the admin API: the model's fault (422, asking again cannot help) or
an MLflow that cannot answer now (503). Needs MLflow's client (the `mlflow` extra), which the
MLflow tier (`.ci/mlflow.sh`) installs; without it these are skipped, saying so, and there they
fail if it is missing."""
from __future__ import annotations

import os

import pytest

from gateway.learning import mlflow_models

if os.environ.get("GATEWAY_TEST_MLFLOW_SERVER"):
    import mlflow  # noqa: F401 - the tier was asked for: a missing client is a failure
else:
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (the MLflow tier runs these)")


@pytest.mark.parametrize(("code", "kind", "says"), [
    ("RESOURCE_DOES_NOT_EXIST", "model", "not found on"),
    ("PERMISSION_DENIED", "model", "refused by"),  # asking again will not help: not a 503
    ("INVALID_PARAMETER_VALUE", "model", "refused by"),
    # How MLflow reports a download whose connection failed, after its retries.
    ("INTERNAL_ERROR", "unavailable", "cannot read it from"),
    ("UNAUTHENTICATED", "unavailable", "cannot read it from"),  # the gateway's credentials
    ("TEMPORARILY_UNAVAILABLE", "unavailable", "cannot read it from"),
])
def test_mlflows_answers_are_the_models_fault_or_an_outage(monkeypatch, code, kind, says):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ErrorCode

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:s3cret@127.0.0.1:5000")
    err = MlflowException("The following failures occurred (http://user:s3cret@127.0.0.1:5000)",
                          error_code=ErrorCode.Value(code))
    got = mlflow_models._classified(err, "models:/churn/1/model.skops", "MLflow's artifact store")
    assert isinstance(got, mlflow_models.MlflowUnavailable) == (kind == "unavailable")
    assert isinstance(got, mlflow_models.MlflowModelError)
    assert says in str(got) and "s3cret" not in str(got)


def test_a_file_missing_from_the_artifact_store_is_the_models_fault(monkeypatch):
    # The artifact proxy's 404 arrives as requests' error text inside an INTERNAL_ERROR.
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    err = MlflowException("The following failures occurred while downloading one or more artifacts:\n"
                          "##### File model.skops #####\n404 Client Error: Not Found for url: http://127.0.0.1:5000/x",
                          error_code=INTERNAL_ERROR)
    got = mlflow_models._classified(err, "models:/churn/1/model.skops", "MLflow's artifact store")
    assert not isinstance(got, mlflow_models.MlflowUnavailable) and "not found on" in str(got)
