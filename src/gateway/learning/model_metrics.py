"""Binary classification metrics on a holdout, and the paired test between two models."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gateway.bandit import paired

# Metric name -> +1 when higher is better, -1 when lower is better.
METRICS: dict[str, int] = {"accuracy": 1, "precision": 1, "recall": 1, "f1": 1, "roc_auc": 1, "log_loss": -1}


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
    wins = int(np.sum(challenger_correct & ~champion_correct))
    losses = int(np.sum(champion_correct & ~challenger_correct))
    return paired.mcnemar_p_value(wins, losses)
