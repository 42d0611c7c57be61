"""What each variant of an experiment sees: the request's features encoded once (the policy's
feature list is the request schema, the union of what the variants use), then the unit's
aggregates (as read from Redis at serving, as logged at training), then the derived features,
and per variant the columns of the names it declares, in its order.

Serving and training build a variant's matrix with this same class from the same raw rows, so a
challenger trains on exactly the columns it is served.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gateway.learning.derived import Derivation
from gateway.learning.features import FeatureEncoder
from gateway.policy import Policy


class FeatureView:
    __slots__ = ("policy", "retired", "encoder", "derivation", "columns", "required", "aggregates", "needs_unit",
                 "_index", "_raw_width")

    def __init__(self, policy: Policy, *, lenient: bool = False, retired: frozenset[str] = frozenset()):
        """`lenient` (training, tools): any feature may be absent from a logged row (it encodes as
        missing), since the rows were served while other variants needed other features.
        `retired`: variants out of rotation, whose features no request needs any more."""
        self.policy = policy
        self.retired = frozenset(retired)
        raw = [f.name for f in policy.features]
        # A feature that no variant in rotation uses may be left out of a request; one that any
        # uses (itself or through a derived feature) is required, and its absence is a 422. So
        # are those the router itself reads: the contextual algorithms' `context` (the segment,
        # the linear model's vector) and variance_reduction's covariate.
        self.required = frozenset(
            n for v in policy.variants if v.name not in self.retired
            for n in raw_inputs(policy, v.features if v.features is not None else raw)) | routing_inputs(policy)
        self.aggregates = tuple(a.name for a in policy.aggregates.features) if policy.aggregates else ()
        # The aggregates some variant uses: a request without a unit_id cannot be served then.
        self.needs_unit = tuple(a for a in self.aggregates if a in self.required)
        probe = FeatureEncoder(policy.features)
        self.derivation = Derivation(probe.column_names + self.aggregates, policy.derived)
        self.encoder = FeatureEncoder(policy.features, optional=frozenset(raw) - (frozenset() if lenient else self.required))
        self._raw_width = self.encoder.width
        self.columns = self.encoder.column_names + self.aggregates + self.derivation.names
        # None: the raw columns in the policy's order, what every variant saw before subsets.
        self._index: dict[str, np.ndarray | None] = {
            v.name: None if v.features is None else np.asarray(self.column_indices(v.features), dtype=np.intp)
            for v in policy.variants
        }

    def column_indices(self, names: Sequence[str]) -> list[int]:
        """The frame's columns of `names` (a categorical feature spans its one-hot columns)."""
        where = {c: i for i, c in enumerate(self.columns)}
        by_name = {f.name: f for f in self.policy.features}
        out: list[int] = []
        for n in names:
            f = by_name.get(n)
            if f is not None and f.type == "categorical":
                out.extend(where[f"{n}={v}"] for v in f.values or ())
            elif n in where:
                out.append(where[n])
            else:
                raise KeyError(n)
        return out

    def column_names(self, names: Sequence[str] | None) -> list[str]:
        if names is None:
            return list(self.columns[: self._raw_width])
        return [self.columns[i] for i in self.column_indices(names)]

    def frame(self, instances: Any, aggregates: Any = None) -> np.ndarray:
        """Validated, encoded rows, then the aggregates (one vector for all rows: the request's
        unit; or one per row, as training has them; None or NaN: missing), then the derived
        columns (FeatureError if a row is invalid)."""
        return self.complete(self.encoder.encode(instances), aggregates)

    def complete(self, x: np.ndarray, aggregates: Any = None) -> np.ndarray:
        """Encoded rows (encoder.encode) with the aggregates and the derived columns appended."""
        if self.aggregates:
            # Filled in place (per request: np.full and np.hstack cost several times more).
            width = x.shape[1]
            out = np.empty((x.shape[0], width + len(self.aggregates)))
            out[:, :width] = x
            out[:, width:] = np.nan if aggregates is None else np.asarray(aggregates, dtype=np.float64)
            x = out
        return self.derivation.extend(x)

    def select(self, variant: str, frame: np.ndarray) -> np.ndarray:
        """The columns `variant` takes (a variant without `features`: the raw columns, as every
        variant had before subsets). LookupError for a variant the view does not know: its
        columns cannot be guessed, and the raw ones would feed a subset model the wrong inputs
        (the runtime rebuilds its view whenever a variant joins)."""
        if variant not in self._index:
            raise LookupError(f"variant {variant!r} is not in experiment {self.policy.experiment!r}'s feature view "
                              f"(it has {sorted(self._index)})")
        idx = self._index[variant]
        if idx is None:
            return frame if frame.shape[1] == self._raw_width else frame[:, : self._raw_width]
        return np.ascontiguousarray(frame[:, idx])

    def matrix(self, names: Sequence[str] | None, instances: Any, aggregates: Any = None) -> np.ndarray:
        """The matrix a model taking `names` (None: the raw features) gets for these rows: for
        training, evaluation and tools, the same columns serving selects."""
        frame = self.frame(instances, aggregates)
        if names is None:
            return frame[:, : self._raw_width]
        return np.ascontiguousarray(frame[:, self.column_indices(names)])


def raw_inputs(policy: Policy, names: Iterable[str]) -> set[str]:
    """The request features and aggregates that `names` (any of the schema's) are computed from."""
    raw = {f.name for f in policy.features} | {a.name for a in (policy.aggregates.features if policy.aggregates else ())}
    derived = {d.name: d for d in policy.derived}
    out: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n in raw:
            out.add(n)
        elif n in derived:
            # An input is a numeric feature, a category column 'name=value' or a derived feature.
            todo.extend(c.split("=", 1)[0] if "=" in c else c for c in derived[n].of)
    return out


def routing_inputs(policy: Policy) -> frozenset[str]:
    """The request features the router reads whatever the variants take: `context` and
    variance_reduction's covariate (plane.py: the segment, the linear context, the covariate)."""
    covariate = (policy.variance_reduction.covariate,) if policy.variance_reduction else ()
    return frozenset((*policy.context, *covariate))


def schema_names(policy: Policy) -> list[str]:
    """Every name a variant may declare: the request features, the aggregates, the derived ones."""
    aggregates = [a.name for a in policy.aggregates.features] if policy.aggregates else []
    return [f.name for f in policy.features] + aggregates + [d.name for d in policy.derived]


def check_names(policy: Policy, names: Sequence[str]) -> None:
    """ValueError naming the first of `names` this policy's schema lacks."""
    schema = schema_names(policy)
    for n in names:
        if n not in schema:
            raise ValueError(f"feature {n!r} is not in experiment {policy.experiment!r}'s schema "
                             f"(features, aggregates and derived: {schema}); add it to the policy first")
    if len(set(names)) != len(names):
        raise ValueError(f"features: names must be unique, got {list(names)}")
