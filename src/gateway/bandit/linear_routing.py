"""Routing by linear Thompson sampling: the shares each variant gets at a request's context, by
the gateway's rule (burn-in, floor), from the model of gateway.bandit.linear_ts. The logged
propensity of a request is its row's entry for the variant drawn."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .family import check_draws, default_rng
from .linear_ts import LINEAR_DRAWS, LinearPosterior, LinearPrior, LinearStats, linear_posterior, predictive, wins_from_draws

__all__ = ["LinearRouting", "floor_rows", "linear_shares"]


def floor_rows(w: ArrayLike, min_weight: float) -> np.ndarray:
    """Row-wise :func:`gateway.bandit.selection.apply_floor` (rows sum to 1, each entry >= the floor)."""
    w = np.asarray(w, dtype=float)
    k = w.shape[-1]
    m = float(min_weight)
    if not (math.isfinite(m) and m >= 0 and m * k <= 1.0 + 1e-12):
        raise ValueError(f"min_weight {min_weight} is impossible for {k} arms")
    total = w.sum(axis=-1, keepdims=True)
    bad = ~np.isfinite(total) | (total <= 0)
    w = np.where(bad, 1.0 / k, w / np.where(bad, 1.0, total))
    fixed = np.zeros(w.shape, dtype=bool)
    out = w
    for _ in range(k + 1):
        remaining = 1.0 - m * fixed.sum(axis=-1, keepdims=True)
        mass = np.where(fixed, 0.0, w).sum(axis=-1, keepdims=True)
        out = np.where(fixed, m, remaining * w / np.maximum(mass, 1e-300))
        newly = ~fixed & (out < m)
        if not newly.any():
            break
        fixed |= newly
    return out


@dataclass(frozen=True)
class LinearRouting:
    """:func:`linear_shares`'s rule with everything but the request's context computed once: the
    mature variants' posteriors and their shared Student-t draws (the router refreshes this when
    the counters move; a request then costs one predictive and ``draws x k`` comparisons)."""

    k: int
    young: np.ndarray  # (k,) bool: still burning in (uniform 1/k)
    mature: np.ndarray  # indices of the others
    rest: float  # the share the mature variants split
    floor: float  # each mature variant's floor, as a fraction of ``rest``
    posterior: LinearPosterior | None  # of the mature variants (None: fewer than two)
    z: np.ndarray | None  # (draws, mature) standard Student-t draws

    @classmethod
    def build(cls, prior: LinearPrior, stats: LinearStats, *, min_weight: float = 0.01, burn_in: int = 200,
              draws: int = LINEAR_DRAWS, rng: np.random.Generator | None = None) -> LinearRouting:
        if stats.n.ndim != 1:
            raise ValueError("routing is for statistics without leading axes")
        k = stats.k
        mw = float(min_weight)
        if not (math.isfinite(mw) and 0 <= mw and mw * k <= 1.0 + 1e-12):
            raise ValueError(f"min_weight {min_weight} is impossible for {k} variants")
        young = stats.n < burn_in
        mature = np.flatnonzero(~young)
        rest = 1.0 - int(young.sum()) / k
        if mature.size < 2:
            return cls(k, young, mature, rest, 1.0, None, None)
        sub = LinearStats(stats.n[mature], stats.xtx[mature], stats.xty[mature], stats.yty[mature])
        post = linear_posterior(prior, sub)
        # The same draws, in the same order, as linear_prob_best's: equal shares for equal inputs.
        z = default_rng(rng).standard_t(2.0 * post.a, size=(check_draws(draws), mature.size))
        return cls(k, young, mature, rest, min(mw / rest, 1.0 / mature.size), post, z)

    def shares(self, X: ArrayLike) -> np.ndarray:
        """Routing shares at each context ``X`` (m, d): shape (m, k), rows summing to 1."""
        Xa = np.asarray(X, dtype=float)
        m = Xa.shape[0] if Xa.ndim == 2 else 0
        out = np.full((m, self.k), 1.0 / self.k)
        if self.young.all():
            return out
        if self.posterior is None:
            out[:, self.mature] = self.rest
            return out
        loc, scale, _ = predictive(self.posterior, Xa)
        out[:, self.mature] = self.rest * floor_rows(wins_from_draws(loc, scale, self.z), self.floor)
        return out


def linear_shares(
    prior: LinearPrior,
    stats: LinearStats,
    X: ArrayLike,
    *,
    min_weight: float = 0.01,
    burn_in: int = 200,
    draws: int = LINEAR_DRAWS,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Routing shares per request, shape (m, k), by the gateway's rule (as
    :func:`gateway.decisions.allocation.allocate`): a variant with fewer than ``burn_in``
    rewards gets ``1/k``; if all do, uniform; otherwise the mature variants share the rest by
    :func:`linear_prob_best` among themselves, floored at ``min_weight`` of the total. The
    logged propensity of a request is its row's entry for the variant drawn.
    (:class:`LinearRouting` is the same rule with the posteriors computed once.)

    >>> s = linear_shares(LinearPrior(), LinearStats.zeros(3, 2), np.ones((4, 2)))
    >>> s.shape, bool(np.allclose(s, 1 / 3))
    ((4, 3), True)
    """
    routing = LinearRouting.build(prior, stats, min_weight=min_weight, burn_in=burn_in, draws=draws, rng=rng)
    return routing.shares(X)
