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


def spec_keys(policy: Policy) -> list[str]:
    """Each aggregate's key in the decision log, '<name>:<kind>', in the policy's order (none
    without aggregates): a logged value says what it is, so a row is never read under another
    spec (the aggregates reordered, renamed, or one's kind changed)."""
    return [f"{a.name}:{a.kind}" for a in policy.aggregates.features] if policy.aggregates else []


def dumps(policy: Policy, vector: Sequence[float]) -> str:
    """The decision log's form: a JSON object by spec key, NaN as null; repr-exact floats (json
    round-trips them)."""
    return json.dumps({k: None if math.isnan(v) else v for k, v in zip(spec_keys(policy), vector, strict=True)})


def loads(text: Any, keys: Sequence[str]) -> list[float] | None:
    """The logged values of `keys` (spec_keys), in that order; None when the entry does not carry
    every one of them (logged under other specs, in the earlier positional form, or not at all)."""
    try:
        raw = json.loads(text) if isinstance(text, (str, bytes)) else text
    except ValueError:
        return None
    if not isinstance(raw, dict) or not all(k in raw for k in keys):
        return None
    values = [raw[k] for k in keys]
    return [math.nan if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) else float(v) for v in values]


def matches(policy: Policy, text: Any) -> bool:
    """Whether a logged entry holds this policy's aggregates (always, for a policy without)."""
    keys = spec_keys(policy)
    return not keys or loads(text, keys) is not None


def logged_rows(policy: Policy, logged: Sequence[Any] | None, n: int) -> Any:
    """Training's aggregate matrix (n, k) from each row's logged entry (LabelledData.agg), or
    None when the policy keeps no aggregates. A row logged under other specs reads as missing
    here; the retrainer leaves such rows out altogether (LabelledData.from_decisions)."""
    if policy.aggregates is None:
        return None
    import numpy as np

    keys = spec_keys(policy)
    rows = logged if logged is not None else [None] * n
    out = [loads(text, keys) or [math.nan] * len(keys) for text in rows]
    return np.asarray(out, dtype=np.float64).reshape(n, len(keys))
