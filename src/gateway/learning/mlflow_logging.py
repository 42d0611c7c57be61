"""`retrain.mlflow: true`: log each admitted challenger to MLflow, beside the gateway's registry.

One run per challenger in the MLflow experiment `gateway-<experiment>` (params: the selection
rule and what it was compared against; metrics: its and the champion's holdout metrics; the data
window as params and as data_window.json; the model, skops for scikit-learn and UBJSON for
XGBoost, never a pickle), registered as a new version of the model `gateway-<experiment>`.

The challenger is already in the gateway's registry when this runs, and nothing here raises: a
failure comes back as {"error": ...} for the retrainer's history entry, with a warning logged.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.learning import artifacts
from gateway.learning.mlflow_models import INSTALL_HINT, TRACKING_ENV, bounded_retries, redact

if TYPE_CHECKING:
    from gateway.learning.candidates import RetrainResult
    from gateway.learning.registry import RegistryEntry
    from gateway.policy import Policy

log = logging.getLogger("gateway.mlflow")


def mlflow_name(experiment: str) -> str:
    """The MLflow experiment and registered model a gateway experiment's challengers go to."""
    return f"gateway-{experiment}"


def check_ready() -> str | None:
    """Why logging cannot work in this environment (None when it can): checked at start so a
    policy with retrain.mlflow fails at once rather than at its first challenger."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return f"retrain.mlflow needs the mlflow extra: {INSTALL_HINT}"
    if not os.environ.get(TRACKING_ENV, "").strip():
        return f"retrain.mlflow needs {TRACKING_ENV} (the tracking server to log challengers to)"
    return None


def _numeric(prefix: str, values: Mapping[str, Any] | None) -> dict[str, float]:
    """MLflow metrics are finite floats: undefined ones (None) are left out."""
    out = {}
    for k, v in (values or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[f"{prefix}{k}"] = float(v)
    return out


def _params(policy: Policy, entry: RegistryEntry, result: RetrainResult, window: Mapping[str, Any]) -> dict[str, str]:
    best = result.admitted
    raw = {
        "gateway_experiment": policy.experiment,
        "variant": entry.name,
        "algorithm": entry.algorithm,
        "gateway_sha256": entry.sha256,
        "compared_against": entry.metadata.get("compared_against"),
        "selection_metric": result.metric,
        "margin": result.margin,
        "max_p_value": result.max_p_value,
        "seed": result.seed,
        "reason": result.reason,
        "improvement": best.improvement if best else None,
        # The features the model takes, in column order (the registry metadata's, variant_features).
        "features": ",".join(f if isinstance(f, str) else str(f.get("name")) for f in entry.metadata.get("features") or []),
        **{f"window_{k}": v for k, v in window.items()},
        **{f"train_{k}": v for k, v in result.train_window.items()},
        **{f"holdout_{k}": v for k, v in result.holdout_window.items()},
    }
    # MLflow params are strings of at most 6000 characters.
    return {k: str(v)[:6000] for k, v in raw.items()}


def log_challenger(policy: Policy, entry: RegistryEntry, result: RetrainResult, window: Mapping[str, Any]) -> dict[str, Any]:
    """Log the admitted challenger `entry` (model: result.admitted.model). Returns {run_id,
    experiment_id, model_uri, registered_model, version} or {"error": message}."""
    try:
        with bounded_retries():
            return _log(policy, entry, result, window)
    except Exception as err:  # noqa: BLE001 - whatever MLflow raises, the challenger stays
        message = redact(f"{type(err).__name__}: {err}", os.environ.get(TRACKING_ENV, "").strip())
        log.warning("could not log challenger %s of %s to MLflow: %s", entry.name, policy.experiment, message)
        return {"error": message[:2000]}


def _log(policy: Policy, entry: RegistryEntry, result: RetrainResult, window: Mapping[str, Any]) -> dict[str, Any]:
    if (problem := check_ready()) is not None:
        raise RuntimeError(problem)
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    best = result.admitted
    if best is None or best.model is None:
        raise ValueError("no admitted challenger to log")
    tracking = os.environ[TRACKING_ENV].strip()
    client = mlflow.MlflowClient(tracking_uri=tracking)
    name = mlflow_name(policy.experiment)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            experiment_id = client.create_experiment(name)
        except MlflowException:  # another retrainer created it meanwhile
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            experiment_id = exp.experiment_id
    else:
        experiment_id = exp.experiment_id
    tags = {"gateway.experiment": policy.experiment, "gateway.variant": entry.name, "gateway.sha256": entry.sha256}
    run = client.create_run(experiment_id, run_name=entry.name, tags=tags)
    run_id = run.info.run_id
    status = "FAILED"
    try:
        ts = int(float(entry.created_at) * 1000)
        metrics = _numeric("holdout_", best.metrics) | _numeric("champion_holdout_", result.champion)
        if best.improvement is not None and math.isfinite(best.improvement):
            metrics["improvement"] = float(best.improvement)
        if best.p_value is not None and math.isfinite(best.p_value):
            metrics["p_value"] = float(best.p_value)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, ts, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in _params(policy, entry, result, window).items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.log_dict(
            run_id,
            {"window": dict(window), "train": result.train_window, "holdout": result.holdout_window},
            "data_window.json",
        )
        info = _log_model(best.model, {"name": "model", "registered_model_name": name, "run_id": run_id, "tags": tags})
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)
    version = info.registered_model_version
    return {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "model_uri": info.model_uri,
        "registered_model": name,
        "version": None if version is None else str(version),
    }


def _log_model(model: Any, common: dict[str, Any]) -> Any:
    """The model in one of the gateway's own safe formats, so that the gateway can load it back."""
    # MLflow warns about its own signature inference while it logs a model: not the operator's
    # concern, so kept out of the gateway's output.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if artifacts._is_xgboost(model):
            import mlflow.xgboost

            return mlflow.xgboost.log_model(model, model_format="ubj", **common)
        import mlflow.sklearn

        return mlflow.sklearn.log_model(
            model, serialization_format="skops",
            # What skops needs beyond its defaults for our algorithms (HistGradientBoosting's trees).
            skops_trusted_types=sorted(artifacts.TRUSTED_SKOPS_TYPES), **common,
        )
