"""Routing weights and variant picks for Thompson-sampling bandits.

The router draws a variant from an explicit weight vector (probability
matching) rather than from a single posterior sample, so the propensity it
logs is exactly the weight it used.

Examples
--------
>>> apply_floor([0.9, 0.1, 0.0], 0.1).round(6).tolist()
[0.8, 0.1, 0.1]
>>> choose([0.25, 0.25, 0.5], 0.3)
1
"""

from __future__ import annotations

import bisect
import hashlib
import math
from itertools import accumulate

import numpy as np
from numpy.typing import ArrayLike

from .beta import DEFAULT_DRAWS, prob_best

__all__ = [
    "apply_floor",
    "choose",
    "floor_schedule",
    "mix_holdout",
    "thompson_weights",
    "uniform_weights",
    "unit_uniform",
]

# Slack for "min_weight * k > 1" so that e.g. 1/3 * 3 is not rejected by round-off.
_FLOOR_SLACK = 1e-12
# The floor's lower bound, as a fraction of min_weight, when the policy does not set one.
FLOOR_FINAL_FRACTION = 0.1


def uniform_weights(k: int) -> np.ndarray:
    """Equal weights ``1/k`` for ``k >= 1`` arms."""
    k = int(k)
    if k < 1:
        raise ValueError(f"need at least one arm, got k={k}")
    return np.full(k, 1.0 / k)


def apply_floor(weights: ArrayLike, min_weight: float) -> np.ndarray:
    """Normalise ``weights`` and lift every arm to at least ``min_weight``.

    Arms whose share would fall below the floor get exactly ``min_weight``; the
    remaining mass is split among the other arms in proportion to their original
    weights, repeated until no further arm drops below the floor. Ordering of
    arms by weight is preserved. All-zero or non-finite input falls back to
    uniform weights (exploration is the safe default when the posterior is
    unusable).

    Parameters
    ----------
    weights : array_like, shape (k,)
        Non-negative weights (need not sum to 1).
    min_weight : float
        Floor per arm, ``0 <= min_weight`` and ``min_weight * k <= 1``.

    Returns
    -------
    ndarray, shape (k,)
        Sums to 1 and every entry is ``>= min_weight`` (up to float round-off).

    Raises
    ------
    ValueError
        If the floor is impossible (``min_weight * k > 1``), negative, or a
        weight is negative.

    Examples
    --------
    >>> apply_floor([0, 0], 0.2).tolist()
    [0.5, 0.5]
    >>> apply_floor([0.97, 0.02, 0.01], 0.05).round(6).tolist()
    [0.9, 0.05, 0.05]
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D array, got shape {w.shape}")
    m = float(min_weight)
    k = w.size
    if not math.isfinite(m) or m < 0:
        raise ValueError(f"min_weight must be finite and >= 0, got {min_weight}")
    if m * k > 1.0 + _FLOOR_SLACK:
        raise ValueError(f"min_weight {m} is impossible for {k} arms (min_weight * k > 1)")
    if np.any(w < 0):  # NaN compares False here and is handled below
        raise ValueError("weights must be non-negative")
    total = float(w.sum())
    if not np.all(np.isfinite(w)) or not math.isfinite(total) or total <= 0.0:
        w = np.ones(k)
        total = float(k)
    w = w / total

    fixed = np.zeros(k, dtype=bool)
    out = w.copy()
    # The fixed set only grows, so this terminates within k passes.
    for _ in range(k + 1):
        free = ~fixed
        remaining = max(0.0, 1.0 - m * int(fixed.sum()))
        mass = float(w[free].sum())
        out = np.empty(k)
        out[fixed] = m
        if mass > 0.0:
            out[free] = remaining * w[free] / mass
        else:  # unreachable in exact arithmetic (the top arm is never fixed); be safe
            out[free] = remaining / max(1, int(free.sum()))
        newly = free & (out < m)
        if not newly.any():
            break
        fixed |= newly
    return out


def floor_schedule(
    min_weight: float,
    rewards: ArrayLike,
    min_samples: float,
    final: float | None = None,
) -> float | np.ndarray:
    """The share floor of the live arms after ``rewards``: full until the promotion rule can
    decide, then decaying with the evidence down to a bound.

    ``floor = min_weight`` while any arm has fewer than ``min_samples`` rewards (the promotion
    rule needs that many from every arm, so none may starve before it can decide); from then on
    ``floor = max(final, min_weight * sqrt(n0 / n))``, with ``n`` the arms' rewards in total and
    ``n0 = k * min_samples`` the total at which the rule can first decide. ``final`` (default
    ``min_weight * FLOOR_FINAL_FRACTION``, capped at ``min_weight``) stays above 0, so every arm
    keeps some traffic for good: its posterior and the rule's evidence keep growing and a
    change in its reward rate is still seen. ``final = min_weight`` gives a constant floor.

    The forced exploration this costs up to a total of ``n`` rewards is about
    ``2 * min_weight * sqrt(n0 * n)`` rewards (in place of ``min_weight * n`` for a constant
    floor), then ``final`` per reward once the bound is reached, at ``n = n0 * (min_weight /
    final) ** 2`` (100 * n0 for the default bound).

    Parameters
    ----------
    min_weight : float
        The full floor, ``>= 0``.
    rewards : array_like, shape (..., k)
        Rewards per live arm (cumulative counts); leading axes are independent experiments.
    min_samples : float
        The promotion rule's per-arm minimum, ``>= 0``.
    final : float, optional
        The lower bound the floor decays to, ``>= 0``; None: ``min_weight * FLOOR_FINAL_FRACTION``.

    Returns
    -------
    float or ndarray, shape (...)
        A float for a 1-D ``rewards``. Never above ``min_weight``, never below
        ``min(final, min_weight)``, and never rising as any arm's rewards grow.

    Examples
    --------
    >>> floor_schedule(0.01, [499, 10_000], 500)
    0.01
    >>> floor_schedule(0.01, [500, 500], 500)
    0.01
    >>> round(floor_schedule(0.01, [1_000, 3_000], 500), 6)
    0.005
    >>> floor_schedule(0.01, [1_000, 10**6], 500)
    0.001
    >>> floor_schedule(0.01, [[500, 1_500], [100, 100]], 500).round(6).tolist()
    [0.007071, 0.01]
    """
    m = float(min_weight)
    if not math.isfinite(m) or m < 0:
        raise ValueError(f"min_weight must be finite and >= 0, got {min_weight}")
    ms = float(min_samples)
    if not math.isfinite(ms) or ms < 0:
        raise ValueError(f"min_samples must be finite and >= 0, got {min_samples}")
    lo = m * FLOOR_FINAL_FRACTION if final is None else float(final)
    if not math.isfinite(lo) or lo < 0:
        raise ValueError(f"final must be finite and >= 0, got {final}")
    lo = min(lo, m)
    n = np.asarray(rewards, dtype=float)
    if n.ndim == 0 or n.shape[-1] == 0:
        raise ValueError(f"rewards must have one entry per arm, got shape {n.shape}")
    if not np.all(np.isfinite(n)) or np.any(n < 0):
        raise ValueError("rewards must be finite and non-negative")
    total = n.sum(axis=-1)
    n0 = n.shape[-1] * ms
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(total > 0, n0 / np.where(total > 0, total, 1.0), 1.0)
    decayed = np.clip(m * np.sqrt(np.minimum(ratio, 1.0)), lo, m)
    out = np.where(n.min(axis=-1) < ms, m, decayed)
    return float(out) if out.ndim == 0 else out


def thompson_weights(
    alpha: ArrayLike,
    beta: ArrayLike,
    min_weight: float,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Probability-matching weights: :func:`~gateway.bandit.beta.prob_best` with a floor.

    Deterministic for equal inputs when ``rng`` is None (fixed seed).

    Examples
    --------
    >>> w = thompson_weights([500, 100], [500, 900], min_weight=0.05)
    >>> w.tolist()
    [0.95, 0.05]
    """
    return apply_floor(prob_best(alpha, beta, draws=draws, rng=rng), min_weight)


def choose(weights: ArrayLike, u: float) -> int:
    """Inverse-CDF pick of an arm index for ``u`` in [0, 1).

    Arm ``i`` owns ``[cdf[i-1], cdf[i])`` so zero-weight arms are never chosen.

    Examples
    --------
    >>> [choose([0.5, 0.0, 0.5], u) for u in (0.0, 0.4999, 0.5, 0.9999)]
    [0, 0, 2, 2]
    """
    arr = np.asarray(weights, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D array, got shape {arr.shape}")
    # Plain Python on a short list: this runs per request and numpy's per-call
    # overhead dominates for a handful of arms.
    w = arr.tolist()
    for x in w:
        if not 0.0 <= x < math.inf:  # also rejects NaN
            raise ValueError("weights must be finite and non-negative")
    u = float(u)
    if not 0.0 <= u < 1.0:
        raise ValueError(f"u must be in [0, 1), got {u}")
    cdf = list(accumulate(w))
    total = cdf[-1]
    if not 0.0 < total < math.inf:
        raise ValueError("weights must have a positive, finite sum")
    # Normalising makes the last entry exactly 1.0, so u < 1 always lands on an arm;
    # bisect_right gives zero-weight arms an empty interval.
    idx = bisect.bisect_right([c / total for c in cdf], u)
    # Round-off guard: never return past the last arm with positive weight.
    last = next(i for i in range(len(w) - 1, -1, -1) if w[i] > 0.0)
    return min(idx, last)


def unit_uniform(experiment: str, unit_id: str) -> float:
    """Stable uniform in [0, 1) for sticky assignment of ``unit_id``.

    The first 8 bytes of ``blake2b(f"{experiment}\\x00{unit_id}")`` read as a
    big-endian integer over 2**64, truncated to 53 bits so the float can never
    round up to 1.0. Independent of process, platform and ``PYTHONHASHSEED``.

    Examples
    --------
    >>> unit_uniform("exp", "user-1") == unit_uniform("exp", "user-1")
    True
    >>> 0.0 <= unit_uniform("exp", "user-1") < 1.0
    True
    """
    key = f"{experiment}\x00{unit_id}".encode()
    x = int.from_bytes(hashlib.blake2b(key).digest()[:8], "big")
    return (x >> 11) * 2.0**-53


def mix_holdout(bandit_weights: ArrayLike, holdout_fraction: float) -> tuple[float, np.ndarray]:
    """Reserve ``holdout_fraction`` of traffic for a holdout arm.

    Returns ``(holdout_share, bandit_shares)`` where the bandit weights are
    normalised and scaled by ``1 - holdout_fraction``; together they sum to 1.

    Examples
    --------
    >>> h, w = mix_holdout([0.75, 0.25], 0.2)
    >>> h, w.round(6).tolist()
    (0.2, [0.6, 0.2])
    """
    f = float(holdout_fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1], got {holdout_fraction}")
    w = np.asarray(bandit_weights, dtype=float)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"bandit_weights must be a non-empty 1-D array, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("bandit_weights must be finite, non-negative with a positive sum")
    return f, (1.0 - f) * (w / w.sum())
