"""Policy-driven input encoding: request rows -> the float matrix the models were trained on.

Numeric features take one column; categorical features are one-hot encoded with one column per
declared value, in the order the policy declares them. A feature named in `optional` (one no
variant uses) may be left out of an object row: it encodes as missing (NaN, or no category). Every error is a FeatureError naming the
offending field, e.g. "instances[2].plan: 'gold' is not one of ['basic', 'pro']".
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gateway.policy import Feature


# bool is an int subclass but a JSON true/false is never a valid number here.
_BOOLS = (bool, np.bool_)
_NUMBERS = (int, float, np.integer, np.floating)
_ABSENT = object()


class FeatureError(ValueError):
    """An input that does not match the policy's features; `field` names where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class FeatureEncoder:
    """Encodes rows (lists in feature order, or dicts keyed by feature name) into a float64 matrix."""

    __slots__ = ("_features", "_names", "_offsets", "_onehot", "_name_set", "_optional", "width", "column_names")

    def __init__(self, features: Sequence[Feature], optional: frozenset[str] = frozenset()) -> None:
        features = tuple(features)
        if not features:
            raise ValueError("a FeatureEncoder needs at least one feature")
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names must be unique, got {names}")
        self._features = features
        self._names = tuple(names)
        self._name_set = frozenset(names)
        self._optional = frozenset(optional) & self._name_set
        offsets: list[int] = []
        onehot: list[dict[str, int] | None] = []
        columns: list[str] = []
        for f in features:
            offsets.append(len(columns))
            if f.type == "categorical":
                values = tuple(f.values or ())
                onehot.append({v: i for i, v in enumerate(values)})
                columns.extend(f"{f.name}={v}" for v in values)
            else:
                onehot.append(None)
                columns.append(f.name)
        self._offsets = tuple(offsets)
        self._onehot = tuple(onehot)
        self.width = len(columns)
        self.column_names = tuple(columns)

    def encode(self, instances: Any) -> np.ndarray:
        if not isinstance(instances, list):
            raise FeatureError("instances", f"must be a list of rows, got {type(instances).__name__}")
        if not instances:
            raise FeatureError("instances", "must contain at least one row")
        n_features = len(self._names)
        out = np.zeros((len(instances), self.width), dtype=np.float64)
        for i, row in enumerate(instances):
            where = f"instances[{i}]"
            if isinstance(row, Mapping):
                keys = row.keys()
                values: Sequence[Any]
                if keys != self._name_set:
                    missing = [n for n in self._names if n not in row and n not in self._optional]
                    unknown = sorted(str(k) for k in keys if k not in self._name_set)
                    if missing:
                        raise FeatureError(f"{where}.{missing[0]}", f"missing feature (missing: {missing})")
                    if unknown:
                        raise FeatureError(f"{where}.{unknown[0]}", f"unknown feature (unknown: {unknown}; expected {list(self._names)})")
                    values = [row.get(n, _ABSENT) for n in self._names]
                else:
                    values = [row[n] for n in self._names]
            elif isinstance(row, (list, tuple)):
                if len(row) != n_features:
                    raise FeatureError(where, f"expected {n_features} features {list(self._names)}, got {len(row)}")
                values = row
            else:
                raise FeatureError(where, f"a row must be a list or an object, got {type(row).__name__}")
            out_row = out[i]
            for j, value in enumerate(values):
                col = self._offsets[j]
                table = self._onehot[j]
                if value is _ABSENT:  # an optional feature left out: no variant reads it
                    if table is None:
                        out_row[col] = math.nan
                    continue
                imputable = self._features[j].missing == "impute"
                if table is None and value is None and imputable:
                    out_row[col] = math.nan  # the model's pipeline imputes it
                    continue
                if table is None:
                    if isinstance(value, _BOOLS) or not isinstance(value, _NUMBERS):
                        raise FeatureError(
                            f"{where}.{self._names[j]}", f"must be a number, got {type(value).__name__} {value!r}"
                        )
                    try:
                        x = float(value)
                    except OverflowError:
                        x = math.inf
                    if not math.isfinite(x):
                        raise FeatureError(f"{where}.{self._names[j]}", f"must be a finite number, got {value!r}")
                    out_row[col] = x
                else:
                    pos = table.get(value) if isinstance(value, str) else None
                    if pos is None:
                        if imputable and (value is None or isinstance(value, str)):
                            continue  # missing or unknown: none of the known categories
                        raise FeatureError(f"{where}.{self._names[j]}", f"{value!r} is not one of {list(table)}")
                    out_row[col + pos] = 1.0
        return out
