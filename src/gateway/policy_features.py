"""The policy's feature engineering settings and their rules, apart from policy.py to keep it small.

- `derived`: features computed from the request's own features (a ratio, a log, a bucketing, an
  interaction), by gateway.learning.derived, the same code at serving and at training.
- `aggregates`: per-unit features kept in Redis per `unit_id` (the unit's past requests, its
  labels' and rewards' means), read before the model is called, logged with the decision and
  updated by the reward script: training reads the logged values (gateway.learning.aggregates).
- a variant's `features`: the names (raw or derived) its model takes, in that order; unset, the
  policy's raw features as before. The policy's `features` stay the request schema (the union).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from gateway.policy import Policy

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# A derived feature reads encoded columns: a numeric feature's name, a category's one-hot column
# ('plan=pro'), or a derived feature declared before it.
ColumnName = Annotated[str, Field(min_length=1, max_length=200)]

# How many inputs each operation takes.
ARITY = {"ratio": 2, "log": 1, "bucket": 1, "interaction": 2}


Algorithm = Literal["xgboost", "logistic_regression", "hist_gradient_boosting"]


class RetrainCandidate(BaseModel):
    """A retraining candidate that takes its own features (names of the policy's features and
    derived ones, in column order): the retrainer tries the feature set beside the others."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Algorithm
    features: tuple[Annotated[str, Field(pattern=_NAME)], ...] = Field(min_length=1)

    @property
    def label(self) -> str:
        return f"{self.algorithm}[{','.join(self.features)}]"


class Aggregate(BaseModel):
    """count: the unit's requests recorded before this one; labels: its 0/1 labels received so far;
    mean_label: their mean; mean_reward: the mean of its accepted rewards (a mean of nothing is
    missing, NaN). Always as of the moment the request is served: never a later label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=_NAME)]
    kind: Literal["count", "labels", "mean_label", "mean_reward"]


class Aggregates(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Not a sliding window: a TTL since the unit's last activity (see the description).
    window_s: float = Field(
        default=30 * 86_400.0, gt=0, le=2**31,
        description="Seconds a unit's counters live after its last activity (a recorded request or an accepted "
                    "reward), a TTL renewed by each; not a sliding window: while a unit stays active its counters "
                    "cover everything since its first request, and they are dropped whole after window_s of silence.")
    features: tuple[Aggregate, ...] = Field(min_length=1)


class DerivedFeature(BaseModel):
    """One derived column. ratio: of[0] / of[1] (NaN when the divisor is 0); log: ln(1 + x) (NaN
    for x <= -1); bucket: how many of `bins` are <= x (0 .. len(bins)); interaction: of[0] * of[1].
    A missing (NaN) input gives NaN, which the model's pipeline imputes like any missing number."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=_NAME)]
    op: Literal["ratio", "log", "bucket", "interaction"]
    of: tuple[ColumnName, ...] = Field(min_length=1, max_length=2)
    bins: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> DerivedFeature:
        if len(self.of) != ARITY[self.op]:
            raise ValueError(f"{self.op} takes {ARITY[self.op]} input(s) in 'of', got {len(self.of)}")
        if self.op == "bucket":
            if not self.bins:
                raise ValueError("bucket needs 'bins', a non-empty increasing list of numbers")
            if not all(math.isfinite(b) for b in self.bins) or any(a >= b for a, b in zip(self.bins, self.bins[1:])):
                raise ValueError("bins must be finite and strictly increasing")
        elif self.bins is not None:
            raise ValueError("'bins' is only for op: bucket")
        return self


def check_features(policy: Policy) -> None:
    """The rules of `derived` and of the variants' `features` (raises ValueError naming the field)."""
    raw = {f.name for f in policy.features}
    columns: set[str] = set()
    for f in policy.features:
        columns.update([f.name] if f.type == "numeric" else [f"{f.name}={v}" for v in f.values or ()])
    aggregates = [a.name for a in policy.aggregates.features] if policy.aggregates else []
    for i, name in enumerate(aggregates):
        if name in raw or name in aggregates[:i]:
            raise ValueError(f"aggregates.features[{i}].name: {name!r} is already a feature of this policy")
    columns.update(aggregates)
    raw = raw | set(aggregates)
    seen: set[str] = set()
    for i, d in enumerate(policy.derived):
        if d.name in raw or d.name in seen:
            raise ValueError(f"derived[{i}].name: {d.name!r} is already a feature of this policy")
        for src in d.of:
            if src not in columns and src not in seen:
                raise ValueError(
                    f"derived[{i}].of: {src!r} is not a numeric feature, a category column ('name=value'), "
                    "an aggregate or a derived feature declared before it")
        seen.add(d.name)
    schema = [f.name for f in policy.features] + aggregates + [d.name for d in policy.derived]
    for i, c in enumerate(policy.retrain.candidates):
        for name in getattr(c, "features", None) or ():
            if name not in schema:
                raise ValueError(f"retrain.candidates[{i}].features: {name!r} is not a feature of this policy "
                                 f"(features, aggregates and derived: {schema})")
        if isinstance(c, RetrainCandidate) and len(set(c.features)) != len(c.features):
            raise ValueError(f"retrain.candidates[{i}].features: names must be unique, got {list(c.features)}")
    for v in policy.variants:
        if v.features is None:
            continue
        if len(set(v.features)) != len(v.features):
            raise ValueError(f"variants.{v.name}.features: names must be unique, got {list(v.features)}")
        for name in v.features:
            if name not in schema:
                raise ValueError(f"variants.{v.name}.features: {name!r} is not a feature of this policy "
                                 f"(features, aggregates and derived: {schema})")
