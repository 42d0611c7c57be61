"""Anytime-valid promotion test: "arm ``i`` is better than every other arm".

Why
---
The Bayesian gate of :mod:`.promotion` (``prob_best >= 0.95`` and a small
expected loss) is a fixed-sample criterion. Checked after every reward it is
not a test at all: in an A/A experiment two identical arms drift apart by
chance, and over a long horizon one of them eventually looks "95% likely to be
best" (``bench/bandit.py`` measures 60-80% false promotions). This module adds
a test whose error guarantee holds *simultaneously over all sample sizes*, so
it may be evaluated after every reward, every refresh, or whenever an operator
looks, with no penalty and no planned horizon.

Method: pairwise e-values, Bonferroni over the arms
---------------------------------------------------
The posterior family supplies, for every ordered pair of arms ``(i, j)``, an
e-value ``E_ij`` against ``mu_i <= mu_j``: a nonnegative statistic whose
expectation is at most 1 under that null at every sample size, so by Ville's
inequality ``P(exists n: E_ij >= 1/a) <= a``. For rewards in [0, 1] it is the
one-sided normal-mixture SPRT (mSPRT) on the pooled z statistic
(:mod:`.beta_family`); for Gaussian rewards the one-sided Welch t-mixture
(:mod:`.nig_family`). Both mix the standardized effect ``delta = (mu_i -
mu_j) / sigma`` over the half-normal ``|N(0, tau2)|``, so only ``mu_i > mu_j``
counts as evidence, and ``E_ij <= 1`` whenever the observed difference is not
positive. The test is written once against that interface (:mod:`.anytime`);
this module gives it its names for rewards in [0, 1].

``k`` arms: arm ``i`` is declared best when ``min_{j != i} E_ij >= k/alpha``.
To promote a non-best arm ``i`` it must beat some arm ``j*`` at least as good
as itself, an event of probability ``<= alpha/k``; the union over the at most
``k`` candidates gives ``P(any wrong promotion, ever) <= alpha`` - including
the A/A case where every arm is equal (with ``k = 2`` this is the familiar
two-sided test at level ``alpha``, 0.025 per direction). The always-valid
p-value is ``p_i = min(1, k / min_j E_ij)``; reject when ``p_i <= alpha``.
Promotion is absorbing, so the running minimum of ``p`` is not needed.

``tau2`` is the mixing variance of the *standardized* effect. It only moves
power between sample sizes, never validity. The boundary is lowest at
effective size ``m* ~ (2c + log(2c + 1)) / tau2`` with ``c = log(k/alpha) -
log 2`` (:func:`mixture_tau2` inverts this); there a one-sided crossing needs
``z ~ 3.0`` for ``k = 2``, against 1.96 for a single fixed-horizon look. The default ``tau2 = 0.004`` is tuned for
about 4,000 rewards per arm, the fixed-horizon size for 10% -> 12% conversion,
i.e. for standardized lifts around 0.06: smaller effects are still detected
(power one) but later, huge effects slightly later than with a tuned ``tau2``.

The test is combined with the Bayesian gates in :func:`evaluate_sequential`:
an arm is promoted only when the test rejects *and* ``prob_best``, expected
loss, ``min_samples`` and ``min_duration_s`` pass.

Allocation matters for speed, not validity: the evidence grows with
``m = n_i n_j / (n_i + n_j)``, which probability-matching Thompson sampling
keeps near the *loser's* count (it starves it on purpose), so promotion under
plain Thompson takes many times longer than under a 50/50 split.
Top-two Thompson sampling (:func:`top_two_weights`, ``beta = 0.5``) keeps
``m`` near its maximum and is 50/50 for two arms; ``bench/bandit.py`` shows
both.

References
----------
* H. Robbins (1970). Statistical methods related to the law of the iterated
  logarithm. Ann. Math. Statist. 41(5) - normal-mixture boundaries.
* R. Johari, P. Koomen, L. Pekelis, D. Walsh (2017/2022). Always valid
  inference: continuous monitoring of A/B tests. KDD 2017 / Operations
  Research 70(3) - mSPRT and always-valid p-values for A/B tests.
* S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon (2021). Time-uniform,
  nonparametric, nonasymptotic confidence sequences. Ann. Statist. 49(2) -
  one-sided normal mixture, Ville's inequality.
* I. Waudby-Smith, D. Arbour, R. Sinha, E. H. Kennedy, A. Ramdas (2021/2024).
  Time-uniform central limit theory and asymptotic confidence sequences.
  Ann. Statist. - plug-in variance, standardized mixing variance, its optimum.
* M. F. Perez-Ortiz, T. Lardy, R. de Heide, P. Grunwald (2024). E-statistics,
  group invariance and anytime-valid testing. Ann. Statist. - invariant Bayes
  factors (the flat prior on the common mean) are test martingales.
* D. Russo (2020). Simple Bayesian algorithms for best-arm identification.
  Operations Research 68(6) - top-two Thompson sampling
  (:func:`top_two_weights`).

Examples
--------
>>> leader, log_e = sequential_evidence([6000, 6000], [600, 720])  # 10% vs 12%
>>> int(leader), round(float(log_e), 2), round(threshold(2, 0.05), 2)
(1, 5.07, 3.69)
>>> round(always_valid_p([6000, 6000], [600, 720], leader=1), 4)
0.0126
>>> int(sequential_evidence([4000, 4000], [400, 480])[0])  # z = 2.86: not yet
-1
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from .anytime import decide, verdict
from .beta_family import BETA
from .family import DEFAULT_DRAWS, LOG2, check_level
from .promotion import Decision, PromotionRule

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_TAU2",
    "always_valid_p",
    "evaluate_sequential",
    "mixture_tau2",
    "pairwise_log_e",
    "sequential_evidence",
    "threshold",
    "top_two_weights",
]

DEFAULT_ALPHA = 0.05
DEFAULT_TAU2 = 0.004


def threshold(k: int, alpha: float = DEFAULT_ALPHA) -> float:
    """Rejection threshold on ``log E`` for ``k`` arms: ``log(k / alpha)``.

    >>> round(threshold(2, 0.05), 4)
    3.6889
    """
    k = int(k)
    if k < 2:
        raise ValueError(f"need at least 2 arms, got {k}")
    return math.log(k / check_level(alpha))


def mixture_tau2(n_per_arm: float, alpha: float = DEFAULT_ALPHA, k: int = 2) -> float:
    """Mixing variance that makes the boundary tightest at ``n_per_arm`` rewards per arm.

    Uses the optimum of the normal-mixture boundary (Waudby-Smith et al. 2021,
    eq. for rho^2) at the effective size ``m = n_per_arm / 2`` of two equally
    sampled arms, with the one-sided level ``alpha / k``:
    ``tau2 = (2 c + log(2 c + 1)) / m`` with ``c = log(k / alpha) - log 2``.

    >>> round(mixture_tau2(4000), 4)
    0.004
    """
    n = float(n_per_arm)
    if not (math.isfinite(n) and n > 0):
        raise ValueError(f"n_per_arm must be > 0, got {n_per_arm}")
    # One-sided half-normal mixture ~ two-sided mixture at level 2*alpha/k.
    c = threshold(k, alpha) - LOG2
    return (2.0 * c + math.log(2.0 * c + 1.0)) / (n / 2.0)


# --------------------------------------------------------------------------- statistics


def pairwise_log_e(n: ArrayLike, s: ArrayLike, tau2: float = DEFAULT_TAU2) -> tuple[np.ndarray, np.ndarray]:
    """Log mixture likelihood ratios ``log E[..., i, j]`` for "arm i beats arm j" (rewards in [0, 1]).

    Parameters
    ----------
    n, s : array_like, shape (..., k)
        Rewards per arm and their sums (rewards in [0, 1]); leading axes are
        independent experiments (e.g. simulation seeds).
    tau2 : float
        Mixing variance of the standardized effect, > 0.

    Returns
    -------
    log_e, z : ndarray, shape (..., k, k)
        ``log_e[..., i, j]`` is the log e-value against ``mu_i <= mu_j``;
        ``z[..., i, j]`` the pooled two-proportion z statistic of ``i`` minus
        ``j`` (:mod:`.beta_family`). Diagonals are ``-inf`` and ``0``. Pairs
        where an arm has no rewards give ``log_e = 0`` (no evidence) and
        ``z = 0``. Always finite off the diagonal.

    Raises
    ------
    ValueError
        On non-finite input, negative counts, fewer than 2 arms or bad ``tau2``.
    """
    return BETA.pairwise_log_e((n, s), tau2)


def sequential_evidence(
    n: ArrayLike, s: ArrayLike, alpha: float = DEFAULT_ALPHA, tau2: float = DEFAULT_TAU2
) -> tuple[np.ndarray, np.ndarray]:
    """Anytime-valid verdict on which arm (if any) is better than all others.

    Parameters
    ----------
    n, s : array_like, shape (..., k)
        Rewards per arm and their sums; leading axes are vectorised over.
    alpha : float
        Probability, over the whole (unbounded) experiment, of ever declaring
        a non-best arm best (or any arm, when all are equal).
    tau2 : float
        Mixing variance of the standardized effect (see module docstring).

    Returns
    -------
    leader : ndarray of int, shape (...)
        Index of the arm declared best, or -1 when the test has not rejected.
    log_e : ndarray of float, shape (...)
        ``max_i min_{j != i} log E_ij``, the statistic of the strongest arm;
        rejection means ``log_e >= log(k / alpha)`` (:func:`threshold`).
    """
    return verdict(BETA, (n, s), alpha, tau2)


def always_valid_p(
    n: ArrayLike, s: ArrayLike, leader: int, tau2: float = DEFAULT_TAU2
) -> np.ndarray | float:
    """Always-valid p-value for "arm ``leader`` is not better than every other arm".

    ``p = min(1, k * max_{j != leader} 1 / E_{leader, j})`` (Bonferroni over
    the ``k`` possible leaders). Valid at every sample size simultaneously:
    ``P(exists n: p_n <= alpha and leader is not best) <= alpha``. Returns a
    float for 1-D input, else an array over the leading axes.

    >>> round(always_valid_p([100, 100], [10, 10], leader=0), 3)  # no evidence
    1.0
    """
    log_e, _ = BETA.pairwise_log_e((n, s), tau2)
    k = log_e.shape[-1]
    i = int(leader)
    if not 0 <= i < k:
        raise ValueError(f"leader must be an arm index in [0, {k}), got {leader}")
    others = np.delete(log_e[..., i, :], i, axis=-1).min(axis=-1)
    p = np.minimum(1.0, np.exp(math.log(k) - others))
    return float(p) if np.ndim(p) == 0 else p


def top_two_weights(prob_best: ArrayLike, beta: float = 0.5) -> np.ndarray:
    """Top-two Thompson sampling (Russo 2020) allocation from ``prob_best``.

    TTTS plays the posterior-sampled best arm with probability ``beta`` and
    otherwise re-samples until a *different* arm is best. Its per-request
    probabilities, given ``pi = prob_best``, are
    ``beta * pi_i + (1 - beta) * pi_i * sum_{j != i} pi_j / (1 - pi_j)``.
    With two arms and ``beta = 0.5`` this is exactly 50/50: identification
    speed of an A/B test. Works on shape (..., k); rows sum to 1.

    >>> top_two_weights([0.9, 0.1]).round(12).tolist()
    [0.5, 0.5]
    >>> top_two_weights([0.7, 0.2, 0.1]).round(3).tolist()
    [0.476, 0.344, 0.179]
    """
    b = float(beta)
    if not (math.isfinite(b) and 0.0 <= b <= 1.0):
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    pi = np.asarray(prob_best, dtype=float)
    if pi.ndim == 0 or pi.shape[-1] < 1:
        raise ValueError("prob_best must have at least one arm on the last axis")
    if not np.all(np.isfinite(pi)) or np.any(pi < 0):
        raise ValueError("prob_best must be finite and >= 0")
    total = pi.sum(axis=-1, keepdims=True)
    k = pi.shape[-1]
    pi = np.where(total > 0, pi / np.where(total > 0, total, 1.0), 1.0 / k)
    # pi_j / (1 - pi_j) blows up as pi_j -> 1; cap so the ratio stays finite.
    eps = 1e-12
    ratio = pi / np.maximum(1.0 - pi, eps)
    second = pi * (ratio.sum(axis=-1, keepdims=True) - ratio)
    # When one arm holds all the mass (e.g. a Monte-Carlo prob_best of exactly
    # 1) the re-draw never ends; its limit is taken as a uniform pick among
    # the other arms (exact for k = 2). Normalising keeps rows summing to 1.
    second_total = second.sum(axis=-1, keepdims=True)
    zero = (pi == 0).astype(float)
    zero_total = zero.sum(axis=-1, keepdims=True)
    fallback = np.where(zero_total > 0, zero / np.where(zero_total > 0, zero_total, 1.0), pi)
    second = np.where(
        second_total > 0, second / np.where(second_total > 0, second_total, 1.0), fallback
    )
    w = b * pi + (1.0 - b) * second
    return w / w.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- decision


def evaluate_sequential(
    names: Sequence[str],
    alpha_post: ArrayLike,
    beta_post: ArrayLike,
    n_rewards: ArrayLike,
    reward_sums: ArrayLike,
    rule: PromotionRule,
    elapsed_s: float,
    alpha: float = DEFAULT_ALPHA,
    tau2: float = DEFAULT_TAU2,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> Decision:
    """Promote only when the anytime-valid test *and* the Bayesian gates agree (Beta posteriors).

    The Bayesian part is :func:`gateway.bandit.promotion.evaluate` unchanged
    (``min_samples``, ``min_duration_s``, ``prob_best``, ``expected_loss``);
    the sequential part is :func:`sequential_evidence` on the raw counts. The
    arm is promoted when both pass and name the same arm. Valid when called
    after every reward: ``P(ever promoting a non-best arm) <= alpha``.

    Parameters
    ----------
    names, alpha_post, beta_post, n_rewards, rule, elapsed_s, draws, rng
        As for :func:`~gateway.bandit.promotion.evaluate`.
    reward_sums : array_like, shape (k,)
        Sum of rewards per arm (successes for Bernoulli rewards).
    alpha : float
        Level of the sequential test, in (0, 1).
    tau2 : float
        Mixing variance of the standardized effect, > 0.

    Returns
    -------
    Decision
        Evidence as for ``evaluate`` plus ``evidence["sequential"] = {method,
        alpha, tau2, threshold_log_e, leader, log_e, p_value, rejected,
        pairs: {other: {z, log_e}}}``; values that could not be computed are
        None. Inconclusive (never raising) on NaN, negative or inconsistent
        counts, fewer than 2 arms or too few samples.

    Raises
    ------
    ValueError
        Only for programming errors: mismatched lengths, duplicate names, or
        ``alpha``/``tau2`` out of range.

    Examples
    --------
    >>> from gateway.bandit.beta import posterior
    >>> n, s = [6000, 6000], [600, 740]
    >>> a, b = posterior(1, 1, n, s)
    >>> rule = PromotionRule(prob_best=0.95, max_expected_loss=0.0025, min_samples=500)
    >>> d = evaluate_sequential(["a", "b"], a, b, n, s, rule, elapsed_s=60)
    >>> d.outcome, d.variant, d.evidence["sequential"]["rejected"]
    ('promote', 'b', True)
    """
    post = (alpha_post, beta_post)
    return decide(BETA, names, post, n_rewards, (reward_sums,), rule, elapsed_s, alpha, tau2, draws, rng)


