"""Discounted sufficient statistics for discounted Thompson sampling (drifting rewards).

Discounted Thompson sampling (Raj & Kalyani 2017) forgets old evidence
geometrically: after every reward *all* arms' statistics are multiplied by a
discount ``gamma`` in (0, 1] and the rewarded arm adds the new observation,
i.e. with ``N`` rewards so far an observation ``t`` rewards old carries weight
``gamma^t`` (the discounted statistics of Garivier & Moulines 2011). The
posterior is the prior updated with these weighted counts, so it stays about
``1 / (1 - gamma)`` rewards wide and tracks a mean that drifts; ``gamma = 1``
is plain Thompson sampling.

Why per reward, not per second: the store keeps only cumulative counters, and
the router recomputes weights only when they move. Discounting per reward
makes the discounted statistics a function of the reward sequence alone, so
nothing needs recomputing while no reward arrives, and replicas that see the
same counters agree whatever their clocks.

From cumulative counters
------------------------
A router sees counters at refreshes, not single rewards. Between two
refreshes it sees per-arm deltas that add up to ``D`` rewards in total, in an
unknown order. :func:`update` ages the previous statistics by ``gamma^D`` and
adds the deltas at the *average* weight of ``D`` consecutive rewards,
``w(D) = (1 - gamma^D) / (D (1 - gamma))`` (:func:`batch_weight`). This is
exact for ``D = 1`` (one reward per refresh), exact for the total weight
(``sum_t gamma^t`` over the batch) whatever ``D``, and for a batch it differs
from the exact per-reward weights only in how weight is shared among the
batch's rewards - negligible when ``D << 1 / (1 - gamma)``, which a router
refreshing every 100 ms satisfies for any useful ``gamma``. A replica that
starts late folds the whole history in as one batch (the same formula from
zero state): the history is treated as spread evenly over the counters.

The state is explicit (:class:`DiscountedStats`) and every function is pure:
the caller keeps the returned state and passes it back at the next refresh.

References
----------
* V. Raj, S. Kalyani (2017). Taming non-stationary bandits: a Bayesian
  approach. arXiv:1707.09727 - discounted Thompson sampling.
* A. Garivier, E. Moulines (2011). On upper-confidence bound policies for
  switching bandit problems. ALT 2011 - discounted statistics.

Examples
--------
>>> st = initial(2)
>>> st = update(st, [[10, 3], [10, 5]], gamma=0.9)       # 20 rewards in one batch
>>> st.decayed[:, 0].round(4).tolist()                    # 10 * w(20)
[4.3921, 4.3921]
>>> st = update(st, [[11, 4], [10, 5]], gamma=0.9)        # one more reward on arm 0
>>> st.decayed[:, 0].round(4).tolist()                    # 0.9 * old + 1, 0.9 * old
[4.9529, 3.9529]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["DiscountedStats", "batch_weight", "initial", "update"]


@dataclass(frozen=True)
class DiscountedStats:
    """Discounted statistics of ``k`` arms, shape ``(k, p)`` (column 0 is the count).

    ``seen`` are the cumulative counters already folded in; ``decayed`` the
    discounted statistics (e.g. columns ``n, s`` for Bernoulli rewards, ``n,
    s, ss`` for Gaussian ones).
    """

    seen: np.ndarray
    decayed: np.ndarray


def _gamma(gamma: float) -> float:
    g = float(gamma)
    if not (math.isfinite(g) and 0.0 < g <= 1.0):
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    return g


def batch_weight(gamma: float, d: float) -> float:
    """Average weight ``(1 - gamma^d) / (d (1 - gamma))`` of ``d`` consecutive rewards (1 at ``d = 0``).

    >>> batch_weight(0.5, 2), batch_weight(1.0, 100), batch_weight(0.9, 0)
    (0.75, 1.0, 1.0)
    """
    g = _gamma(gamma)
    d = float(d)
    if not (math.isfinite(d) and d >= 0):
        raise ValueError(f"d must be finite and >= 0, got {d}")
    if g == 1.0 or d == 0.0:
        return 1.0
    lg = math.log(g)
    # expm1 keeps precision for gamma near 1, where 1 - gamma^d cancels.
    return math.expm1(d * lg) / (d * math.expm1(lg))


def initial(k: int, p: int = 2) -> DiscountedStats:
    """The state before any counter was seen: zeros of shape ``(k, p)``."""
    k, p = int(k), int(p)
    if k < 1 or p < 1:
        raise ValueError(f"need k >= 1 arms and p >= 1 statistics, got {k}, {p}")
    return DiscountedStats(np.zeros((k, p)), np.zeros((k, p)))


def update(state: DiscountedStats, counters: ArrayLike, gamma: float) -> DiscountedStats:
    """Fold the cumulative ``counters`` (shape ``(k, p)``, column 0 the counts) into ``state``.

    Deltas since ``state.seen`` add ``D = sum of count deltas`` rewards: the
    previous statistics are multiplied by ``gamma^D`` and the deltas added with
    weight :func:`batch_weight` ``(gamma, D)``. Counters that went *down* on any
    arm (a store reset) restart from zero state. ``gamma = 1`` returns the
    cumulative counters themselves.

    Raises
    ------
    ValueError
        On a ``gamma`` outside (0, 1], non-finite counters, or a shape that
        differs from the state's.
    """
    g = _gamma(gamma)
    c = np.asarray(counters, dtype=float)
    if c.shape != state.seen.shape:
        raise ValueError(f"counters have shape {c.shape}, expected {state.seen.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("counters must be finite")
    prev_seen, prev = state.seen, state.decayed
    delta = c - prev_seen
    if np.any(delta[:, 0] < 0):
        prev_seen, prev = np.zeros_like(c), np.zeros_like(c)
        delta = c
    d = float(delta[:, 0].sum())
    if d == 0.0 and not np.any(delta):
        return DiscountedStats(c.copy(), prev.copy())
    decayed = g**d * prev + batch_weight(g, d) * delta
    return DiscountedStats(c.copy(), decayed)
