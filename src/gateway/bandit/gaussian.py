"""Normal-Inverse-Gamma posteriors and promotion for Gaussian rewards of unknown variance.

For continuous rewards (revenue, negative latency, a score) each arm's rewards
are ``x ~ N(mu, sigma^2)`` with both unknown, under the conjugate
Normal-Inverse-Gamma prior; the posterior ``(mu, kappa, alpha, beta)`` depends
on the data only through the per-arm count ``n``, sum ``s`` and sum of squares
``ss`` the store keeps, and the mean's marginal is a Student-t. The model, the
update and the anytime-valid evidence (a one-sided Welch t-mixture, the
counterpart of :mod:`.sequential`'s mSPRT) are in :mod:`.nig_family`; this
module gives :class:`~.nig_family.NormalInverseGammaFamily` its stable function
names, and the decisions of :mod:`.promotion` and :mod:`.sequential` for it.

Conventions follow :mod:`.beta`: every function is vectorised across arms
(shape ``(k,)``); Monte-Carlo functions default to a fresh
``np.random.default_rng(0)`` so equal posteriors give byte-identical output.

Examples
--------
>>> mu, kappa, alpha, beta = posterior(0.0, 1.0, 1.0, 1.0, n=[4], s=[8.0], ss=[20.0])
>>> mu.tolist(), kappa.tolist(), alpha.tolist(), beta.tolist()
([1.6], [5.0], [3.0], [4.6])
>>> p = prob_best([1.0, 1.2], [1000, 1000], [500, 500], [500, 500])
>>> bool(p[1] > 0.99)
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from . import anytime, promotion
from .family import DEFAULT_DRAWS
from .nig_family import NIG
from .promotion import Decision, PromotionRule
from .selection import apply_floor
from .sequential import DEFAULT_ALPHA, DEFAULT_TAU2

__all__ = [
    "DEFAULT_PRIOR",
    "credible_interval",
    "evaluate",
    "evaluate_sequential",
    "expected_loss",
    "marginal",
    "mean",
    "pairwise_log_e",
    "posterior",
    "prob_best",
    "sample",
    "sequential_evidence",
    "thompson_weights",
]

# Weak default (mu0, kappa0, alpha0, beta0): the prior mean is worth 1% of one reward and
# the variance guess (beta0 / alpha0 = 1) two rewards; alpha0 > 1/2 keeps E|mu| finite
# (expected loss defined) even before any reward.
DEFAULT_PRIOR = (0.0, 0.01, 1.0, 1.0)

Generator = np.random.Generator
Post = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


# --------------------------------------------------------------------------- posterior


def posterior(
    mu0: float, kappa0: float, alpha0: float, beta0: float, n: ArrayLike, s: ArrayLike, ss: ArrayLike
) -> Post:
    """Normal-Inverse-Gamma posterior ``(mu, kappa, alpha, beta)`` from sufficient statistics.

    Parameters
    ----------
    mu0, kappa0, alpha0, beta0 : float
        Prior; ``mu0`` finite, the others finite and > 0.
    n, s, ss : array_like
        Per arm (broadcastable): number of rewards (>= 0, may be fractional),
        their sum and their sum of squares.

    Raises
    ------
    ValueError
        On a bad prior, non-finite statistics or ``n < 0``.

    Examples
    --------
    >>> [x.tolist() for x in posterior(0.0, 1.0, 1.0, 1.0, n=[0, 2], s=[0, 2], ss=[0, 2])]
    [[0.0, 0.6666666666666666], [1.0, 3.0], [1.0, 2.0], [1.0, 1.3333333333333333]]
    """
    return NIG.update((mu0, kappa0, alpha0, beta0), (n, s, ss))


def marginal(mu: ArrayLike, kappa: ArrayLike, alpha: ArrayLike, beta: ArrayLike) -> tuple[np.ndarray, ...]:
    """Student-t marginal of the mean: ``(df, loc, scale) = (2 alpha, mu, sqrt(beta / (alpha kappa)))``."""
    return NIG.marginal((mu, kappa, alpha, beta))


def mean(mu: ArrayLike, kappa: ArrayLike, alpha: ArrayLike, beta: ArrayLike) -> np.ndarray:
    """Posterior mean of the arm's mean reward: ``mu`` (validated)."""
    return NIG.mean((mu, kappa, alpha, beta))


def credible_interval(
    mu: ArrayLike, kappa: ArrayLike, alpha: ArrayLike, beta: ArrayLike, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed credible interval of the mean from its Student-t marginal.

    >>> lo, hi = credible_interval(0.0, 1.0, 50.0, 50.0, level=0.95)
    >>> round(float(hi), 4), float(lo + hi)
    (1.984, 0.0)
    """
    return NIG.interval((mu, kappa, alpha, beta), level)


def sample(
    mu: ArrayLike, kappa: ArrayLike, alpha: ArrayLike, beta: ArrayLike, draws: int, rng: Generator
) -> np.ndarray:
    """Joint posterior draws of the arms' means, shape ``(draws, k)``."""
    return NIG.sample((mu, kappa, alpha, beta), draws, rng)


def _mc_stats(mu, kappa, alpha, beta, draws: int, rng: Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo (prob_best, expected_loss) from one shared set of draws."""
    return NIG.mc_stats((mu, kappa, alpha, beta), draws, rng)


def prob_best(
    mu: ArrayLike, kappa: ArrayLike, alpha: ArrayLike, beta: ArrayLike,
    draws: int = DEFAULT_DRAWS, rng: Generator | None = None,
) -> np.ndarray:
    """Monte-Carlo probability that each arm has the highest mean; sums to 1.

    Standard error per arm at most ``0.5 / sqrt(draws)``; ``rng=None`` is a
    fresh ``default_rng(0)`` (byte-identical output for equal input).

    >>> prob_best([0.0, 0.0], [1, 1], [2, 2], [2, 2]).round(2).tolist()
    [0.5, 0.5]
    """
    return NIG.mc_stats((mu, kappa, alpha, beta), draws, rng)[0]


def expected_loss(
    mu: ArrayLike, kappa: ArrayLike, alpha: ArrayLike, beta: ArrayLike,
    draws: int = DEFAULT_DRAWS, rng: Generator | None = None,
) -> np.ndarray:
    """Monte-Carlo ``E[max_j mu_j - mu_i]`` per arm, in reward units (>= 0)."""
    return NIG.mc_stats((mu, kappa, alpha, beta), draws, rng)[1]


def thompson_weights(
    mu: ArrayLike, kappa: ArrayLike, alpha: ArrayLike, beta: ArrayLike, min_weight: float,
    draws: int = DEFAULT_DRAWS, rng: Generator | None = None,
) -> np.ndarray:
    """Probability-matching weights (:func:`prob_best`) lifted to ``min_weight``.

    >>> thompson_weights([1.0, 2.0], [1000, 1000], [500, 500], [500, 500], 0.05).tolist()
    [0.05, 0.95]
    """
    return apply_floor(prob_best(mu, kappa, alpha, beta, draws=draws, rng=rng), min_weight)


# --------------------------------------------------------------------------- sequential test


def pairwise_log_e(n: ArrayLike, s: ArrayLike, ss: ArrayLike, tau2: float) -> tuple[np.ndarray, np.ndarray]:
    """Log e-values ``log E[..., i, j]`` for "arm i's mean exceeds arm j's" (:mod:`.nig_family`).

    The Gaussian counterpart of :func:`gateway.bandit.sequential.pairwise_log_e`:
    ``n, s, ss`` of shape ``(..., k)`` are the rewards per arm, their sums and
    sums of squares (leading axes: independent experiments), ``tau2 > 0`` the
    mixing variance. Returns ``(log_e, t)`` of shape ``(..., k, k)`` with
    diagonals ``-inf`` and 0. A pair where an arm has fewer than 2 rewards, or
    both arms have zero sample variance, gives ``log_e = 0`` and ``t = 0`` (no
    evidence); always finite off the diagonal.

    >>> log_e, t = pairwise_log_e([50, 50], [50.0, 75.0], [100.0, 162.5], tau2=0.004)
    >>> round(float(t[1, 0]), 3), bool(log_e[1, 0] > 0 > log_e[0, 1])
    (2.475, True)
    """
    return NIG.pairwise_log_e((n, s, ss), tau2)


def sequential_evidence(
    n: ArrayLike, s: ArrayLike, ss: ArrayLike, alpha: float, tau2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Which arm (if any) is declared better than all others: ``(leader, log_e)``.

    ``leader`` is -1 where the test has not rejected; ``log_e`` is
    ``max_i min_{j != i} log E_ij``, rejecting at ``log(k / alpha)``. Same
    contract as :func:`gateway.bandit.sequential.sequential_evidence`.

    >>> n, s, ss = [2000, 2000], [2000.0, 2300.0], [4000.0, 4645.0]  # sd 1, means 1.0, 1.15
    >>> leader, log_e = sequential_evidence(n, s, ss, alpha=0.05, tau2=0.004)
    >>> int(leader), round(float(log_e), 2)
    (1, 8.86)
    """
    return anytime.verdict(NIG, (n, s, ss), alpha, tau2)


# --------------------------------------------------------------------------- decisions


def evaluate(
    names: Sequence[str], post: Sequence[ArrayLike], n_rewards: ArrayLike, rule: PromotionRule, elapsed_s: float,
    draws: int = DEFAULT_DRAWS, rng: Generator | None = None,
) -> Decision:
    """The Bayesian gates of :func:`gateway.bandit.promotion.evaluate` for NIG posteriors.

    ``post`` is ``(mu, kappa, alpha, beta)``, each of shape ``(k,)``. Same gates,
    order, reasons and never-raise contract; ``rule.max_expected_loss`` is in
    reward units. ``evidence["arms"][name]`` holds ``mu, kappa, alpha, beta,
    mean, prob_best, expected_loss, rewards``.

    Raises
    ------
    ValueError
        Only for programming errors: mismatched lengths, duplicate names or a
        ``post`` that is not four arrays.
    """
    return promotion.decide(NIG, names, post, n_rewards, rule, elapsed_s, draws, rng)


def evaluate_sequential(
    names: Sequence[str], post: Sequence[ArrayLike], n_rewards: ArrayLike, reward_sums: ArrayLike,
    reward_sq_sums: ArrayLike, rule: PromotionRule, elapsed_s: float,
    alpha: float = DEFAULT_ALPHA, tau2: float = DEFAULT_TAU2, draws: int = DEFAULT_DRAWS, rng: Generator | None = None,
) -> Decision:
    """Promote only when the anytime-valid t-mixture test *and* the Bayesian gates agree.

    The Gaussian counterpart of :func:`gateway.bandit.sequential.evaluate_sequential`
    (same evidence layout, ``evidence["sequential"]["pairs"][other]`` holds
    ``t`` instead of ``z``). Valid when called after every reward:
    ``P(ever promoting a non-best arm) <= alpha`` (see :mod:`.nig_family`).
    Inconclusive, never raising, on NaN, negative counts, fewer than 2 arms or
    too few samples.

    Examples
    --------
    >>> n, s, ss = [3000, 3000], [3000.0, 3450.0], [6000.0, 6967.5]  # sd 1, means 1.0, 1.15
    >>> post = posterior(*DEFAULT_PRIOR, n, s, ss)
    >>> rule = PromotionRule(prob_best=0.95, max_expected_loss=0.0025, min_samples=500)
    >>> d = evaluate_sequential(["a", "b"], post, n, s, ss, rule, elapsed_s=60)
    >>> d.outcome, d.variant, d.evidence["sequential"]["rejected"]
    ('promote', 'b', True)
    """
    sums = (reward_sums, reward_sq_sums)
    return anytime.decide(NIG, names, post, n_rewards, sums, rule, elapsed_s, alpha, tau2, draws, rng)
