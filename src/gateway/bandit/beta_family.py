"""Beta posteriors for rewards in [0, 1], and their anytime-valid pairwise evidence.

Each arm's mean reward has a ``Beta(alpha, beta)`` posterior; fractional
rewards count as fractional successes (``alpha = prior_alpha + s``,
``beta = prior_beta + n - s`` after ``n`` rewards summing to ``s``).

Pairwise evidence: one-sided normal-mixture SPRT (mSPRT) on standardized differences
-----------------------------------------------------------------------------------
For an ordered pair of arms ``(i, j)`` with ``n_i, n_j`` rewards summing to
``s_i, s_j``, let

* ``d = s_i/n_i - s_j/n_j`` (difference of observed means),
* ``p = (s_i + s_j + 1/2) / (n_i + n_j + 1)`` (pooled mean, i.e. the mean
  under the null of equal arms, lightly regularised so it is never 0 or 1),
* ``sigma2 = p (1 - p)`` (Bernoulli variance; for rewards in [0, 1] it is an
  upper bound on the variance given the mean, so the test stays conservative),
* ``m = n_i n_j / (n_i + n_j)`` (effective sample size of the difference; it
  handles the unequal allocation a bandit produces),
* ``z = d sqrt(m / sigma2)`` and ``r = tau2 m``.

The mixture likelihood ratio of "standardized effect ``delta = (mu_i -
mu_j)/sigma``" against ``delta = 0``, mixing over the half-normal prior
``delta ~ |N(0, tau2)|`` (so only ``mu_i > mu_j`` counts as evidence), is ::

    log E_ij = log 2 - log(1 + r)/2 + r z^2 / (2 (1 + r)) + log Phi(z sqrt(r / (1 + r)))

In the Gaussian model this is the Bayes factor of the shift-invariant two-arm
problem, which is a nonnegative (super)martingale under ``mu_i <= mu_j`` for
any sampling rule that is shift-equivariant (Gaussian Thompson sampling is;
the allocation may be unequal and data dependent), so by
Ville's inequality ``P(exists n: E_ij >= 1/a) <= a``. For Bernoulli rewards
with a plug-in variance the guarantee is asymptotic in the sense of
Waudby-Smith et al. (2021); ``bench/bandit.py`` and the unit tests check the
resulting error rate by simulation under Thompson allocation.
``E_ij <= 1`` whenever ``d <= 0``: only a positive observed difference can
reject. At ``n = 0`` (no data) ``E_ij = 1``. How the pairs make a test over
``k`` arms, and how ``tau2`` is chosen: :mod:`.sequential`.

Examples
--------
>>> post = BETA.update((1.0, 1.0), ([4, 0], [1.5, 0]))
>>> [x.tolist() for x in post]
[[2.5, 1.0], [3.5, 1.0]]
>>> log_e, z = BETA.pairwise_log_e(([6000, 6000], [600, 720]), tau2=0.004)
>>> round(float(z[1, 0]), 2), round(float(log_e[1, 0]), 2), bool(log_e[0, 1] < 0)
(3.5, 5.07, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import log_ndtr
from scipy.stats import beta as _beta_dist

from .family import LOG2, PosteriorFamily, Post, Sampler, check_tau2, counters

__all__ = ["BETA", "BetaFamily"]


class BetaFamily(PosteriorFamily):
    """Beta posteriors ``(alpha, beta)`` of rewards in [0, 1]; the evidence is the mSPRT above."""

    labels = ("alpha", "beta")
    positive = ("alpha", "beta")
    sums = ("reward_sums",)
    sum_words = ("reward sums",)
    stat_name = "z"
    method = "one-sided normal-mixture SPRT, Bonferroni over arms"

    def _shapes_differ(self, shapes: list[tuple[int, ...]]) -> str:
        return f"alpha and beta shapes differ: {shapes[0]} vs {shapes[1]}"

    def update(self, prior: Sequence[float], stats: Sequence[ArrayLike]) -> Post:
        """``(alpha, beta)`` after rewards ``stats = (n, s)``; needs a finite prior > 0 and ``n >= s >= 0``."""
        pa, pb = (float(x) for x in prior)
        if not (math.isfinite(pa) and math.isfinite(pb) and pa > 0 and pb > 0):
            raise ValueError(f"prior must be finite and > 0, got ({pa}, {pb})")
        n_arr, s_arr = counters(stats)
        if np.any(s_arr < 0) or np.any(s_arr > n_arr):
            raise ValueError("need n >= s >= 0 for every arm")
        return pa + s_arr, pb + (n_arr - s_arr)

    def mean(self, post: Sequence[ArrayLike]) -> np.ndarray:
        a, b = self.validate(post)
        return a / (a + b)

    def _quantiles(self, post: Post, tail: float) -> tuple[np.ndarray, np.ndarray]:
        a, b = post
        lo = np.asarray(_beta_dist.ppf(tail, a, b), dtype=float)
        # isf keeps precision in the upper tail where 1 - tail would round.
        hi = np.asarray(_beta_dist.isf(tail, a, b), dtype=float)
        return lo, hi

    def _sampler(self, post: Post) -> Sampler:
        a, b = post
        return lambda rng, size: rng.beta(a, b, size=size)

    def row_mean(self, row: dict[str, float | None]) -> float | None:
        a, b = row["alpha"], row["beta"]
        return a / (a + b) if a is not None and b is not None and a > 0 and b > 0 else None

    def counter_problem(self, n: np.ndarray, sums: Sequence[np.ndarray]) -> str | None:
        (s,) = sums
        # Relative slack: float sums of fractional rewards drift a hair outside [0, n].
        if np.any(n < 0) or np.any(s < -1e-9 * np.maximum(n, 1.0)):
            return "negative reward counts or sums"
        if np.any(s > n * (1.0 + 1e-9) + 1e-9):
            return "reward sums exceed reward counts (rewards must lie in [0, 1])"
        return None

    def pairwise_log_e(self, stats: Sequence[ArrayLike], tau2: float) -> tuple[np.ndarray, np.ndarray]:
        """``(log_e, z)`` from ``stats = (n, s)`` of shape ``(..., k)``: the mSPRT above.

        ``z[..., i, j]`` is the pooled two-proportion z statistic of ``i`` minus
        ``j``. Pairs where an arm has no rewards give ``log_e = 0`` and ``z = 0``.
        """
        t2 = check_tau2(tau2)
        n_arr, s_arr = counters(stats, need_arms=True)
        if np.any(n_arr < 0):
            raise ValueError("n must be >= 0")
        # Float sums of fractional rewards can drift a hair outside [0, n].
        s_arr = np.clip(s_arr, 0.0, n_arr)
        ni, nj = n_arr[..., :, None], n_arr[..., None, :]
        si, sj = s_arr[..., :, None], s_arr[..., None, :]
        # Counts near the float range (only from corrupt counters) overflow here: computed without
        # raising, and a non-finite e-value counts as no evidence at all.
        with np.errstate(all="ignore"):
            both = (ni > 0) & (nj > 0)
            d = np.where(both, si / np.where(ni > 0, ni, 1.0) - sj / np.where(nj > 0, nj, 1.0), 0.0)
            pooled = (si + sj + 0.5) / (ni + nj + 1.0)
            sigma2 = pooled * (1.0 - pooled)
            m = np.where(both, ni * nj / np.where(both, ni + nj, 1.0), 0.0)
            z = d * np.sqrt(m / sigma2)
            r = t2 * m
            log_e = LOG2 - 0.5 * np.log1p(r) + r * z * z / (2.0 * (1.0 + r)) + log_ndtr(z * np.sqrt(r / (1.0 + r)))
        eye = np.eye(n_arr.shape[-1], dtype=bool)
        return np.where(eye | ~np.isfinite(log_e), -np.inf, log_e), np.where(eye, 0.0, z)


BETA = BetaFamily()
