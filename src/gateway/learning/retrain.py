"""Retraining and evaluation: pure functions, no Redis and no Ray (run them in a Ray task).

The retrainer gathers labelled traffic (LabelledData), splits it by time (the most recent share
is the holdout, so a challenger is judged on the world as it is now, never on rows older than
its training data), trains each candidate algorithm on the earlier part, and scores every
challenger and the current champion on the same holdout rows. A challenger is admitted only if
it beats the champion on the chosen metric by at least `margin`; the bandit then tests it live.

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

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.learning import artifacts
from gateway.learning.features import FeatureEncoder
from gateway.policy import Policy

if TYPE_CHECKING:
    from gateway.learning.registry import ModelRegistry, RegistryEntry

# Metric name -> +1 when higher is better, -1 when lower is better.
METRICS: dict[str, int] = {"accuracy": 1, "precision": 1, "recall": 1, "f1": 1, "roc_auc": 1, "log_loss": -1}
# Fewer labelled rows than this make a holdout too small to judge a challenger on.
MIN_ROWS = 200
# Admission compares floats: an improvement equal to the margin up to rounding counts as reaching it.
_TOLERANCE = 1e-9


# -- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledData:
    """Labelled rows in the API's form (lists in feature order, or objects keyed by feature),
    with their 0/1 labels and the time (unix seconds) each was served."""

    X: list
    y: np.ndarray
    t: np.ndarray
    # Feedback items that could not be used (label count mismatch, non-binary label, ...).
    skipped: int = 0

    def __post_init__(self) -> None:
        y = np.asarray(self.y)
        t = np.asarray(self.t, dtype=np.float64)
        if not isinstance(self.X, list):
            object.__setattr__(self, "X", list(self.X))
        if y.ndim != 1 or t.ndim != 1 or not len(self.X) == y.size == t.size:
            raise ValueError(f"X, y and t must have the same length, got {len(self.X)}, {y.shape}, {t.shape}")
        if y.size and not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be 0 or 1")
        if not np.all(np.isfinite(t)):
            raise ValueError("times must be finite")
        object.__setattr__(self, "y", y.astype(np.int64))
        object.__setattr__(self, "t", t)

    def __len__(self) -> int:
        return len(self.X)

    def take(self, index: Sequence[int] | np.ndarray) -> LabelledData:
        idx = np.asarray(index, dtype=np.int64)
        return LabelledData([self.X[i] for i in idx.tolist()], self.y[idx], self.t[idx])

    def window(self) -> dict[str, Any]:
        """{from_t, to_t, rows, positives}: the span of serving times covered."""
        if not len(self):
            return {"from_t": None, "to_t": None, "rows": 0, "positives": 0}
        return {
            "from_t": float(self.t.min()),
            "to_t": float(self.t.max()),
            "rows": len(self),
            "positives": int(self.y.sum()),
        }

    @classmethod
    def from_decisions(
        cls,
        decisions: Iterable[Mapping[str, Any]],
        feedback: Mapping[str, Mapping[str, Any]],
        *,
        derive_from_reward: bool = True,
    ) -> LabelledData:
        """Join decision-log entries with their feedback.

        `decisions`: decision-log stream entries (fields rid, t, x, pred; x and pred JSON text or
        already decoded). `feedback`: request id -> a mapping with `label` (one value or a list,
        one per instance; JSON text or decoded) and/or `reward`. A decision without feedback is
        left out. With `derive_from_reward`, a single-instance 0/1 prediction whose reward is
        exactly 0 or 1 (the policy's 'match' rule) gives its label even when the label itself
        was not stored: label = prediction if reward == 1 else 1 - prediction.
        """
        import json

        def decode(value: Any) -> Any:
            return json.loads(value) if isinstance(value, (str, bytes)) else value

        X: list = []
        y: list[int] = []
        t: list[float] = []
        skipped = 0
        for d in decisions:
            fb = feedback.get(d.get("rid"))
            if not fb:
                continue
            try:
                rows = decode(d["x"])
                when = float(d["t"])
                if "label" in fb and fb["label"] not in (None, ""):
                    labels = decode(fb["label"]) if isinstance(fb["label"], (str, bytes)) else fb["label"]
                    labels = labels if isinstance(labels, list) else [labels]
                elif derive_from_reward and "reward" in fb and fb["reward"] not in (None, ""):
                    preds = decode(d["pred"])
                    reward = float(fb["reward"])
                    if len(preds) != 1 or reward not in (0.0, 1.0) or _binary(preds[0]) is None:
                        skipped += 1
                        continue
                    p = _binary(preds[0])
                    labels = [p if reward == 1.0 else 1 - p]
                else:
                    skipped += 1
                    continue
                binary = [_binary(v) for v in labels]
                if not isinstance(rows, list) or len(binary) != len(rows) or any(b is None for b in binary):
                    skipped += 1
                    continue
            except (KeyError, TypeError, ValueError):
                skipped += 1
                continue
            X.extend(rows)
            y.extend(binary)  # type: ignore[arg-type]
            t.extend([when] * len(rows))
        return cls(X, np.asarray(y, dtype=np.int64), np.asarray(t, dtype=np.float64), skipped)


def _binary(value: Any) -> int | None:
    """0 or 1 from a label as clients send it (0/1, true/false, 0.0/1.0, "0"/"1"), else None."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value) in (0.0, 1.0):
        return int(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    return None


def time_ordered_split(data: LabelledData, holdout_fraction: float = 0.25) -> tuple[LabelledData, LabelledData]:
    """(train, holdout): the holdout is the latest `holdout_fraction` of the rows by serving time
    (rounded up; ties in time keep their input order). Both parts get at least one row."""
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    n = len(data)
    if n < 2:
        raise ValueError(f"need at least 2 rows to split, got {n}")
    n_hold = min(n - 1, max(1, math.ceil(n * holdout_fraction)))
    order = np.argsort(data.t, kind="stable")
    return data.take(order[: n - n_hold]), data.take(order[n - n_hold :])


# -- metrics --------------------------------------------------------------------------------


def _none_if_nan(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray | None = None
) -> dict[str, Any]:
    """Binary metrics (class 1 positive): n, accuracy, precision, recall, f1, roc_auc, log_loss.
    A metric that is undefined on these rows is None, never an exception or a warning:
    precision without predicted positives, recall without true positives, roc_auc unless scores
    are given and both classes present, log_loss unless scores are given."""
    from sklearn import metrics as skm

    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.asarray(y_pred).astype(np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty and the same length, got {y_true.shape} and {y_pred.shape}")
    out: dict[str, Any] = {"n": int(y_true.size)}
    out["accuracy"] = float(skm.accuracy_score(y_true, y_pred))
    kw = {"labels": [0, 1], "pos_label": 1, "average": "binary", "zero_division": np.nan}
    out["precision"] = _none_if_nan(skm.precision_score(y_true, y_pred, **kw))
    out["recall"] = _none_if_nan(skm.recall_score(y_true, y_pred, **kw))
    out["f1"] = _none_if_nan(skm.f1_score(y_true, y_pred, **kw))
    out["roc_auc"] = None
    out["log_loss"] = None
    if y_score is not None:
        score = np.asarray(y_score, dtype=np.float64)
        if score.shape != y_true.shape:
            raise ValueError(f"y_score must match y_true's shape {y_true.shape}, got {score.shape}")
        if np.unique(y_true).size == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, score))
        out["log_loss"] = float(skm.log_loss(y_true, np.clip(score, 1e-15, 1 - 1e-15), labels=[0, 1]))
    return out


def mcnemar_p_value(champion_correct: np.ndarray, challenger_correct: np.ndarray) -> float:
    """One-sided exact McNemar test on paired holdout outcomes: the probability of at least this
    many challenger-only wins among the discordant rows if both models were equally accurate."""
    from scipy.stats import binomtest

    wins = int(np.sum(challenger_correct & ~champion_correct))
    losses = int(np.sum(champion_correct & ~challenger_correct))
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)


# -- evaluation -----------------------------------------------------------------------------


@dataclass
class CandidateResult:
    algorithm: str
    model: Any = field(default=None, repr=False)
    metrics: dict[str, Any] | None = None
    improvement: float | None = None  # over the champion on the selection metric, signed so > 0 is better
    p_value: float | None = None  # one-sided McNemar vs the champion (accuracy)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "metrics": self.metrics,
            "improvement": self.improvement,
            "p_value": self.p_value,
            "error": self.error,
        }


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
    metric: str = "accuracy",
) -> str:
    """The name of the model that scores best on `metric` over the time-ordered holdout of
    `data` (ties: the first given): the one a challenger must beat. After a drift the champion
    holding the title may be the stalest of the live models; comparing against it would admit a
    new challenger on every run."""
    if not models:
        raise ValueError("no models to compare")
    _, hold = time_ordered_split(data, holdout_fraction)
    X = FeatureEncoder(policy.features).encode(hold.X)
    direction = METRICS[metric]
    scores = {}
    for name, model in models.items():
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
) -> RetrainResult:
    """Train each candidate algorithm (default: the policy's retrain.candidates) on the earlier
    part of `data`, score them and the champion on the later part, and admit the challenger
    with the largest improvement on `metric` if that improvement is at least `margin` (and, when
    `max_p_value` is set, the one-sided McNemar p-value against the champion is at most that).

    `champion_model` None means there is nothing to beat: the best candidate is admitted
    (choose it by the raw metric). A candidate that fails to train is reported with its error.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    algos = list(dict.fromkeys(candidates if candidates is not None else policy.retrain.candidates))
    for a in algos:
        if a not in artifacts.ALGORITHMS:
            raise ValueError(f"unknown candidate algorithm {a!r}; expected some of {list(artifacts.ALGORITHMS)}")
    direction = METRICS[metric]
    train, hold = time_ordered_split(data, holdout_fraction)
    enc = FeatureEncoder(policy.features)
    X_train, X_hold = enc.encode(train.X), enc.encode(hold.X)

    def result(champ, cands, admitted, reason) -> RetrainResult:
        return RetrainResult(
            metric, margin, champ, cands, admitted, reason, train.window(), hold.window(), seed, max_p_value
        )

    champ_metrics: dict[str, Any] | None = None
    champ_correct: np.ndarray | None = None
    if champion_model is not None:
        champ_metrics, champ_correct = _model_metrics(champion_model, X_hold, hold.y)

    results: dict[str, CandidateResult] = {}
    if np.unique(train.y).size < 2:
        for a in algos:
            results[a] = CandidateResult(a, error="the training window holds only one class")
        return result(champ_metrics, results, None, "not admitted: the training window holds only one class")

    for a in algos:
        try:
            model = artifacts.train(a, X_train, train.y, seed=seed)
            m, correct = _model_metrics(model, X_hold, hold.y)
        except Exception as err:  # noqa: BLE001 - one broken candidate must not sink the others
            results[a] = CandidateResult(a, error=f"{type(err).__name__}: {err}")
            continue
        cand = CandidateResult(a, model=model, metrics=m)
        if champ_metrics is not None and champ_correct is not None:
            mine, theirs = m.get(metric), champ_metrics.get(metric)
            if mine is not None and theirs is not None:
                cand.improvement = direction * (mine - theirs)
            cand.p_value = mcnemar_p_value(champ_correct, correct)
        results[a] = cand

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
            f"admitted {best.algorithm}: {metric} {best.metrics[metric]:.4f}; there is no champion to compare against",
        )
    comparable = [c for c in trained if c.improvement is not None]
    if not comparable:
        return result(champ_metrics, results, None, f"not admitted: {metric} is undefined on this holdout")
    best = max(comparable, key=lambda c: c.improvement)  # first listed wins a tie
    line = (
        f"{best.algorithm} {metric} {best.metrics[metric]:.4f} vs champion {champ_metrics[metric]:.4f} "
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


# -- retrain and register -------------------------------------------------------------------


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
) -> RetrainOutcome:
    """evaluate_candidates, then register the admitted challenger (if any) under a fresh name
    (`<algorithm>-r<k>`, avoiding `taken_names` and the policy's variants) with metadata: data
    window, every candidate's and the champion's holdout metrics, the selection rule, the
    champion it was compared against (also recorded as its parent), the seed and its sha256.

    The registered model is exactly the one evaluated (trained without the holdout rows)."""
    experiment = experiment or policy.experiment
    result = evaluate_candidates(
        policy, data, champion_model, candidates, seed, margin,
        metric=metric, holdout_fraction=holdout_fraction, max_p_value=max_p_value,
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
        "features": [f.model_dump(mode="json") for f in policy.features],
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
    Returns {compared_against, admitted, entry (name, algorithm, path, sha256) or None, result}."""
    models = {ref["variant"]: artifacts.load_model(ref["path"], expected_sha256=ref["sha256"]) for ref in live}
    best = best_on_holdout(policy, models, data)
    outcome = run_retrain(
        policy, data, models[best], registry, policy.experiment, seed=seed, margin=policy.retrain.margin,
        champion_name=best, candidates=list(policy.retrain.candidates), max_p_value=policy.retrain.max_p_value,
        taken_names=list(taken),
    )
    entry = outcome.entry
    return {
        "compared_against": best,
        "admitted": entry is not None,
        "entry": None if entry is None else {
            "name": entry.name, "algorithm": entry.algorithm, "path": str(entry.path), "sha256": entry.sha256,
        },
        "result": outcome.result.to_dict(),
    }
