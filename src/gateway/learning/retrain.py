"""Retraining: pure functions, no Redis and no Ray (run them in a Ray task).

The retrainer gathers labelled traffic (LabelledData, training_data.py), splits it by time,
trains each candidate algorithm on the earlier part and admits a challenger only if it beats
the champion on the later part (candidates.py, which also records how often that rule errs);
this module runs that against the live variants and registers the challenger it admits. The
names the rest of the gateway imports from here are re-exported from those modules.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.learning import artifacts
from gateway.learning.candidates import CandidateResult, RetrainResult, best_on_holdout, evaluate_candidates
from gateway.learning.model_metrics import METRICS, classification_metrics, mcnemar_p_value
from gateway.learning.training_data import MIN_ROWS, LabelledData, time_ordered_split
from gateway.policy import Policy

if TYPE_CHECKING:
    from gateway.learning.registry import ModelRegistry, RegistryEntry

__all__ = [
    "METRICS",
    "MIN_ROWS",
    "CandidateResult",
    "LabelledData",
    "RetrainOutcome",
    "RetrainResult",
    "best_on_holdout",
    "classification_metrics",
    "evaluate_candidates",
    "live_refs",
    "mcnemar_p_value",
    "retrain_against_live",
    "run_retrain",
    "time_ordered_split",
]


@dataclass
class RetrainOutcome:
    result: RetrainResult
    entry: RegistryEntry | None  # the registered challenger, when one was admitted

    @property
    def admitted(self) -> bool:
        return self.entry is not None


def run_retrain(
    policy: Policy,
    data: LabelledData,
    champion_model: Any,
    registry: ModelRegistry,
    experiment: str | None = None,
    seed: int = 0,
    margin: float = 0.01,
    now: float | None = None,
    *,
    champion_name: str | None = None,
    candidates: Sequence[str] | None = None,
    metric: str = "accuracy",
    holdout_fraction: float = 0.25,
    max_p_value: float | None = None,
    taken_names: Iterable[str] = (),
    champion_features: Sequence[str] | None = None,
) -> RetrainOutcome:
    """evaluate_candidates, then register the admitted challenger (if any) under a fresh name
    (`<algorithm>-r<k>`, avoiding `taken_names` and the policy's variants) with metadata: data
    window, every candidate's and the champion's holdout metrics, the selection rule, the
    champion it was compared against (also recorded as its parent), the seed and its sha256.

    The registered model is exactly the one evaluated (trained without the holdout rows); its
    metadata records the features it takes (names, columns, derived specs: variant_features)."""
    from gateway.learning.variant_features import feature_record

    experiment = experiment or policy.experiment
    result = evaluate_candidates(
        policy, data, champion_model, candidates, seed, margin,
        metric=metric, holdout_fraction=holdout_fraction, max_p_value=max_p_value,
        champion_features=champion_features,
    )
    best = result.admitted
    if best is None:
        return RetrainOutcome(result, None)
    name = registry.next_name(experiment, best.algorithm, taken=[*policy.variant_names, *taken_names])
    metadata = {
        "algorithm": best.algorithm,
        "seed": seed,
        "data_window": {**data.window(), "train": result.train_window, "holdout": result.holdout_window},
        "metrics": {
            "challenger": best.metrics,
            "champion": result.champion,
            "candidates": {k: c.to_dict() for k, c in result.candidates.items()},
        },
        "selection": {
            "metric": metric,
            "margin": margin,
            "max_p_value": max_p_value,
            "improvement": best.improvement,
            "p_value": best.p_value,
            "reason": result.reason,
        },
        "parent": champion_name,
        "compared_against": champion_name,
        # The request schema it was trained under, and the features it takes (by name).
        "schema": [f.model_dump(mode="json") for f in policy.features],
        **feature_record(policy, best.features, best.model),
        "feature_set": best.features is not None,
    }
    if now is not None:
        metadata["created_at"] = float(now)
    entry = registry.register(experiment, name, best.model, metadata)
    return RetrainOutcome(result, entry)


def live_refs(policy: Policy, meta: Mapping[str, str], refs: Mapping[str, Mapping[str, str]]) -> list[Mapping[str, str]]:
    """The artifacts a challenger must beat: every live arm that has one, the champion first
    (best_on_holdout keeps the first of equals)."""
    from gateway.decisions.allocation import live_arms  # allocation sits above the learning package

    live = [v for v in live_arms(policy, meta) if v in refs]
    champion = meta.get("champion")
    live.sort(key=lambda v: v != champion)
    return [refs[v] for v in live]


def retrain_against_live(
    policy: Policy, data: LabelledData, live: Sequence[Mapping[str, str]], registry: ModelRegistry, seed: int,
    taken: Iterable[str] = (),
) -> dict[str, Any]:
    """One retraining run as the retrainer's task does it: load the `live` variants' artifacts
    (refs with variant, path, sha256; sha256 checked), pick the best of them on the holdout,
    train the candidates and register the challenger if it beats that model by the margin.
    Returns {compared_against, admitted, entry (name, algorithm, path, sha256) or None, result},
    and with retrain.mlflow, `mlflow`: the MLflow run and model version, or {"error": ...}."""
    models = {ref["variant"]: artifacts.load_model(ref["path"], expected_sha256=ref["sha256"]) for ref in live}
    # Each live model is judged on its own features (a ref's `features`; absent: the policy's).
    features = {ref["variant"]: ref.get("features") for ref in live}
    best = best_on_holdout(policy, models, data, features=features)
    outcome = run_retrain(
        policy, data, models[best], registry, policy.experiment, seed=seed, margin=policy.retrain.margin,
        champion_name=best, candidates=list(policy.retrain.candidates), max_p_value=policy.retrain.max_p_value,
        taken_names=list(taken), champion_features=features[best],
    )
    entry = outcome.entry
    out: dict[str, Any] = {
        "compared_against": best,
        "admitted": entry is not None,
        "entry": None if entry is None else {
            "name": entry.name, "algorithm": entry.algorithm, "path": str(entry.path), "sha256": entry.sha256,
            # What it takes: a feature set is served with exactly these columns.
            "features": entry.metadata["features"], "feature_set": entry.metadata["feature_set"],
        },
        "result": outcome.result.to_dict(),
    }
    if entry is not None and policy.retrain.mlflow:
        # After the registry write: whatever happens in MLflow, the challenger is kept.
        from gateway.learning.mlflow_logging import log_challenger

        out["mlflow"] = log_challenger(policy, entry, outcome.result, data.window())
    return out
