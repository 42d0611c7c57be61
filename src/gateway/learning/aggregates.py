"""Per-unit aggregates: the values a request is served with, from the unit's counters as Redis
kept them before the request (store.unit_counters), and their logged form, which training reads
back: the same floats, so a challenger trains on exactly what serving computed (point in time)."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from gateway.policy import Policy


def values(policy: Policy, counters: Sequence[str | None] | None) -> list[float]:
    """The policy's aggregates, in order, from [n, ln, ls, rn, rs] (None: the unit is new, or
    no unit_id: counts are 0 and means missing, NaN)."""
    if policy.aggregates is None:
        return []
    n, ln, ls, rn, rs = (_num(c) for c in (counters or [None] * 5))
    by_kind = {
        "count": n if counters is not None else math.nan,
        "labels": ln if counters is not None else math.nan,
        "mean_label": ls / ln if ln > 0 else math.nan,
        "mean_reward": rs / rn if rn > 0 else math.nan,
    }
    return [float(by_kind[a.kind]) for a in policy.aggregates.features]


def _num(value: str | None) -> float:
    if value is None:
        return 0.0
    x = float(value)
    return x if math.isfinite(x) else math.nan


def dumps(vector: Sequence[float]) -> str:
    """The decision log's form: JSON, NaN as null; repr-exact floats (json round-trips them)."""
    return json.dumps([None if math.isnan(v) else v for v in vector])


def loads(text: Any, width: int) -> list[float]:
    """The logged vector back (all NaN when absent or unreadable: served without aggregates)."""
    try:
        raw = json.loads(text) if isinstance(text, (str, bytes)) else text
    except ValueError:
        raw = None
    if not isinstance(raw, list) or len(raw) != width:
        return [math.nan] * width
    return [math.nan if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) else float(v) for v in raw]


def logged_rows(policy: Policy, logged: Sequence[Any] | None, n: int) -> Any:
    """Training's aggregate matrix (n, k) from each row's logged vector (LabelledData.agg), or
    None when the policy keeps no aggregates."""
    if policy.aggregates is None:
        return None
    import numpy as np

    width = len(policy.aggregates.features)
    rows = logged if logged is not None else [None] * n
    return np.asarray([loads(text, width) for text in rows], dtype=np.float64).reshape(n, width)
