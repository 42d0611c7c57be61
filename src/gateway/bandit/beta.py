"""Beta posterior arithmetic for bandit arms with rewards in [0, 1].

The functions of :class:`~.beta_family.BetaFamily` under their stable names,
plus the exact two-arm :func:`prob_best_two`. Every function is pure and
vectorised across arms: ``alpha`` and ``beta`` are array-likes of shape ``(k,)``
(scalars are accepted where it makes sense). Monte-Carlo functions default to
``np.random.default_rng(0)`` so that the same posterior always yields
byte-identical output (status endpoints are compared across calls).

Examples
--------
>>> a, b = posterior(1.0, 1.0, n=[10, 10], s=[2, 7.5])
>>> a.tolist(), b.tolist()
([3.0, 8.5], [9.0, 3.5])
>>> mean(a, b).round(3).tolist()
[0.25, 0.708]
>>> round(prob_best_two(1, 1, 2, 1), 6)  # P(Beta(2,1) > Uniform) = 2/3
0.666667
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy import integrate, special

from .beta_family import BETA
from .family import DEFAULT_DRAWS, DEFAULT_SEED

__all__ = [
    "DEFAULT_DRAWS",
    "DEFAULT_SEED",
    "credible_interval",
    "expected_loss",
    "mean",
    "posterior",
    "prob_best",
    "prob_best_two",
    "sample",
]

# Above this many terms the exact sum costs more than quadrature (and memory).
_MAX_EXACT_TERMS = 1_000_000

Generator = np.random.Generator


def posterior(prior_alpha: float, prior_beta: float, n: ArrayLike, s: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Beta posterior after ``n`` rewards in [0, 1] that sum to ``s``.

    Fractional rewards are treated as fractional successes:
    ``alpha = prior_alpha + s`` and ``beta = prior_beta + n - s``.

    Parameters
    ----------
    prior_alpha, prior_beta : float
        Prior Beta parameters, finite and > 0.
    n, s : array_like
        Reward counts and reward sums per arm (broadcastable); ``n >= s >= 0``.

    Returns
    -------
    alpha, beta : ndarray

    Raises
    ------
    ValueError
        On a non-positive/non-finite prior, non-finite counts or ``not n >= s >= 0``.

    Examples
    --------
    >>> a, b = posterior(1, 1, [4, 0], [1.5, 0])
    >>> a.tolist(), b.tolist()
    ([2.5, 1.0], [3.5, 1.0])
    """
    return BETA.update((prior_alpha, prior_beta), (n, s))


def mean(alpha: ArrayLike, beta: ArrayLike) -> np.ndarray:
    """Posterior mean ``alpha / (alpha + beta)``."""
    return BETA.mean((alpha, beta))


def credible_interval(alpha: ArrayLike, beta: ArrayLike, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed credible interval at ``level`` (0 < level < 1).

    Examples
    --------
    >>> lo, hi = credible_interval(1, 1, level=0.9)
    >>> round(float(lo), 12), round(float(hi), 12)
    (0.05, 0.95)
    """
    return BETA.interval((alpha, beta), level)


def sample(alpha: ArrayLike, beta: ArrayLike, draws: int, rng: Generator) -> np.ndarray:
    """Joint posterior draws, shape ``(draws, k)``.

    >>> sample([2, 8], [8, 2], 3, np.random.default_rng(1)).shape
    (3, 2)
    """
    return BETA.sample((alpha, beta), draws, rng)


def _mc_stats(
    alpha: ArrayLike, beta: ArrayLike, draws: int, rng: Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo (prob_best, expected_loss) from one shared set of draws."""
    return BETA.mc_stats((alpha, beta), draws, rng)


def prob_best(
    alpha: ArrayLike, beta: ArrayLike, draws: int = DEFAULT_DRAWS, rng: Generator | None = None
) -> np.ndarray:
    """Monte-Carlo probability that each arm has the highest mean.

    The result sums to 1 (up to round-off). Its standard error per arm is at
    most ``0.5 / sqrt(draws)``. With ``rng=None`` a fresh ``default_rng(0)`` is
    used, so equal inputs give byte-identical outputs. Exact ties between draws
    (only possible when samples round to 0 or 1) are split equally.

    Examples
    --------
    >>> p = prob_best([1, 1], [1, 1])
    >>> float(p.sum()), bool(abs(p[0] - 0.5) < 0.02)
    (1.0, True)
    """
    return BETA.mc_stats((alpha, beta), draws, rng)[0]


def expected_loss(
    alpha: ArrayLike, beta: ArrayLike, draws: int = DEFAULT_DRAWS, rng: Generator | None = None
) -> np.ndarray:
    """Monte-Carlo ``E[max_j theta_j - theta_i]`` per arm (>= 0).

    This is the expected regret of committing to arm ``i`` now. Same default
    ``rng`` rule as :func:`prob_best`.

    >>> expected_loss([1, 1000], [1000, 1]).round(3).tolist()
    [0.998, 0.0]
    """
    return BETA.mc_stats((alpha, beta), draws, rng)[1]


def _is_whole(x: float) -> bool:
    return x >= 1.0 and float(x).is_integer()


def _miller(a1: float, b1: float, a2: float, b2: float) -> float:
    """Evan Miller's exact P(theta2 > theta1); requires integer ``a2``."""
    i = np.arange(int(a2), dtype=float)
    # Log-space terms: the individual Beta functions under/overflow for large counts.
    log_terms = (
        special.betaln(a1 + i, b1 + b2)
        - np.log(b2 + i)
        - special.betaln(1.0 + i, b2)
        - special.betaln(a1, b1)
    )
    return float(np.exp(special.logsumexp(log_terms)))


def _prob_best_two_quad(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(theta2 > theta1) by quadrature over the narrower posterior's quantiles.

    Substituting ``x = F^{-1}(u)`` turns the density integral into a bounded,
    monotone integrand on [0, 1] with no endpoint singularities.
    """
    var1 = a1 * b1 / ((a1 + b1) ** 2 * (a1 + b1 + 1.0))
    var2 = a2 * b2 / ((a2 + b2) ** 2 * (a2 + b2 + 1.0))
    # scipy.special directly: scipy.stats' per-call argument checks dominate otherwise.
    inc, incc, incinv = special.betainc, special.betaincc, special.betaincinv
    if var2 <= var1:
        # P = E[F1(theta2)], theta2 = F2^{-1}(u)
        def f(u: float) -> float:
            return float(inc(a1, b1, incinv(a2, b2, u)))

        kink = float(inc(a2, b2, incinv(a1, b1, 0.5)))
    else:
        # P = E[1 - F2(theta1)], theta1 = F1^{-1}(u)
        def f(u: float) -> float:
            return float(incc(a2, b2, incinv(a1, b1, u)))

        kink = float(inc(a1, b1, incinv(a2, b2, 0.5)))
    # Hint quad at where the other posterior's mass sits (the integrand's steep part).
    points = [kink] if 0.0 < kink < 1.0 else None
    with warnings.catch_warnings():
        warnings.simplefilter("error", integrate.IntegrationWarning)
        try:
            return integrate.quad(
                f, 0.0, 1.0, points=points, limit=500, epsabs=1e-12, epsrel=1e-10
            )[0]
        except integrate.IntegrationWarning:
            pass
    # Extreme parameters (mass piled at 0 or 1) defeat the tight tolerance;
    # a looser best-effort answer beats failing a status read.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return integrate.quad(f, 0.0, 1.0, points=points, limit=500, epsabs=1e-9, epsrel=1e-7)[0]


def prob_best_two(a1: float, b1: float, a2: float, b2: float) -> float:
    """Exact ``P(theta2 > theta1)`` for ``theta1 ~ Beta(a1, b1)``, ``theta2 ~ Beta(a2, b2)``.

    Uses Evan Miller's closed form, a sum over ``range(a2)`` evaluated in log
    space, or its mirror ``P(1 - theta1 > 1 - theta2)``, a sum over
    ``range(b1)``, whichever is integer and shorter. If neither ``a2`` nor
    ``b1`` is an integer, ``1 - P(theta1 > theta2)`` (sums over ``a1`` or
    ``b2``) is tried. With no usable integer parameter, or sums longer than a
    million terms, it falls back to ``scipy.integrate.quad``.

    Accuracy: exact sums are good to ~1e-12 for counts up to ~1e4, degrading
    to ~1e-8 near 1e6 (``betaln`` of huge arguments cancels); quadrature is
    good to ~1e-10 for parameters above ~0.05. Below that, much of the mass
    lies under the smallest double and quadrature (like Monte-Carlo) is only a
    rough answer; such posteriors do not arise from priors >= 0.1.

    Examples
    --------
    >>> prob_best_two(3, 5, 3, 5)
    0.5
    >>> p = prob_best_two(10, 90, 20, 80)
    >>> bool(0.97 < p < 0.99), round(p + prob_best_two(20, 80, 10, 90), 12)
    (True, 1.0)
    """
    a1, b1, a2, b2 = (float(x) for x in (a1, b1, a2, b2))
    if not all(math.isfinite(x) and x > 0 for x in (a1, b1, a2, b2)):
        raise ValueError(f"Beta parameters must be finite and > 0, got {(a1, b1, a2, b2)}")
    if (a1, b1) == (a2, b2):
        return 0.5  # identical posteriors, by symmetry
    # (number of terms, _miller arguments). Direct sums keep relative precision
    # for tiny probabilities, so they are preferred over complements.
    direct = [(a2, (a1, b1, a2, b2)), (b1, (b2, a2, b1, a1))]
    complement = [(a1, (a2, b2, a1, b1)), (b2, (b1, a1, b2, a2))]
    for group, is_complement in ((direct, False), (complement, True)):
        usable = [(t, args) for t, args in group if _is_whole(t) and t <= _MAX_EXACT_TERMS]
        if usable:
            _, args = min(usable, key=lambda c: c[0])
            p = _miller(*args)
            p = 1.0 - p if is_complement else p
            return min(1.0, max(0.0, p))
    return min(1.0, max(0.0, _prob_best_two_quad(a1, b1, a2, b2)))
