"""One interface for a bandit arm's posterior family, and the helpers every family shares.

Routing, promotion and the anytime-valid test only need a handful of operations on
the arms' posteriors, whatever the reward model. :class:`PosteriorFamily` names them
(as River's ``ThompsonSampling`` takes its distribution), so that the decisions in
:mod:`.promotion` and :mod:`.sequential` are written once:

* :meth:`~PosteriorFamily.update` - posterior parameters from a prior and the
  store's sufficient statistics ``(n, s)`` or ``(n, s, ss)``;
* :meth:`~PosteriorFamily.mean`, :meth:`~PosteriorFamily.interval` - the
  posterior of each arm's mean reward;
* :meth:`~PosteriorFamily.sample`, :meth:`~PosteriorFamily.mc_stats` - joint
  draws, and P(best) with the expected loss from one shared set of them;
* :meth:`~PosteriorFamily.pairwise_log_e` - e-values for "arm i beats arm j".

A posterior ``post`` is a tuple of parameter arrays named by ``labels`` (Beta:
``(alpha, beta)``; Normal-Inverse-Gamma: ``(mu, kappa, alpha, beta)``), each of
shape ``(k,)`` for ``k`` arms. Implementations: :class:`.beta_family.BetaFamily`
and :class:`.nig_family.NormalInverseGammaFamily`. Monte-Carlo methods default
to a fresh ``np.random.default_rng(0)``, so equal posteriors give byte-identical
output (status endpoints are compared across calls).

Examples
--------
>>> from gateway.bandit.beta_family import BETA
>>> post = BETA.update((1.0, 1.0), ([10, 10], [2, 7.5]))
>>> BETA.mean(post).round(3).tolist()
[0.25, 0.708]
>>> pb, loss = BETA.mc_stats(post)
>>> bool(pb[1] > 0.99), bool(loss[1] < 1e-3)
(True, True)
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "DEFAULT_DRAWS",
    "DEFAULT_SEED",
    "LOG2",
    "PosteriorFamily",
    "check_draws",
    "check_level",
    "check_tau2",
    "counters",
    "default_rng",
    "join_words",
    "vector",
]

DEFAULT_DRAWS = 20_000
DEFAULT_SEED = 0
LOG2 = math.log(2.0)

# Rows of Monte-Carlo draws generated at once; bounds memory for many arms.
_CHUNK_ELEMENTS = 1 << 20
_COUNTER_NAMES = ("n", "s", "ss")

Post = tuple[np.ndarray, ...]
Sampler = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]


# --------------------------------------------------------------------------- helpers


def join_words(words: Sequence[str], conj: str = "and") -> str:
    """``"a, b and c"``: the wording of the validation messages.

    >>> join_words(["kappa", "alpha", "beta"]), join_words(["rewards", "reward sums"], "or")
    ('kappa, alpha and beta', 'rewards or reward sums')
    """
    *head, last = words
    return f"{', '.join(head)} {conj} {last}" if head else last


def default_rng(rng: np.random.Generator | None) -> np.random.Generator:
    """``rng``, or a fresh ``default_rng(DEFAULT_SEED)``: equal inputs, equal outputs."""
    if rng is None:
        return np.random.default_rng(DEFAULT_SEED)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator or None, got {type(rng).__name__}")
    return rng


def check_draws(draws: int) -> int:
    d = operator.index(draws)
    if d < 1:
        raise ValueError(f"draws must be >= 1, got {d}")
    return d


def check_level(alpha: float) -> float:
    """The sequential test's level, in (0, 1)."""
    a = float(alpha)
    if not (math.isfinite(a) and 0.0 < a < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return a


def check_tau2(tau2: float) -> float:
    """The mixing variance of the standardized effect, finite and > 0."""
    t = float(tau2)
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(f"tau2 must be finite and > 0, got {tau2}")
    return t


def vector(x: ArrayLike) -> np.ndarray | None:
    """At least 1-D float array, or None when ``x`` is not numeric (decisions never raise on it)."""
    try:
        return np.atleast_1d(np.asarray(x, dtype=float))
    except (TypeError, ValueError):
        return None


def counters(stats: Sequence[ArrayLike], need_arms: bool = False) -> list[np.ndarray]:
    """Broadcast finite float arrays of ``(n, s[, ss])``; ``need_arms``: >= 2 arms on the last axis."""
    arrs = list(np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in stats)))
    if need_arms and (arrs[0].ndim == 0 or arrs[0].shape[-1] < 2):
        raise ValueError(f"need at least 2 arms along the last axis, got shape {arrs[0].shape}")
    if not all(np.all(np.isfinite(x)) for x in arrs):
        raise ValueError(f"{join_words(_COUNTER_NAMES[: len(arrs)])} must be finite")
    return arrs


# --------------------------------------------------------------------------- the interface


class PosteriorFamily(ABC):
    """A conjugate posterior family for the arms' mean rewards (see the module docstring).

    Subclasses set the class attributes and implement the abstract methods; the
    Monte-Carlo loop, validation of arms, draws and levels are shared.

    Attributes
    ----------
    labels : tuple of str
        Names of the posterior parameters, in order (also the evidence keys).
    positive : tuple of str
        The parameters that must be > 0.
    sums : tuple of str
        Names of the per-arm reward sums the sequential test takes beside the
        counts (``reward_sums``, ...), and ``sum_words`` their wording in reasons.
    stat_name, method : str
        Name of the pairwise statistic and description of the test, for the evidence.
    """

    labels: tuple[str, ...]
    positive: tuple[str, ...]
    sums: tuple[str, ...]
    sum_words: tuple[str, ...]
    stat_name: str
    method: str

    # ------------------------------------------------------------ family-specific

    @abstractmethod
    def update(self, prior: Sequence[float], stats: Sequence[ArrayLike]) -> Post:
        """Posterior parameters from the prior's and the per-arm sufficient statistics ``(n, s[, ss])``."""

    @abstractmethod
    def mean(self, post: Sequence[ArrayLike]) -> np.ndarray:
        """Posterior mean of each arm's mean reward."""

    @abstractmethod
    def _quantiles(self, post: Post, tail: float) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper ``tail`` quantiles of each arm's mean, ``post`` validated."""

    @abstractmethod
    def _sampler(self, post: Post) -> Sampler:
        """``draw(rng, (rows, k))`` of the arms' means, from 1-D validated ``post``."""

    @abstractmethod
    def pairwise_log_e(self, stats: Sequence[ArrayLike], tau2: float) -> tuple[np.ndarray, np.ndarray]:
        """``(log_e, stat)`` of shape ``(..., k, k)``: log e-values against ``mu_i <= mu_j``.

        Diagonals are ``-inf`` and 0; always finite off the diagonal.
        """

    @abstractmethod
    def counter_problem(self, n: np.ndarray, sums: Sequence[np.ndarray]) -> str | None:
        """Why finite counters cannot feed :meth:`pairwise_log_e` (e.g. negative counts), or None."""

    @abstractmethod
    def row_mean(self, row: dict[str, float | None]) -> float | None:
        """One arm's mean for the evidence, from its parameters as plain floats (None: unknown)."""

    # ------------------------------------------------------------ shared

    def _shapes_differ(self, shapes: list[tuple[int, ...]]) -> str:
        return f"{', '.join(self.labels)} shapes differ: {shapes}"

    def validate(self, post: Sequence[ArrayLike]) -> Post:
        """Float arrays of one shape, finite, with the ``positive`` parameters > 0."""
        arrs = tuple(np.asarray(x, dtype=float) for x in post)
        if len({a.shape for a in arrs}) != 1:
            raise ValueError(self._shapes_differ([a.shape for a in arrs]))
        if not all(np.all(np.isfinite(a)) for a in arrs):
            raise ValueError(f"{join_words(self.labels)} must be finite")
        if any(np.any(a <= 0) for lb, a in zip(self.labels, arrs) if lb in self.positive):
            raise ValueError(f"{join_words(self.positive)} must be > 0")
        return arrs

    def arms(self, post: Sequence[ArrayLike]) -> Post:
        """Like :meth:`validate`, but 1-D with at least one arm."""
        arrs = tuple(np.atleast_1d(x) for x in self.validate(post))
        if arrs[0].ndim != 1 or arrs[0].size == 0:
            raise ValueError(f"expected a non-empty 1-D array of arms, got shape {arrs[0].shape}")
        return arrs

    def interval(self, post: Sequence[ArrayLike], level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Equal-tailed credible interval of each arm's mean at ``level`` (0 < level < 1)."""
        p = self.validate(post)
        level = float(level)
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        return self._quantiles(p, (1.0 - level) / 2.0)

    def sample(self, post: Sequence[ArrayLike], draws: int, rng: np.random.Generator) -> np.ndarray:
        """Joint posterior draws of the arms' means, shape ``(draws, k)``."""
        p = self.arms(post)
        d = check_draws(draws)
        if not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a numpy Generator")
        return self._sampler(p)(rng, (d, p[0].size))

    def mc_stats(
        self, post: Sequence[ArrayLike], draws: int = DEFAULT_DRAWS, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Monte-Carlo ``(prob_best, expected_loss)`` per arm from one shared set of draws.

        ``prob_best`` sums to 1, with a standard error per arm of at most
        ``0.5 / sqrt(draws)``; ``expected_loss`` is ``E[max_j theta_j - theta_i]``
        (>= 0), the regret of committing to arm ``i`` now. Exact ties between
        draws (samples rounding to a bound, degenerate posteriors) share the win.
        """
        p = self.arms(post)
        d = check_draws(draws)
        gen = default_rng(rng)
        draw = self._sampler(p)
        k = p[0].size
        wins = np.zeros(k, dtype=float)
        loss_sum = np.zeros(k, dtype=float)
        rows = max(1, _CHUNK_ELEMENTS // k)
        done = 0
        while done < d:
            m = min(rows, d - done)
            theta = draw(gen, (m, k))
            top = theta.max(axis=1, keepdims=True)
            # Splitting ties, rather than argmax's lowest index, keeps equal arms equal.
            is_top = theta == top
            wins += (is_top / is_top.sum(axis=1, keepdims=True)).sum(axis=0)
            loss_sum += (top - theta).sum(axis=0)
            done += m
        return wins / d, loss_sum / d
