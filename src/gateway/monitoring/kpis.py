"""Online KPIs per variant from labelled feedback: accuracy, precision, recall, F1 and ROC AUC,
over a sliding window of each variant's last N labels and over its whole life.

Every update is O(1) per label (amortised): confusion counters for the lifetime, the same
counters plus a bounded deque for the window, and, for the lifetime AUC, a histogram of scores
per class on a fixed grid. A snapshot costs O(N log N) per variant for the window AUC (exact,
by ranks with ties counted half, as sklearn.metrics.roc_auc_score) and O(grid) for the lifetime
AUC.

The lifetime AUC comes from the histogram: scores are rounded to the nearest multiple of
1/`score_grid` (default 1/1000), so it equals sklearn's value exactly when scores lie on that
grid, and otherwise differs by at most half the share of positive-negative pairs whose scores
round to the same point (of the order of 1/score_grid for spread-out scores).

Binary metrics treat `positive_label` (default 1) as the positive class and everything else as
negative; accuracy is the share of predictions equal to their label. Labels and predictions are
compared by the gateway's one rule (gateway.learning.labels: numbers by value, 1 == 1.0 == "1"
== true). Not thread-safe: feed it from one task.

>>> k = OnlineKPIs(window=3)
>>> k.update("a", [1, 0, 1, 1], [1, 0, 0, 1], scores=[0.9, 0.2, 0.6, 0.8])
>>> s = k.snapshot()["a"]
>>> s["n"], s["lifetime"]["accuracy"], s["window"]["n"]
(4, 0.75, 3)
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.learning.labels import label_key


def _as_list(value: Any) -> list:
    if isinstance(value, np.ndarray):
        return value.ravel().tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


@dataclass
class _Counts:
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    correct: int = 0

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def add(self, pred_pos: bool, label_pos: bool, correct: bool, sign: int = 1) -> None:
        if pred_pos and label_pos:
            self.tp += sign
        elif pred_pos:
            self.fp += sign
        elif label_pos:
            self.fn += sign
        else:
            self.tn += sign
        self.correct += sign * correct

    def metrics(self) -> dict[str, Any]:
        n = self.n

        def ratio(a: int, b: int) -> float | None:
            return a / b if b else None

        precision = ratio(self.tp, self.tp + self.fp)
        recall = ratio(self.tp, self.tp + self.fn)
        # F1 = 2TP / (2TP + FP + FN): defined whenever there is any positive, predicted or true.
        f1 = ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)
        return {
            "n": n,
            "accuracy": ratio(self.correct, n),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "positives": self.tp + self.fn,
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
        }


def metrics_from_counts(tp: int = 0, fp: int = 0, tn: int = 0, fn: int = 0, correct: int = 0) -> dict[str, Any]:
    """n, accuracy, precision, recall, F1 and the counts, from confusion counts kept elsewhere
    (e.g. in Redis); None where a ratio is undefined."""
    return _Counts(tp=tp, fp=fp, tn=tn, fn=fn, correct=correct).metrics()


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC by the Mann-Whitney statistic with average ranks for ties (= sklearn's value);
    None unless both classes are present."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    avg_rank = upper - (counts - 1) / 2.0
    rank_sum = float(avg_rank[inverse][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _hist_auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    neg_below = np.cumsum(neg) - neg
    wins = float(np.sum(pos * (neg_below + 0.5 * neg)))
    return wins / (n_pos * n_neg)


@dataclass
class _VariantKPIs:
    window: int
    grid: int
    since: float | None
    lifetime: _Counts = field(default_factory=_Counts)
    recent: _Counts = field(default_factory=_Counts)
    # (pred_pos, label_pos, correct, score or nan) for the last `window` labels
    buffer: deque = field(default_factory=deque)
    pos_hist: np.ndarray | None = None
    neg_hist: np.ndarray | None = None
    scored: int = 0
    last_t: float | None = None


class OnlineKPIs:
    """Accumulates labelled predictions per variant; `snapshot()` reports the KPIs.

    Parameters
    ----------
    window:
        Size of the sliding window, in labels, per variant.
    positive_label:
        The class counted as positive for precision, recall, F1 and AUC.
    score_grid:
        Resolution of the lifetime AUC's score histogram (scores rounded to 1/score_grid).
    """

    def __init__(self, window: int = 1000, positive_label: Any = 1, score_grid: int = 1000) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if score_grid < 1:
            raise ValueError(f"score_grid must be at least 1, got {score_grid}")
        self.window = window
        self.positive = label_key(positive_label)
        self.grid = score_grid
        self._variants: dict[str, _VariantKPIs] = {}

    def variants(self) -> list[str]:
        return list(self._variants)

    def reset(self, variant: str, since: float | None = None) -> None:
        """Start a variant afresh (e.g. when it goes live again)."""
        self._variants[variant] = _VariantKPIs(self.window, self.grid, since)

    def remove(self, variant: str) -> None:
        self._variants.pop(variant, None)

    def update(
        self,
        variant: str,
        predictions: Any,
        labels: Any,
        scores: Any = None,
        t: float | None = None,
    ) -> None:
        """Add one feedback item: a prediction and its label, or lists of them (one per
        instance), with the model's score for the positive class when there is one."""
        preds = _as_list(predictions)
        labs = _as_list(labels)
        if len(preds) != len(labs):
            raise ValueError(f"{len(labs)} labels for {len(preds)} predictions")
        if scores is not None:
            sc = [float(s) for s in _as_list(scores)]
            if len(sc) != len(preds):
                raise ValueError(f"{len(sc)} scores for {len(preds)} predictions")
            if not all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in sc):
                raise ValueError("scores must be probabilities in [0, 1]")
        else:
            sc = None
        state = self._variants.get(variant)
        if state is None:
            state = self._variants[variant] = _VariantKPIs(self.window, self.grid, t)
        if t is not None:
            if state.since is None:
                state.since = t
            state.last_t = t
        for k, (p, y) in enumerate(zip(preds, labs, strict=True)):
            p_n, y_n = label_key(p), label_key(y)
            pred_pos, label_pos = p_n is not None and p_n == self.positive, y_n is not None and y_n == self.positive
            correct = p_n is not None and p_n == y_n
            score = sc[k] if sc is not None else math.nan
            state.lifetime.add(pred_pos, label_pos, correct)
            state.recent.add(pred_pos, label_pos, correct)
            state.buffer.append((pred_pos, label_pos, correct, score))
            if len(state.buffer) > state.window:
                old = state.buffer.popleft()
                state.recent.add(old[0], old[1], old[2], sign=-1)
            if sc is not None:
                if state.pos_hist is None:
                    state.pos_hist = np.zeros(self.grid + 1, dtype=np.int64)
                    state.neg_hist = np.zeros(self.grid + 1, dtype=np.int64)
                b = round(score * self.grid)
                (state.pos_hist if label_pos else state.neg_hist)[b] += 1
                state.scored += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per variant: {"window": {...}, "lifetime": {...}, "n", "window_size", "since",
        "last_t"}; each metrics dict has n, accuracy, precision, recall, f1, roc_auc (None when
        undefined: no scores, or a single class among the scored labels), n_scored and the
        confusion counts."""
        out: dict[str, dict[str, Any]] = {}
        for name, s in self._variants.items():
            window = s.recent.metrics()
            if s.buffer:
                buf = np.array([(b[1], b[3]) for b in s.buffer], dtype=np.float64)
                has = ~np.isnan(buf[:, 1])
                window["n_scored"] = int(has.sum())
                window["roc_auc"] = rank_auc(buf[has, 1], buf[has, 0] == 1.0) if has.any() else None
            else:
                window["n_scored"], window["roc_auc"] = 0, None
            lifetime = s.lifetime.metrics()
            lifetime["n_scored"] = s.scored
            lifetime["roc_auc"] = _hist_auc(s.pos_hist, s.neg_hist) if s.pos_hist is not None else None
            out[name] = {
                "window": window,
                "lifetime": lifetime,
                "n": s.lifetime.n,
                "window_size": s.window,
                "since": s.since,
                "last_t": s.last_t,
            }
        return out
