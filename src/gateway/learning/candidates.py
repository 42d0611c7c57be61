"""Candidate challengers: each candidate algorithm trained on the earlier part of the data,
scored with the champion on the later part (the holdout), and admitted only if it beats it.

The holdout is the most recent share of the rows (time_ordered_split), so a challenger is
judged on the world as it is now, never on rows older than its training data. A challenger is
admitted only if it beats the champion on the chosen metric by at least `margin`; the bandit
then tests it live.

How often a margin-only rule admits a challenger that is no better: measured on the churn
simulator (stationary concept 0, 2,000 logged rows -> 1,500 train / 500 holdout, margin 0.01):

- champion trained on 4,000 bootstrap rows, XGBoost challenger on the 1,500 logged rows:
  admitted in 0 of 30 seed pairs (mean difference -0.013, largest +0.006);
- champion also trained on 1,500 rows: admitted in 12 of 40 (30 %; the two models' true
  accuracies differ by about 0.02 at that size); adding `max_p_value=0.05` (one-sided exact
  McNemar test on the holdout) halved that to 15 %.

After concept drift (concept 1, same sizes) the retrained XGBoost beat the stale champion by at
least 0.22 in every one of 30 seeds (challenger >= 0.91, champion <= 0.72).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.learning import aggregates, artifacts
from gateway.learning.model_metrics import METRICS, classification_metrics, mcnemar_p_value
from gateway.learning.training_data import LabelledData, time_ordered_split
from gateway.learning.views import FeatureView
from gateway.policy import Policy
from gateway.policy_features import RetrainCandidate

# Admission compares floats: an improvement equal to the margin up to rounding counts as reaching it.
_TOLERANCE = 1e-9


@dataclass
class CandidateResult:
    algorithm: str
    model: Any = field(default=None, repr=False)
    metrics: dict[str, Any] | None = None
    improvement: float | None = None  # over the champion on the selection metric, signed so > 0 is better
    p_value: float | None = None  # one-sided McNemar vs the champion (accuracy)
    error: str | None = None
    features: tuple[str, ...] | None = None  # None: the policy's features

    @property
    def label(self) -> str:
        """The algorithm, with its feature set when it has one: 'xgboost[tenure,visits]'."""
        return self.algorithm if self.features is None else f"{self.algorithm}[{','.join(self.features)}]"

    def to_dict(self) -> dict[str, Any]:
        """Every field but the model, which is not JSON (`features` only for a feature set)."""
        out = {name: getattr(self, name) for name in ("algorithm", "metrics", "improvement", "p_value", "error")}
        if self.features is not None:
            out["features"] = list(self.features)
        return out


def candidate_specs(items: Sequence[str | RetrainCandidate | Mapping[str, Any]]) -> dict[str, tuple[str, tuple[str, ...] | None]]:
    """label -> (algorithm, features): an algorithm name is itself on the policy's features; a
    feature set is labelled 'algorithm[f1,f2,...]'. Repeats are dropped."""
    out: dict[str, tuple[str, tuple[str, ...] | None]] = {}
    for item in items:
        if isinstance(item, str):
            out.setdefault(item, (item, None))
            continue
        spec = item if isinstance(item, RetrainCandidate) else RetrainCandidate.model_validate(dict(item))
        out.setdefault(spec.label, (spec.algorithm, tuple(spec.features)))
    return out


@dataclass
class RetrainResult:
    metric: str
    margin: float
    champion: dict[str, Any] | None  # the champion's metrics on the holdout
    candidates: dict[str, CandidateResult]
    admitted: CandidateResult | None
    reason: str
    train_window: dict[str, Any]
    holdout_window: dict[str, Any]
    seed: int
    max_p_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no model objects)."""
        return {
            "metric": self.metric,
            "margin": self.margin,
            "max_p_value": self.max_p_value,
            "champion": self.champion,
            "candidates": {k: c.to_dict() for k, c in self.candidates.items()},
            "admitted": self.admitted.algorithm if self.admitted else None,
            "reason": self.reason,
            "train_window": self.train_window,
            "holdout_window": self.holdout_window,
            "seed": self.seed,
        }


def _model_metrics(model: Any, X: np.ndarray, y: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    labels, score = artifacts.predict(model, X)
    return classification_metrics(y, labels, score), labels == y


def best_on_holdout(
    policy: Policy, models: Mapping[str, Any], data: LabelledData, holdout_fraction: float = 0.25,
    metric: str = "accuracy", features: Mapping[str, Sequence[str] | None] | None = None,
) -> str:
    """The name of the model that scores best on `metric` over the time-ordered holdout of
    `data` (ties: the first given): the one a challenger must beat. After a drift the champion
    holding the title may be the stalest of the live models; comparing against it would admit a
    new challenger on every run. `features`: the names each model takes (default: the policy's)."""
    if not models:
        raise ValueError("no models to compare")
    _, hold = time_ordered_split(data, holdout_fraction)
    view = FeatureView(policy, lenient=True)
    direction = METRICS[metric]
    scores = {}
    A = aggregates.logged_rows(policy, hold.agg, len(hold))
    for name, model in models.items():
        X = view.matrix((features or {}).get(name), hold.X, A)
        value = _model_metrics(model, X, hold.y)[0].get(metric)
        scores[name] = float("-inf") if value is None else direction * value
    return max(scores, key=scores.get)


def evaluate_candidates(
    policy: Policy,
    data: LabelledData,
    champion_model: Any,
    candidates: Sequence[str] | None = None,
    seed: int = 0,
    margin: float = 0.01,
    *,
    metric: str = "accuracy",
    holdout_fraction: float = 0.25,
    max_p_value: float | None = None,
    champion_features: Sequence[str] | None = None,
) -> RetrainResult:
    """Train each candidate algorithm (default: the policy's retrain.candidates) on the earlier
    part of `data`, score them and the champion on the later part, and admit the challenger
    with the largest improvement on `metric` if that improvement is at least `margin` (and, when
    `max_p_value` is set, the one-sided McNemar p-value against the champion is at most that).

    A candidate is an algorithm name (on the policy's features) or a RetrainCandidate (its own
    feature set); each trains and is judged on exactly the columns serving would give it (one
    FeatureView), and the champion on its own (`champion_features`, default the policy's).

    `champion_model` None means there is nothing to beat: the best candidate is admitted
    (choose it by the raw metric). A candidate that fails to train is reported with its error.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    specs = candidate_specs(candidates if candidates is not None else policy.retrain.candidates)
    for _, (a, _) in specs.items():
        if a not in artifacts.ALGORITHMS:
            raise ValueError(f"unknown candidate algorithm {a!r}; expected some of {list(artifacts.ALGORITHMS)}")
    direction = METRICS[metric]
    train, hold = time_ordered_split(data, holdout_fraction)
    view = FeatureView(policy, lenient=True)
    matrices: dict[tuple[str, ...] | None, tuple[np.ndarray, np.ndarray]] = {}
    # The aggregates each row was served with, as logged: point in time, never recomputed.
    A_train = aggregates.logged_rows(policy, train.agg, len(train))
    A_hold = aggregates.logged_rows(policy, hold.agg, len(hold))

    def matrices_for(names: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
        key = None if names is None else tuple(names)
        if key not in matrices:
            matrices[key] = (view.matrix(names, train.X, A_train), view.matrix(names, hold.X, A_hold))
        return matrices[key]

    def result(champ, cands, admitted, reason) -> RetrainResult:
        return RetrainResult(
            metric, margin, champ, cands, admitted, reason, train.window(), hold.window(), seed, max_p_value
        )

    champ_metrics: dict[str, Any] | None = None
    champ_correct: np.ndarray | None = None
    if champion_model is not None:
        champ_metrics, champ_correct = _model_metrics(champion_model, matrices_for(champion_features)[1], hold.y)

    results: dict[str, CandidateResult] = {}
    if np.unique(train.y).size < 2:
        for label, (a, names) in specs.items():
            results[label] = CandidateResult(a, error="the training window holds only one class", features=names)
        return result(champ_metrics, results, None, "not admitted: the training window holds only one class")

    for label, (a, names) in specs.items():
        try:
            X_train, X_hold = matrices_for(names)
            model = artifacts.train(a, X_train, train.y, seed=seed)
            m, correct = _model_metrics(model, X_hold, hold.y)
        except Exception as err:  # noqa: BLE001 - one broken candidate must not sink the others
            results[label] = CandidateResult(a, error=f"{type(err).__name__}: {err}", features=names)
            continue
        cand = CandidateResult(a, model=model, metrics=m, features=names)
        if champ_metrics is not None and champ_correct is not None:
            mine, theirs = m.get(metric), champ_metrics.get(metric)
            if mine is not None and theirs is not None:
                cand.improvement = direction * (mine - theirs)
            cand.p_value = mcnemar_p_value(champ_correct, correct)
        results[label] = cand

    trained = [c for c in results.values() if c.metrics is not None]
    if not trained:
        return result(champ_metrics, results, None, "not admitted: no candidate could be trained")
    if champion_model is None:
        scored = [c for c in trained if c.metrics[metric] is not None]
        if not scored:
            return result(champ_metrics, results, None, f"not admitted: {metric} is undefined on this holdout")
        best = max(scored, key=lambda c: direction * c.metrics[metric])
        return result(
            champ_metrics, results, best,
            f"admitted {best.label}: {metric} {best.metrics[metric]:.4f}; there is no champion to compare against",
        )
    comparable = [c for c in trained if c.improvement is not None]
    if not comparable:
        return result(champ_metrics, results, None, f"not admitted: {metric} is undefined on this holdout")
    best = max(comparable, key=lambda c: c.improvement)  # first listed wins a tie
    line = (
        f"{best.label} {metric} {best.metrics[metric]:.4f} vs champion {champ_metrics[metric]:.4f} "
        f"({best.improvement:+.4f} on {hold.window()['rows']} holdout rows"
    )
    if best.improvement + _TOLERANCE < margin:
        return result(champ_metrics, results, None, f"not admitted: best is {line} < margin {margin})")
    if max_p_value is not None and (best.p_value is None or best.p_value > max_p_value):
        return result(
            champ_metrics, results, None,
            f"not admitted: {line} >= margin {margin}, but McNemar p={best.p_value:.3g} > {max_p_value})",
        )
    return result(champ_metrics, results, best, f"admitted {line} >= margin {margin}, McNemar p={best.p_value:.3g})")
