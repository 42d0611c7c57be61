"""Linear Thompson sampling for numeric context: a Bayesian linear model of the reward per variant.

Model (per variant, independent): the reward of a request with context vector ``x`` (length
``d``, e.g. ``[1, tenure, monthly_charges]`` from :func:`context_vector`) is
``y = x' beta + e`` with ``e ~ N(0, sigma2)``; the conjugate Normal-Inverse-Gamma prior is
``beta | sigma2 ~ N(0, sigma2 / ridge * I)``, ``sigma2 ~ InvGamma(a0, b0)``
(:class:`LinearPrior`). The noise variance is learned, so one model fits rewards in [0, 1]
and revenue alike; for 0/1 rewards it is the linear probability model.

Sufficient statistics per variant (:class:`LinearStats`): ``n``, ``X'X`` (symmetric,
``d (d + 1) / 2`` numbers), ``X'y`` and ``y'y``: additive counters, so a Redis hash per
variant holds them and the reward script adds one reward's :func:`increments` with
``HINCRBYFLOAT`` atomically, as it adds ``n`` and ``s`` today. Posterior
(:func:`linear_posterior`)::

    Lambda = ridge I + X'X,  mu = Lambda^-1 X'y,  a = a0 + n / 2,  b = b0 + (y'y - mu' Lambda mu) / 2

and a variant's mean reward at ``x`` is Student-t with ``2a`` degrees of freedom, location
``x' mu`` and scale ``sqrt(b / a * x' Lambda^-1 x)`` (:func:`predictive`).

Routing and propensity: for each request the probability that each variant's mean reward
is the highest at that ``x`` (:func:`linear_prob_best`, Monte Carlo over the independent
Student-t marginals, which is exactly the probability that linear Thompson sampling picks
it), then the gateway's rule (gateway.bandit.linear_routing: uniform for a variant with fewer
than ``burn_in`` rewards, the floor ``min_weight``). The request is drawn from those shares, so
the logged propensity is exactly the share it was drawn with. Precision: each P(best) is a
mean of ``draws`` indicators, its standard deviation is at most
``sqrt(p (1 - p) / draws) <= 0.5 / sqrt(draws)`` (0.011 at the default 2,000 draws); that
error is between the shares and ideal Thompson sampling, not between the shares and the
log. Draws are seeded (``rng=None``: ``default_rng(0)``), so equal statistics and contexts
give equal shares.

Examples
--------
>>> prior = LinearPrior()
>>> X = np.array([[1.0, 0.0], [1.0, 1.0]] * 200)
>>> y = np.where(X[:, 1] == 1, 0.9, 0.3)
>>> stats = LinearStats.zeros(k=2, d=2).update(X, np.zeros(400, dtype=int), y)
>>> stats = stats.update(X, np.ones(400, dtype=int), np.full(400, 0.6))
>>> linear_prob_best(prior, stats, np.array([[1.0, 0.0], [1.0, 1.0]])).round(3).tolist()
[[0.0, 1.0], [1.0, 0.0]]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .family import check_draws, default_rng

__all__ = [
    "LINEAR_DRAWS",
    "LinearPosterior",
    "LinearPrior",
    "LinearStats",
    "context_vector",
    "increments",
    "linear_posterior",
    "linear_prob_best",
    "wins_from_draws",
    "predictive",
]

LINEAR_DRAWS = 2_000
# Elements of one chunk of Monte-Carlo comparisons (draws x rows x arms).
_CHUNK = 1 << 21


@dataclass(frozen=True)
class LinearPrior:
    """``beta | sigma2 ~ N(0, sigma2 / ridge I)``, ``sigma2 ~ InvGamma(a, b)``.

    The defaults suit rewards in [0, 1] with context features of order 1 (scale numeric
    features, e.g. to standard units, before they enter): ``ridge`` 1 is one pseudo-reward
    of weight on each coefficient, ``b / a`` = 0.25 the largest variance of a 0/1 reward."""

    ridge: float = 1.0
    a: float = 1.0
    b: float = 0.25

    def __post_init__(self) -> None:
        for name in ("ridge", "a", "b"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"LinearPrior.{name} must be finite and > 0, got {v}")


def _field_names(d: int) -> list[str]:
    return ["n", "yty", *(f"xty:{j}" for j in range(d)), *(f"xtx:{j}:{m}" for j in range(d) for m in range(j, d))]


def increments(x: ArrayLike, y: float) -> dict[str, float]:
    """What one reward ``y`` at context ``x`` adds to its variant's counters (Redis hash fields:
    ``n``, ``yty``, ``xty:j``, and ``xtx:j:m`` for ``j <= m``).

    >>> increments([1.0, 2.0], 0.5)
    {'n': 1.0, 'yty': 0.25, 'xty:0': 0.5, 'xty:1': 1.0, 'xtx:0:0': 1.0, 'xtx:0:1': 2.0, 'xtx:1:1': 4.0}
    """
    xv = np.asarray(x, dtype=float)
    yv = float(y)
    if xv.ndim != 1 or not np.all(np.isfinite(xv)) or not math.isfinite(yv):
        raise ValueError("x must be a finite vector and y a finite number")
    d = xv.size
    values = [1.0, yv * yv, *(yv * xv).tolist(), *(float(xv[j] * xv[m]) for j in range(d) for m in range(j, d))]
    return dict(zip(_field_names(d), values))


@dataclass(frozen=True)
class LinearStats:
    """Per-variant sufficient statistics: ``n`` (k,), ``xtx`` (k, d, d), ``xty`` (k, d), ``yty``
    (k,); any leading axes (e.g. simulation seeds) before them."""

    n: np.ndarray
    xtx: np.ndarray
    xty: np.ndarray
    yty: np.ndarray

    def __post_init__(self) -> None:
        n, xtx, xty, yty = (np.asarray(v, dtype=float) for v in (self.n, self.xtx, self.xty, self.yty))
        d = xty.shape[-1] if xty.ndim else 0
        if d < 1 or xtx.shape != xty.shape + (d,) or n.shape != xty.shape[:-1] or yty.shape != n.shape:
            raise ValueError(
                f"inconsistent shapes: n {n.shape}, xtx {xtx.shape}, xty {xty.shape}, yty {yty.shape}"
            )
        if not all(np.all(np.isfinite(v)) for v in (n, xtx, xty, yty)):
            raise ValueError("statistics must be finite")
        if np.any(n < 0) or np.any(yty < 0):
            raise ValueError("n and y'y must be >= 0")
        for name, v in (("n", n), ("xtx", xtx), ("xty", xty), ("yty", yty)):
            object.__setattr__(self, name, v)

    @property
    def d(self) -> int:
        return int(self.xty.shape[-1])

    @property
    def k(self) -> int:
        return int(self.n.shape[-1])

    @classmethod
    def zeros(cls, k: int, d: int) -> LinearStats:
        return cls(np.zeros(k), np.zeros((k, d, d)), np.zeros((k, d)), np.zeros(k))

    def update(self, X: ArrayLike, arms: ArrayLike, y: ArrayLike) -> LinearStats:
        """The statistics after rewards ``y`` (m,) at contexts ``X`` (m, d) on variants ``arms`` (m,)."""
        if self.n.ndim != 1:
            raise ValueError("update() is for statistics without leading axes")
        Xa = np.asarray(X, dtype=float)
        ya = np.asarray(y, dtype=float)
        ia = np.asarray(arms)
        if Xa.ndim != 2 or Xa.shape[1] != self.d or ya.shape != (Xa.shape[0],) or ia.shape != ya.shape:
            raise ValueError(f"need X (m, {self.d}), arms (m,) and y (m,)")
        if ia.size and (not np.issubdtype(ia.dtype, np.integer) or ia.min() < 0 or ia.max() >= self.k):
            raise ValueError(f"arms must be integers in [0, {self.k})")
        onehot = np.zeros((ia.size, self.k))
        onehot[np.arange(ia.size), ia] = 1.0
        return LinearStats(
            self.n + onehot.sum(axis=0),
            self.xtx + np.einsum("ti,tj,tm->ijm", onehot, Xa, Xa),
            self.xty + np.einsum("ti,tj->ij", onehot, Xa * ya[:, None]),
            self.yty + onehot.T @ (ya * ya),
        )

    def fields(self, i: int) -> dict[str, float]:
        """Variant ``i``'s statistics as the hash fields of :func:`increments`."""
        d = self.d
        values = [
            float(self.n[i]), float(self.yty[i]), *map(float, self.xty[i]),
            *(float(self.xtx[i, j, m]) for j in range(d) for m in range(j, d)),
        ]
        return dict(zip(_field_names(d), values))

    @classmethod
    def from_fields(cls, rows: Sequence[Mapping[str, Any]], d: int) -> LinearStats:
        """From one hash per variant (missing fields count as 0, e.g. a variant never rewarded)."""
        k = len(rows)
        out = cls.zeros(k, d)
        n, xtx, xty, yty = out.n.copy(), out.xtx.copy(), out.xty.copy(), out.yty.copy()
        for i, row in enumerate(rows):
            g = lambda f: float(row.get(f, 0.0))  # noqa: E731
            n[i], yty[i] = g("n"), g("yty")
            for j in range(d):
                xty[i, j] = g(f"xty:{j}")
                for m in range(j, d):
                    xtx[i, j, m] = xtx[i, m, j] = g(f"xtx:{j}:{m}")
        return cls(n, xtx, xty, yty)


@dataclass(frozen=True)
class LinearPosterior:
    """Per variant: ``mean`` (..., k, d), ``cov`` = Lambda^-1 (..., k, d, d), ``a`` and ``b`` (..., k)."""

    mean: np.ndarray
    cov: np.ndarray
    a: np.ndarray
    b: np.ndarray


def linear_posterior(prior: LinearPrior, stats: LinearStats) -> LinearPosterior:
    """The Normal-Inverse-Gamma posterior of every variant (module docstring); leading axes kept."""
    d = stats.d
    lam = stats.xtx + float(prior.ridge) * np.eye(d)
    cov = np.linalg.inv(lam)
    cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
    mean = np.einsum("...ij,...j->...i", cov, stats.xty)
    a = float(prior.a) + 0.5 * stats.n
    fit = np.einsum("...i,...i->...", mean, stats.xty)  # mu' Lambda mu = mu' X'y
    # Round-off can make y'y - mu'X'y a hair negative for a perfect fit; b stays >= b0.
    b = float(prior.b) + 0.5 * np.maximum(stats.yty - fit, 0.0)
    return LinearPosterior(mean, cov, a, b)


def predictive(post: LinearPosterior, X: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(loc, scale, df)`` of each variant's mean reward at each context: Student-t.

    ``X`` has shape (m, d); ``loc`` and ``scale`` (..., m, k), ``df`` (..., k)."""
    Xa = np.asarray(X, dtype=float)
    if Xa.ndim != 2 or Xa.shape[1] != post.mean.shape[-1]:
        raise ValueError(f"X must have shape (m, {post.mean.shape[-1]}), got {Xa.shape}")
    loc = np.einsum("md,...kd->...mk", Xa, post.mean)
    quad = np.einsum("md,...kde,me->...mk", Xa, post.cov, Xa)
    scale = np.sqrt(np.maximum(quad, 0.0) * (post.b / post.a)[..., None, :])
    return loc, scale, 2.0 * post.a


def linear_prob_best(
    prior: LinearPrior,
    stats: LinearStats,
    X: ArrayLike,
    draws: int = LINEAR_DRAWS,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """P(variant's mean reward is the highest at each context), shape (m, k): Monte Carlo.

    One set of ``draws`` standard Student-t variates per variant is shared by all rows (common
    random numbers: rows differ only through location and scale). Each entry's standard
    deviation is at most ``sqrt(p (1 - p) / draws)``; ties (equal draws) share the win.
    ``stats`` must have no leading axes.
    """
    if stats.n.ndim != 1:
        raise ValueError("linear_prob_best() is for statistics without leading axes")
    d_ = check_draws(draws)
    gen = default_rng(rng)
    loc, scale, df = predictive(linear_posterior(prior, stats), X)
    m, k = loc.shape
    if k == 1:
        return np.ones((m, 1))
    return wins_from_draws(loc, scale, gen.standard_t(df, size=(d_, k)))


def wins_from_draws(loc: np.ndarray, scale: np.ndarray, z: np.ndarray) -> np.ndarray:
    """P(best) per row from shared standard Student-t draws ``z`` (draws, k); ties share the win."""
    m, k = loc.shape
    draws = z.shape[0]
    wins = np.zeros((m, k))
    rows = max(1, _CHUNK // (draws * k))
    for lo in range(0, m, rows):
        hi = min(m, lo + rows)
        theta = loc[lo:hi, None, :] + scale[lo:hi, None, :] * z[None, :, :]  # (rows, draws, k)
        top = theta.argmax(axis=-1)
        if np.count_nonzero(theta == np.take_along_axis(theta, top[..., None], -1)) == top.size:
            # No ties (the rule for continuous draws): count each row's winners in one pass.
            flat = (top + k * np.arange(hi - lo)[:, None]).ravel()
            wins[lo:hi] = np.bincount(flat, minlength=(hi - lo) * k).reshape(hi - lo, k)
        else:
            is_top = theta == theta.max(axis=-1, keepdims=True)
            wins[lo:hi] = (is_top / is_top.sum(axis=-1, keepdims=True)).sum(axis=1)
    return wins / draws


def context_vector(
    row: Mapping[str, Any] | Sequence[Any],
    feature_names: Sequence[str],
    context: Sequence[str],
    values: Mapping[str, Sequence[str]] | None = None,
    intercept: bool = True,
) -> np.ndarray:
    """The design vector of a request: ``[1]`` (with ``intercept``), then each context feature in
    ``context`` order: a number as a float, a categorical one (named in ``values`` with its
    declared values) one-hot over those values (an undeclared value: all zeros).

    >>> context_vector({"plan": "pro", "tenure": 12}, ["tenure", "plan"], ["tenure", "plan"],
    ...                {"plan": ["basic", "pro"]}).tolist()
    [1.0, 12.0, 0.0, 1.0]
    """
    names = [str(f) for f in feature_names]
    values = values or {}
    out = [1.0] if intercept else []
    for c in context:
        if c not in names:
            raise ValueError(f"context feature {c!r} is not among the features {names}")
        if isinstance(row, Mapping):
            if c not in row:
                raise ValueError(f"row lacks context feature {c!r}")
            v = row[c]
        else:
            if len(row) != len(names):
                raise ValueError(f"row must have {len(names)} values")
            v = row[names.index(c)]
        if c in values:
            out.extend(1.0 if str(v) == str(level) else 0.0 for level in values[c])
        elif isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v)):
            out.append(float(v))
        else:
            raise ValueError(f"context feature {c!r} needs a finite number or declared values, got {v!r}")
    return np.asarray(out, dtype=float)
