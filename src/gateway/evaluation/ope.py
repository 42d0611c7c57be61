"""Off-policy evaluation (OPE): what a target routing policy would have earned, estimated from
the requests the gateway actually served and the propensity it logged for each.

Row i of the logs served arm a_i with logged probability p_i and earned r_i. Under a target
policy pi (an (n, K) matrix of per-request arm probabilities, see :func:`target_probabilities`)
its importance weight is w_i = pi[i, a_i] / p_i, and

* IPS   = mean(w r), stderr = std(w r, ddof=1) / sqrt(n);
* SNIPS = sum(w r) / sum(w), stderr by the delta method:
  sqrt(sum((w (r - SNIPS))^2) / (n - 1)) / (sqrt(n) mean(w));
* DR    = mean(sum_a pi[i, a] q̂(x_i, a) + w (r - q̂(x_i, a_i))) (Dudík, Langford & Li 2011), q̂
  cross-fitted (see :mod:`.reward_model`), stderr = std(row values, ddof=1) / sqrt(n).

Intervals are normal approximations, value ± z stderr. The formulas follow Open Bandit
Pipeline's estimators (obp.ope.estimators: InverseProbabilityWeighting,
SelfNormalizedInverseProbabilityWeighting, DoublyRobust); obp's intervals are bootstrapped.

The propensities must be the probabilities the arms were actually drawn with (the gateway logs
exactly the share a request was routed with); IPS is then unbiased even when the shares adapt
to past rewards, as Thompson sampling's do, which biases the plain per-arm average
(:func:`corrected_means`). Pure: no I/O.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real

import numpy as np
from scipy.special import ndtri

from .reward_model import cross_fit, fold_ids

ESTIMATORS = ("ips", "snips", "dr")
NO_REWARDS = "no logged rewards yet"


class PoorOverlap(ValueError):
    """The logged data cannot support the target policy; message says why (e.g. "variant 'b' was
    never served", or "max importance weight 230 exceeds the bound 100"), and names the variant
    (also in ``variant``, None when no single variant is to blame)."""

    def __init__(self, message: str, variant: str | None = None) -> None:
        super().__init__(message)
        self.variant = variant


@dataclass(frozen=True, eq=False)
class LoggedData:
    """Logged requests; the arrays are copied and made read-only."""

    arms: tuple[str, ...]  # variant names, index = action id
    features: np.ndarray  # (n, d) float, encoded features of each logged request (may be d=0)
    actions: np.ndarray  # (n,) int, index into arms of the served variant
    propensities: np.ndarray  # (n,) float in (0, 1], the logged probability of the served variant
    rewards: np.ndarray  # (n,) float

    def __post_init__(self) -> None:
        arms = tuple(self.arms)
        if not arms or not all(isinstance(a, str) and a for a in arms):
            raise ValueError(f"arms must be a non-empty sequence of non-empty names, got {self.arms!r}")
        if len(set(arms)) != len(arms):
            raise ValueError(f"arms must be distinct, got {arms!r}")
        rewards = _vector("rewards", self.rewards)
        n = len(rewards)
        propensities = _vector("propensities", self.propensities, n)
        actions = np.array(self.actions)
        if actions.ndim != 1 or len(actions) != n:
            raise ValueError(f"actions must have shape ({n},) like rewards, got {actions.shape}")
        if actions.dtype.kind == "f" and np.all(np.isfinite(actions)) and np.all(actions == np.round(actions)):
            actions = actions.astype(np.int64)
        if n and actions.dtype.kind not in "iu":
            raise ValueError(f"actions must be integers (indices into arms), got dtype {actions.dtype}")
        actions = actions.astype(np.int64)
        features = np.array(self.features, dtype=float)
        if features.ndim != 2 or features.shape[0] != n:
            raise ValueError(f"features must have shape ({n}, d) (d may be 0), got {features.shape}")
        if not np.all(np.isfinite(features)):
            raise ValueError("features must be finite")
        if n and (actions.min() < 0 or actions.max() >= len(arms)):
            bad = int(actions[(actions < 0) | (actions >= len(arms))][0])
            raise ValueError(f"action {bad} is out of range: there are {len(arms)} arms (0..{len(arms) - 1})")
        if not np.all((propensities > 0) & (propensities <= 1)):  # NaN fails too
            bad = float(propensities[~((propensities > 0) & (propensities <= 1))][0])
            raise ValueError(f"propensities must be in (0, 1], got {bad!r}")
        if not np.all(np.isfinite(rewards)):
            raise ValueError("rewards must be finite")
        for name, value in (("arms", arms), ("features", features), ("actions", actions),
                            ("propensities", propensities), ("rewards", rewards)):
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def n(self) -> int:
        return len(self.rewards)


def _vector(name: str, value: object, n: int | None = None) -> np.ndarray:
    try:
        out = np.array(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers: {exc}") from None
    if out.ndim != 1 or (n is not None and len(out) != n):
        want = "(n,)" if n is None else f"({n},) like rewards"
        raise ValueError(f"{name} must have shape {want}, got {out.shape}")
    return out


@dataclass(frozen=True)
class Estimate:
    estimator: str  # "ips" | "snips" | "dr"
    value: float
    stderr: float
    ci_low: float
    ci_high: float  # normal-approximation interval at `level` (default 0.95)
    ess: float  # effective sample size of the importance weights: (sum w)^2 / sum w^2
    n: int

    def to_dict(self) -> dict:
        """JSON-ready: plain floats; a non-finite figure (stderr with n = 1) is None."""
        return {
            "estimator": self.estimator,
            "value": _num(self.value),
            "stderr": _num(self.stderr),
            "ci_low": _num(self.ci_low),
            "ci_high": _num(self.ci_high),
            "ess": _num(self.ess),
            "n": int(self.n),
        }


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def target_probabilities(data: LoggedData, target: str | Mapping[str, float]) -> np.ndarray:
    """(n, K) probabilities of each arm under the target policy: "uniform", the name of an arm
    (always serve it), or a mapping arm -> share (shares must be >=0 and sum to 1 within 1e-9;
    unknown arm names -> ValueError naming it). "uniform" means uniform even if an arm bears the
    name; target such an arm with {"uniform": 1}."""
    arms, n = data.arms, data.n
    index = {a: i for i, a in enumerate(arms)}
    shares = np.zeros(len(arms))
    known = ", ".join(repr(a) for a in arms)
    if isinstance(target, str):
        if target == "uniform":
            shares[:] = 1.0 / len(arms)
        elif target in index:
            shares[index[target]] = 1.0
        else:
            raise ValueError(f"unknown variant {target!r} as target: expected 'uniform', a variant "
                             f"({known}) or a mapping variant -> share")
    elif isinstance(target, Mapping):
        if not target:
            raise ValueError("the target's shares are empty: give at least one variant -> share")
        for name, share in target.items():
            if name not in index:
                raise ValueError(f"unknown variant {name!r} in the target's shares (variants: {known})")
            if isinstance(share, bool) or not isinstance(share, Real) or not math.isfinite(share) or share < 0:
                raise ValueError(f"the share of variant {name!r} must be a finite number >= 0, got {share!r}")
            shares[index[name]] = float(share)
        if abs(shares.sum() - 1.0) > 1e-9:
            raise ValueError(f"the target's shares must sum to 1 (within 1e-9), got {shares.sum()!r}")
    else:
        raise ValueError("target must be 'uniform', a variant name or a mapping variant -> share, "
                         f"got {type(target).__name__}")
    return np.tile(shares, (n, 1))


def _weights(data: LoggedData, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pi as a float array, importance weights w_i = pi[i, a_i] / p_i), pi checked."""
    pi = np.asarray(pi, dtype=float)
    if pi.shape != (data.n, len(data.arms)):
        raise ValueError(f"target probabilities must have shape {(data.n, len(data.arms))}, got {pi.shape}")
    if not np.all(np.isfinite(pi) & (pi >= 0)) or not np.allclose(pi.sum(axis=1), 1.0, rtol=0, atol=1e-6):
        raise ValueError("target probabilities must be finite, >= 0 and sum to 1 in every row")
    return pi, pi[np.arange(data.n), data.actions] / data.propensities


def _ess(w: np.ndarray) -> float:
    ss = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / ss if ss > 0 else 0.0


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(ndtri(0.5 + level / 2))


def _estimate(name: str, value: float, stderr: float, w: np.ndarray, level: float) -> Estimate:
    z = _z(level)
    return Estimate(name, float(value), float(stderr), float(value - z * stderr),
                    float(value + z * stderr), _ess(w), len(w))


def _mean_estimate(name: str, values: np.ndarray, w: np.ndarray, level: float) -> Estimate:
    n = len(values)
    if n == 0:
        raise PoorOverlap(NO_REWARDS)
    stderr = float(np.std(values, ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return _estimate(name, float(np.mean(values)), stderr, w, level)


def ips(data: LoggedData, pi: np.ndarray, level: float = 0.95) -> Estimate:
    """Inverse propensity scoring: mean(w r)."""
    _, w = _weights(data, pi)
    return _mean_estimate("ips", w * data.rewards, w, level)


def snips(data: LoggedData, pi: np.ndarray, level: float = 0.95) -> Estimate:
    """Self-normalised IPS, sum(w r) / sum(w); stderr by the delta method."""
    _, w = _weights(data, pi)
    n = data.n
    if n == 0:
        raise PoorOverlap(NO_REWARDS)
    total = float(w.sum())
    if total <= 0:
        raise PoorOverlap("no logged request was served a variant the target would serve")
    value = float(np.sum(w * data.rewards)) / total
    if n > 1:
        resid = w * (data.rewards - value)
        stderr = math.sqrt(float(np.sum(resid * resid)) / (n - 1)) / math.sqrt(n) / (total / n)
    else:
        stderr = math.nan
    return _estimate("snips", value, stderr, w, level)


def doubly_robust(data: LoggedData, pi: np.ndarray, level: float = 0.95, folds: int = 2,
                  seed: int = 0) -> Estimate:
    """DR of Dudík, Langford & Li 2011: q̂(x, pi) + w (r - q̂(x, a_logged)), q̂ cross-fitted over
    ``folds`` folds (:func:`.reward_model.fold_ids`): each row's q̂ comes from one regression per
    arm (Ridge on the features; with none, the arm's mean reward) fitted on the other folds.
    Deterministic for a given seed."""
    pi, w = _weights(data, pi)
    fold_of = fold_ids(data.n, folds, seed)
    q = cross_fit(data.features, data.actions, data.rewards, len(data.arms), fold_of)
    rows = np.arange(data.n)
    values = np.sum(pi * q, axis=1) + w * (data.rewards - q[rows, data.actions])
    return _mean_estimate("dr", values, w, level)


def check_overlap(data: LoggedData, pi: np.ndarray, max_weight: float = 100.0) -> None:
    """Raise :class:`PoorOverlap` if an arm the target may serve was never served, or an
    importance weight pi / p exceeds ``max_weight`` (the estimate would rest on a few rows)."""
    if not max_weight > 0:
        raise ValueError(f"max_weight must be > 0, got {max_weight!r}")
    pi, w = _weights(data, pi)
    if data.n == 0:
        raise PoorOverlap(NO_REWARDS)
    served = np.bincount(data.actions, minlength=len(data.arms))
    for k, arm in enumerate(data.arms):
        if served[k] == 0 and pi[:, k].max() > 0:
            raise PoorOverlap(f"variant {arm!r} was never served, but the target serves it with probability "
                              f"up to {pi[:, k].max():.3g}: the logs say nothing about it", variant=arm)
    if w.sum() <= 0:
        raise PoorOverlap("no logged request was served a variant the target would serve")
    i = int(np.argmax(w))
    if w[i] > max_weight:
        arm = data.arms[data.actions[i]]
        raise PoorOverlap(f"max importance weight {w[i]:.4g} exceeds the bound {max_weight:g}: variant "
                          f"{arm!r} was served with logged propensity {data.propensities[i]:.3g} where the "
                          f"target gives it {pi[i, data.actions[i]]:.3g}", variant=arm)


def evaluate(data: LoggedData, target: str | Mapping[str, float], level: float = 0.95,
             max_weight: float = 100.0, folds: int = 2, seed: int = 0) -> dict:
    """{"target": <as given, json-ready>, "n": n, "estimates": {"ips": {...}, "snips": {...},
    "dr": {...}}, "max_weight": float, "ess": float}: ``max_weight`` and ``ess`` are the logged
    rows' largest importance weight and effective sample size. Raises PoorOverlap before
    estimating; with n == 0, PoorOverlap("no logged rewards yet")."""
    pi = target_probabilities(data, target)
    _z(level)
    if data.n == 0:
        raise PoorOverlap(NO_REWARDS)
    check_overlap(data, pi, max_weight)
    _, w = _weights(data, pi)
    estimates = (ips(data, pi, level), snips(data, pi, level),
                 doubly_robust(data, pi, level, folds=folds, seed=seed))
    shown = target if isinstance(target, str) else {str(k): float(v) for k, v in target.items()}
    return {
        "target": shown,
        "n": data.n,
        "estimates": {e.estimator: e.to_dict() for e in estimates},
        "max_weight": float(w.max()),
        "ess": _ess(w),
    }


def corrected_means(data: LoggedData, level: float = 0.95) -> dict[str, dict]:
    """Per arm, the SNIPS value of 'always serve this arm' (the IPS-corrected mean that removes the
    bias of the plain per-arm average under adaptive Thompson allocation): {arm: {"mean", "ci_low",
    "ci_high", "n_served", "ess"}}; arms never served get mean None (json null).

    The mean is unbiased up to SNIPS's O(1/n) ratio bias, but under adaptive allocation the
    normal-approximation interval of a starved arm undercovers (bench/ope.py: ~88-90% at 95% for
    the losing arm of a 10% vs 12% Thompson test, like the plain mean's Wald interval)."""
    _z(level)
    out: dict[str, dict] = {}
    for k, arm in enumerate(data.arms):
        n_served = int(np.sum(data.actions == k))
        if n_served == 0:
            out[arm] = {"mean": None, "ci_low": None, "ci_high": None, "n_served": 0, "ess": 0.0}
            continue
        pi = np.zeros((data.n, len(data.arms)))
        pi[:, k] = 1.0
        e = snips(data, pi, level)
        out[arm] = {"mean": _num(e.value), "ci_low": _num(e.ci_low), "ci_high": _num(e.ci_high),
                    "n_served": n_served, "ess": e.ess}
    return out
