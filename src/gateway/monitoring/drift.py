"""Population stability index (PSI): how far a live distribution has moved from a reference one.

    PSI = sum over bins of (a_i - e_i) * ln(a_i / e_i)

with e_i and a_i the shares of the expected (reference, e.g. training) and actual (live) samples
in bin i. Numeric features are binned at the quantiles of the expected sample, so each bin holds
about the same share of it; categorical features use one bin per category. An empty bin's share
is floored at a small epsilon so the logarithm stays finite.

The usual reading (industry rule of thumb, e.g. credit-risk scorecard monitoring):

- PSI < 0.1: no significant change;
- 0.1 <= PSI < 0.25: a moderate change, worth a look;
- PSI >= 0.25: a significant shift; the model is likely to be affected.

PSI measures movement in inputs (covariate shift) or outputs (prediction drift). It cannot see
concept drift where the inputs keep their distribution but the labelling rule changes: that only
shows in labelled metrics (see kpis.py and learning/model_metrics.py).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> round(psi(rng.normal(0, 1, 5000), rng.normal(0, 1, 5000)), 3) < 0.1
True
>>> psi(rng.normal(0, 1, 5000), rng.normal(1, 1, 5000)) > 0.25
True
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from gateway.learning.features import FeatureEncoder
from gateway.policy import Policy

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
EPSILON = 1e-4


def level(value: float) -> Literal["stable", "moderate", "significant"]:
    """The conventional reading of a PSI value (thresholds 0.1 and 0.25)."""
    if value < PSI_MODERATE:
        return "stable"
    if value < PSI_SIGNIFICANT:
        return "moderate"
    return "significant"


def _psi_from_counts(expected: np.ndarray, actual: np.ndarray, eps: float) -> float:
    e_total, a_total = expected.sum(), actual.sum()
    if e_total <= 0 or a_total <= 0:
        raise ValueError("both samples need at least one observation")
    e = np.clip(expected / e_total, eps, None)
    a = np.clip(actual / a_total, eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _sample(values: ArrayLike, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{what}: an empty sample")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: values must be finite numbers")
    return x


def bin_edges(expected: ArrayLike, bins: int = 10) -> np.ndarray:
    """Interior bin edges at the quantiles of `expected` (duplicates merged, so discrete data
    gets fewer, wider bins). A value equal to an edge falls in the bin above it."""
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    e = _sample(expected, "expected")
    edges = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)[1:-1]))
    lo = e.min()
    if edges.size == 0 or (edges.size == 1 and edges[0] == lo):
        # A (nearly) constant reference: bins below, at and above its value.
        edges = np.array([lo, np.nextafter(lo, np.inf)])
    return edges


def psi(expected: ArrayLike, actual: ArrayLike, bins: int = 10, eps: float = EPSILON) -> float:
    """PSI of a numeric feature: `bins` quantile bins of the expected sample (fewer when it has
    ties), open-ended at both ends so live values outside the reference range still count."""
    e = _sample(expected, "expected")
    a = _sample(actual, "actual")
    edges = bin_edges(e, bins)
    n_bins = edges.size + 1
    e_counts = np.bincount(np.searchsorted(edges, e, side="right"), minlength=n_bins)
    a_counts = np.bincount(np.searchsorted(edges, a, side="right"), minlength=n_bins)
    return _psi_from_counts(e_counts.astype(np.float64), a_counts.astype(np.float64), eps)


def psi_categorical(
    expected_counts: Mapping[Any, float] | Sequence[float] | np.ndarray,
    actual_counts: Mapping[Any, float] | Sequence[float] | np.ndarray,
    eps: float = EPSILON,
) -> float:
    """PSI of a categorical feature from counts per category: two mappings (categories missing
    from one side count 0 there) or two sequences aligned by position."""
    if isinstance(expected_counts, Mapping) != isinstance(actual_counts, Mapping):
        raise TypeError("pass two mappings or two sequences of counts")
    if isinstance(expected_counts, Mapping):
        keys = list(dict.fromkeys([*expected_counts, *actual_counts]))
        e = np.array([float(expected_counts.get(k, 0)) for k in keys])
        a = np.array([float(actual_counts.get(k, 0)) for k in keys])
    else:
        e = np.asarray(expected_counts, dtype=np.float64).ravel()
        a = np.asarray(actual_counts, dtype=np.float64).ravel()
        if e.shape != a.shape:
            raise ValueError(f"count vectors differ in length: {e.size} and {a.size}")
    if e.size == 0 or np.any(e < 0) or np.any(a < 0) or not (np.all(np.isfinite(e)) and np.all(np.isfinite(a))):
        raise ValueError("counts must be finite, non-negative and not empty")
    return _psi_from_counts(e, a, eps)


def feature_drift(policy: Policy, train_rows: list, live_rows: list, bins: int = 10) -> dict[str, float]:
    """PSI per policy feature between training rows and live rows (rows as the API takes them:
    lists in feature order or objects keyed by feature name)."""
    # Lenient: a feature no variant uses may be absent from a request; it is left out as missing.
    enc = FeatureEncoder(policy.features, optional=frozenset(f.name for f in policy.features))
    train = enc.encode(train_rows)
    live = enc.encode(live_rows)
    out: dict[str, float] = {}
    col = 0
    for f in policy.features:
        if f.type == "numeric":
            # Missing values (NaN, imputed by the model) are left out of the comparison.
            ref, now = train[:, col], live[:, col]
            out[f.name] = psi(ref[np.isfinite(ref)], now[np.isfinite(now)], bins=bins)
            col += 1
        else:
            width = len(f.values or ())
            out[f.name] = psi_categorical(train[:, col : col + width].sum(axis=0), live[:, col : col + width].sum(axis=0))
            col += width
    return out


def prediction_drift(
    train_preds: ArrayLike,
    live_preds: ArrayLike,
    kind: Literal["auto", "label", "score"] = "auto",
    bins: int = 10,
) -> float:
    """PSI of model outputs: class labels are compared as categories, scores (probabilities)
    with quantile bins. `auto` treats integer-valued outputs as labels."""
    e = np.asarray(train_preds).ravel()
    a = np.asarray(live_preds).ravel()
    if e.size == 0 or a.size == 0:
        raise ValueError("both samples need at least one prediction")
    if kind == "auto":
        numeric = all(np.issubdtype(v.dtype, np.number) or v.dtype == np.bool_ for v in (e, a))
        integral = numeric and all(bool(np.all(np.mod(v.astype(np.float64), 1) == 0)) for v in (e, a))
        kind = "label" if (integral or not numeric) else "score"
    if kind == "label":
        return psi_categorical(_label_counts(e), _label_counts(a))
    return psi(e, a, bins=bins)


def _label_counts(values: np.ndarray) -> dict[str, int]:
    # 1 and 1.0 (and True) are the same class; anything else is compared as text.
    if np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_:
        as_float = values.astype(np.float64)
        if np.all(np.mod(as_float, 1) == 0):
            values = as_float.astype(np.int64)
    keys, counts = np.unique(values.astype(str), return_counts=True)
    return dict(zip(keys.tolist(), counts.tolist(), strict=True))
