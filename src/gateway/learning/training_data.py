"""Training data for the retrainer: labelled traffic joined from the decision log and the
feedback (LabelledData), and its split by time into a training part and a holdout."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.learning.labels import binary_label

# Fewer labelled rows than this make a holdout too small to judge a challenger on.
MIN_ROWS = 200


@dataclass(frozen=True)
class LabelledData:
    """Labelled rows in the API's form (lists in feature order, or objects keyed by feature),
    with their 0/1 labels and the time (unix seconds) each was served."""

    X: list
    y: np.ndarray
    t: np.ndarray
    # Feedback items that could not be used (label count mismatch, non-binary label, ...).
    skipped: int = 0
    # Per row, the per-unit aggregates its request was served with, as logged (JSON text; None:
    # none logged); None when no row has any (gateway.learning.aggregates reads them).
    agg: list | None = None

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
        if self.agg is not None and len(self.agg) != len(self.X):
            raise ValueError(f"agg must have one entry per row, got {len(self.agg)} for {len(self.X)} rows")
        object.__setattr__(self, "y", y.astype(np.int64))
        object.__setattr__(self, "t", t)

    def __len__(self) -> int:
        return len(self.X)

    def take(self, index: Sequence[int] | np.ndarray) -> LabelledData:
        idx = np.asarray(index, dtype=np.int64)
        agg = None if self.agg is None else [self.agg[i] for i in idx.tolist()]
        return LabelledData([self.X[i] for i in idx.tolist()], self.y[idx], self.t[idx], agg=agg)

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
        keep: Callable[[Any], bool] | None = None,
    ) -> LabelledData:
        """Join decision-log entries with their feedback.

        `decisions`: decision-log stream entries (fields rid, t, x, pred; x and pred JSON text or
        already decoded). `feedback`: request id -> a mapping with `label` (one value or a list,
        one per instance; JSON text or decoded) and/or `reward`. A decision without feedback is
        left out. With `derive_from_reward`, a single-instance 0/1 prediction whose reward is
        exactly 0 or 1 (the policy's 'match' rule) gives its label even when the label itself
        was not stored: label = prediction if reward == 1 else 1 - prediction. `keep`: given a
        decision's logged aggregates (`agg`, None when absent), whether the row may be used
        (aggregates.matches: logged under the policy's current specs); the others are skipped.
        """
        import json

        def decode(value: Any) -> Any:
            return json.loads(value) if isinstance(value, (str, bytes)) else value

        X: list = []
        y: list[int] = []
        t: list[float] = []
        agg: list = []
        skipped = 0
        for d in decisions:
            fb = feedback.get(d.get("rid"))
            if not fb:
                continue
            if keep is not None and not keep(d.get("agg")):
                skipped += 1
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
                    if len(preds) != 1 or reward not in (0.0, 1.0) or binary_label(preds[0]) is None:
                        skipped += 1
                        continue
                    p = binary_label(preds[0])
                    labels = [p if reward == 1.0 else 1 - p]
                else:
                    skipped += 1
                    continue
                binary = [binary_label(v) for v in labels]
                if not isinstance(rows, list) or len(binary) != len(rows) or any(b is None for b in binary):
                    skipped += 1
                    continue
            except (KeyError, TypeError, ValueError):
                skipped += 1
                continue
            X.extend(rows)
            y.extend(binary)  # type: ignore[arg-type]
            t.extend([when] * len(rows))
            agg.extend([d.get("agg")] * len(rows))  # one unit per request: its rows share them
        logged = agg if any(a is not None for a in agg) else None
        return cls(X, np.asarray(y, dtype=np.int64), np.asarray(t, dtype=np.float64), skipped, logged)


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
