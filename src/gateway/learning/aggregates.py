"""Per-unit aggregates: the values a request is served with, from the unit's counters as Redis
kept them before the request (store.unit_counters), and their logged form, which training reads
back: the same floats, so a challenger trains on exactly what serving computed (point in time).

The log keeps the counters themselves ('c1:' then n,ln,ls,rn,rs; empty: unset), and training
computes the values from them with the same function serving used. When no variant takes the
aggregates, serving reads nothing: record.lua logs the counters as they stand when it counts
the request (AT_RECORD), still before any label of it can exist. An entry without a unit, or
served or spooled while Redis was away, logs MISSING. Older entries' JSON values still read."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from gateway.policy import Policy
from gateway.policy_features import Aggregates


# The log's counters form; what record.lua fills in (a log field 'agg' left empty); and the
# counters not known (no unit_id, Redis away, or a record spooled before record.lua could log
# them: filled at its replay they could hold labels sent after the request): all missing.
COUNTERS = "c1:"
AT_RECORD = ""
MISSING = COUNTERS + "?"
KINDS = ("count", "labels", "mean_label", "mean_reward")


def values(policy: Policy, counters: Sequence[str | bytes | None] | None) -> list[float]:
    """The policy's aggregates, in order, from [n, ln, ls, rn, rs] (a field None: never set;
    counters None: no unit_id, or Redis away: all missing, NaN)."""
    if policy.aggregates is None:
        return []
    return _from_counters(_spec(policy.aggregates)[2], counters)


def _from_counters(kinds: Sequence[str], counters: Sequence[str | bytes | None] | None) -> list[float]:
    known = counters is not None
    n, ln, ls, rn, rs = map(_num, counters) if known else (0.0,) * 5
    out = []
    # Per request: only the kinds the policy keeps are computed.
    for kind in kinds:
        if kind == "count":
            out.append(n if known else math.nan)
        elif kind == "labels":
            out.append(ln if known else math.nan)
        elif kind == "mean_label":
            out.append(ls / ln if ln > 0 else math.nan)
        else:  # mean_reward
            out.append(rs / rn if rn > 0 else math.nan)
    return out


def _num(value: str | bytes | None) -> float:
    if value is None:
        return 0.0
    x = float(value)
    return x if math.isfinite(x) else math.nan


# Per aggregates block: (the block, its spec keys, its kinds), worked out once rather than on
# every request. By id, the block kept so its id cannot be reused: a frozen model's own hash
# walks all its fields, which costs more than the work it would save.
_SPECS: dict[int, tuple[Aggregates, tuple[str, ...], tuple[str, ...]]] = {}


def _spec(spec: Aggregates) -> tuple[Aggregates, tuple[str, ...], tuple[str, ...]]:
    known = _SPECS.get(id(spec))
    if known is None or known[0] is not spec:
        if len(_SPECS) >= 1024:  # policies come and go (reloads): never more than this kept
            _SPECS.clear()
        keys = tuple(f"{a.name}:{a.kind}" for a in spec.features)
        known = _SPECS[id(spec)] = (spec, keys, tuple(a.kind for a in spec.features))
    return known


def spec_keys(policy: Policy) -> list[str]:
    """Each aggregate's key in the decision log, '<name>:<kind>', in the policy's order (none
    without aggregates): a logged value says what it is, so a row is never read under another
    spec (the aggregates reordered, renamed, or one's kind changed)."""
    return list(_spec(policy.aggregates)[1]) if policy.aggregates else []


def logged(counters: Sequence[str | bytes | None] | None) -> str:
    """The decision log's form of the aggregates a request was served with: the counters as read
    (values() gives the same floats back under any spec), or MISSING without them."""
    if counters is None:
        return MISSING
    return COUNTERS + ",".join("" if v is None else v.decode() if isinstance(v, bytes) else str(v) for v in counters)


def loads(text: Any, keys: Sequence[str]) -> list[float] | None:
    """The logged values of `keys` (spec_keys), in that order; None when the entry does not carry
    every one of them (logged under other specs, in the earlier positional form, or not at all).
    Logged counters give every spec its values."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if isinstance(text, str) and text.startswith(COUNTERS):
        kinds = [k.rpartition(":")[2] for k in keys]
        if not all(k in KINDS for k in kinds):
            return None
        if text == MISSING:
            return _from_counters(kinds, None)
        fields = text[len(COUNTERS):].split(",")
        if len(fields) != 5:
            return None
        try:
            return _from_counters(kinds, [f or None for f in fields])
        except ValueError:
            return None
    try:
        raw = json.loads(text) if isinstance(text, str) else text
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
