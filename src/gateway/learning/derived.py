"""Derived features: the one transformer that computes them, at serving (the router) and at
training (the retrainer), from the same encoded columns, so both get the same bytes.

Specs are plain data (gateway.policy_features.DerivedFeature, or its JSON form in an artifact's
metadata): nothing here runs code that a file brought.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from gateway.policy_features import DerivedFeature


def as_specs(items: Iterable[DerivedFeature | Mapping[str, Any]]) -> tuple[DerivedFeature, ...]:
    """Specs from the policy or from JSON (an artifact's metadata), validated the same way."""
    return tuple(d if isinstance(d, DerivedFeature) else DerivedFeature.model_validate(dict(d)) for d in items)


def spec_json(d: DerivedFeature) -> dict[str, Any]:
    return d.model_dump(mode="json", exclude_none=True)


class Derivation:
    """Computes `specs` (in order; one may read an earlier one) from a matrix with named columns."""

    __slots__ = ("specs", "names", "_inputs")

    def __init__(self, columns: Sequence[str], specs: Sequence[DerivedFeature]):
        self.specs = tuple(specs)
        self.names = tuple(d.name for d in self.specs)
        where = {c: i for i, c in enumerate(columns)}
        inputs = []
        for d in self.specs:
            missing = [c for c in d.of if c not in where]
            if missing:
                raise ValueError(f"derived {d.name!r}: no column {missing[0]!r} to compute it from")
            inputs.append(tuple(where[c] for c in d.of))
            where[d.name] = len(where)
        self._inputs = tuple(inputs)

    def extend(self, matrix: np.ndarray) -> np.ndarray:
        """`matrix` with the derived columns appended (float64; NaN where undefined)."""
        if not self.specs:
            return matrix
        out = np.empty((matrix.shape[0], matrix.shape[1] + len(self.specs)), dtype=np.float64)
        out[:, : matrix.shape[1]] = matrix
        col = matrix.shape[1]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for d, idx in zip(self.specs, self._inputs):
                out[:, col] = _compute(d, [out[:, i] for i in idx])
                col += 1
        return out


def _compute(d: DerivedFeature, x: list[np.ndarray]) -> np.ndarray:
    if d.op == "ratio":
        a, b = x
        return _finite(np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan))
    if d.op == "log":
        (a,) = x
        return np.where(a > -1, np.log1p(np.where(a > -1, a, 0.0)), np.nan)
    if d.op == "bucket":
        (a,) = x
        out = np.searchsorted(np.asarray(d.bins, dtype=np.float64), a, side="right").astype(np.float64)
        return np.where(np.isnan(a), np.nan, out)
    a, b = x  # interaction
    return _finite(a * b)


def _finite(v: np.ndarray) -> np.ndarray:
    # An overflow (inf) is no number a model was trained on: it becomes missing, like a 0 divisor.
    return np.where(np.isinf(v), np.nan, v)
