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

Method: one-sided normal-mixture SPRT (mSPRT) on standardized differences
--------------------------------------------------------------------------
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
reject. At ``n = 0`` (no data) ``E_ij = 1``.

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
an arm is promoted only when the mSPRT rejects *and* ``prob_best``, expected
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
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import log_ndtr

from .beta import DEFAULT_DRAWS
from .promotion import INCONCLUSIVE, PROMOTE, Decision, PromotionRule, _num, evaluate

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
_LOG2 = math.log(2.0)


# --------------------------------------------------------------------------- helpers


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not (math.isfinite(a) and 0.0 < a < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return a


def _check_tau2(tau2: float) -> float:
    t = float(tau2)
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(f"tau2 must be finite and > 0, got {tau2}")
    return t


def _counts(n: ArrayLike, s: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast float arrays of shape (..., k), k >= 2, with n >= s >= 0 (s clipped)."""
    n_arr = np.asarray(n, dtype=float)
    s_arr = np.asarray(s, dtype=float)
    n_arr, s_arr = np.broadcast_arrays(n_arr, s_arr)
    if n_arr.ndim == 0 or n_arr.shape[-1] < 2:
        raise ValueError(f"need at least 2 arms along the last axis, got shape {n_arr.shape}")
    if not (np.all(np.isfinite(n_arr)) and np.all(np.isfinite(s_arr))):
        raise ValueError("n and s must be finite")
    if np.any(n_arr < 0):
        raise ValueError("n must be >= 0")
    # Float sums of fractional rewards can drift a hair outside [0, n].
    return n_arr, np.clip(s_arr, 0.0, n_arr)


def threshold(k: int, alpha: float = DEFAULT_ALPHA) -> float:
    """Rejection threshold on ``log E`` for ``k`` arms: ``log(k / alpha)``.

    >>> round(threshold(2, 0.05), 4)
    3.6889
    """
    k = int(k)
    if k < 2:
        raise ValueError(f"need at least 2 arms, got {k}")
    return math.log(k / _check_alpha(alpha))


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
    c = threshold(k, alpha) - _LOG2
    return (2.0 * c + math.log(2.0 * c + 1.0)) / (n / 2.0)


# --------------------------------------------------------------------------- statistics


def pairwise_log_e(
    n: ArrayLike, s: ArrayLike, tau2: float = DEFAULT_TAU2
) -> tuple[np.ndarray, np.ndarray]:
    """Log mixture likelihood ratios ``log E[..., i, j]`` for "arm i beats arm j".

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
        ``j``. Diagonals are ``-inf`` and ``0``. Pairs where an arm has no
        rewards give ``log_e = 0`` (no evidence) and ``z = 0``. Always finite
        off the diagonal.

    Raises
    ------
    ValueError
        On non-finite input, negative counts, fewer than 2 arms or bad ``tau2``.
    """
    t2 = _check_tau2(tau2)
    n_arr, s_arr = _counts(n, s)
    ni, nj = n_arr[..., :, None], n_arr[..., None, :]
    si, sj = s_arr[..., :, None], s_arr[..., None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        both = (ni > 0) & (nj > 0)
        d = np.where(both, si / np.where(ni > 0, ni, 1.0) - sj / np.where(nj > 0, nj, 1.0), 0.0)
        pooled = (si + sj + 0.5) / (ni + nj + 1.0)
        sigma2 = pooled * (1.0 - pooled)
        m = np.where(both, ni * nj / np.where(both, ni + nj, 1.0), 0.0)
        z = d * np.sqrt(m / sigma2)
    r = t2 * m
    log_e = (
        _LOG2
        - 0.5 * np.log1p(r)
        + r * z * z / (2.0 * (1.0 + r))
        + log_ndtr(z * np.sqrt(r / (1.0 + r)))
    )
    k = n_arr.shape[-1]
    eye = np.eye(k, dtype=bool)
    log_e = np.where(eye, -np.inf, log_e)
    z = np.where(eye, 0.0, z)
    return log_e, z


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
    a = _check_alpha(alpha)
    log_e, _ = pairwise_log_e(n, s, tau2)
    k = log_e.shape[-1]
    # The diagonal (an arm against itself) is excluded from each row's minimum.
    per_arm = np.where(np.eye(k, dtype=bool), np.inf, log_e).min(axis=-1)
    best = per_arm.argmax(axis=-1)
    stat = np.take_along_axis(per_arm, best[..., None], axis=-1)[..., 0]
    leader = np.where(stat >= math.log(k / a), best, -1)
    return leader, stat


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
    log_e, _ = pairwise_log_e(n, s, tau2)
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




def _vector(x: ArrayLike) -> np.ndarray | None:
    try:
        return np.atleast_1d(np.asarray(x, dtype=float))
    except (TypeError, ValueError):
        return None


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
    """Promote only when the anytime-valid test *and* the Bayesian gates agree.

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
    a_level = _check_alpha(alpha)
    t2 = _check_tau2(tau2)
    names = [str(x) for x in names]
    k = len(names)
    sums = _vector(reward_sums)
    if sums is not None and sums.shape != (k,):
        raise ValueError(f"reward_sums has shape {sums.shape}, expected ({k},) to match names")
    # Raises only on programming errors (lengths, duplicate names); bad numbers
    # come back as an inconclusive decision with the usual evidence.
    bayes = evaluate(names, alpha_post, beta_post, n_rewards, rule, elapsed_s, draws=draws, rng=rng)
    evidence = dict(bayes.evidence)
    seq: dict[str, Any] = {
        "method": "one-sided normal-mixture SPRT, Bonferroni over arms",
        "alpha": a_level,
        "tau2": t2,
        "threshold_log_e": math.log(k / a_level) if k >= 2 else None,
        "leader": None,
        "log_e": None,
        "p_value": None,
        "rejected": False,
        "pairs": {},
    }
    evidence["sequential"] = seq

    n = _vector(n_rewards)
    seq_problem: str | None = None
    if k < 2:
        seq_problem = f"need at least 2 arms to compare, got {k}"
    elif n is None or sums is None or not (np.all(np.isfinite(n)) and np.all(np.isfinite(sums))):
        seq_problem = "non-finite or non-numeric rewards or reward sums"
    elif np.any(n < 0) or np.any(sums < -1e-9 * np.maximum(n, 1.0)):
        seq_problem = "negative reward counts or sums"
    elif np.any(sums > n * (1.0 + 1e-9) + 1e-9):
        seq_problem = "reward sums exceed reward counts (rewards must lie in [0, 1])"
    else:
        log_e, z = pairwise_log_e(n, sums, t2)
        seq.update(leader_evidence(names, log_e, z, "z", a_level))

    return combine(bayes, evidence, seq_problem, a_level)


def leader_evidence(
    names: Sequence[str], log_e: np.ndarray, stat: np.ndarray, stat_name: str, alpha: float
) -> dict[str, Any]:
    """From the pairwise log e-values (row i: evidence that arm i beats arm j), the leader (the
    arm whose weakest pairwise evidence is strongest), its Bonferroni-combined always-valid
    p-value, whether it rejects at `alpha`, and each pair's statistic (`stat_name`) and log e."""
    k = len(names)
    per_arm = np.where(np.eye(k, dtype=bool), np.inf, log_e).min(axis=-1)
    best = int(np.argmax(per_arm))
    value = float(per_arm[best])
    return {
        "leader": names[best],
        "log_e": _num(value),
        "p_value": _num(min(1.0, math.exp(min(700.0, math.log(k) - value)))),
        "rejected": bool(value >= math.log(k / alpha)),
        "pairs": {
            names[j]: {stat_name: _num(stat[best, j]), "log_e": _num(log_e[best, j])} for j in range(k) if j != best
        },
    }


def combine(bayes: Decision, evidence: dict[str, Any], problem: str | None, alpha: float) -> Decision:
    """Promote only when the Bayesian gates passed and the sequential test (in
    ``evidence["sequential"]``) rejected for the same arm; otherwise say why not."""
    seq = evidence["sequential"]

    def inconclusive(reason: str) -> Decision:
        return Decision(INCONCLUSIVE, None, reason, evidence)

    if not bayes.promoted:
        extra = ""
        if problem is None and not seq["rejected"]:
            extra = f"; sequential test not significant either (p={seq['p_value']:.3g})"
        return inconclusive(bayes.reason + extra)
    if problem is not None:
        return inconclusive(f"sequential test not computable: {problem}")
    if not seq["rejected"]:
        return inconclusive(
            f"sequential test not significant: {seq['leader']!r} has always-valid "
            f"p={seq['p_value']:.4g} > alpha={alpha} "
            f"(log e {seq['log_e']:.3f} < {seq['threshold_log_e']:.3f})"
        )
    if seq["leader"] != bayes.variant:
        return inconclusive(
            f"sequential leader {seq['leader']!r} differs from the Bayesian candidate "
            f"{bayes.variant!r}"
        )
    return Decision(
        PROMOTE,
        bayes.variant,
        f"{bayes.reason}; always-valid p={seq['p_value']:.3g} <= alpha={alpha}",
        evidence,
    )
