"""CUPED's statistics from six per-arm counters (n, sum y, sum y^2, sum x, sum x^2, sum xy): the
covariate-adjusted means with the pooled within-arm slope, and the mixture-SPRT e-values on their
differences. The reasoning (validity, the variance paid for the slope) is gateway.bandit.cuped's."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import log_ndtr

from .family import LOG2, check_tau2, counters
from .sequential import DEFAULT_TAU2

_STAT_NAMES = ("n", "sy", "syy", "sx", "sxx", "sxy")


# --------------------------------------------------------------------------- moments


def _within(stats: Sequence[ArrayLike]) -> tuple[np.ndarray, ...]:
    """Checked counters and the per-arm means and centred sums: ``(n, sy, sx, ybar, xbar, Syy, Sxx, Sxy)``."""
    n, sy, syy, sx, sxx, sxy = counters(stats)
    if np.any(n < 0):
        raise ValueError("n must be >= 0")
    has = n > 0
    safe = np.where(has, n, 1.0)
    ybar = np.where(has, sy / safe, 0.0)
    xbar = np.where(has, sx / safe, 0.0)
    # Float counters cancel for large means: a centred sum of squares below the round-off of
    # its raw sum is zero, and a covariance may not exceed Cauchy-Schwarz.
    s_yy = np.where(has, syy - sy * ybar, 0.0)
    s_yy = np.where(s_yy > 1e-10 * np.abs(syy), s_yy, 0.0)
    s_xx = np.where(has, sxx - sx * xbar, 0.0)
    s_xx = np.where(s_xx > 1e-10 * np.abs(sxx), s_xx, 0.0)
    s_xy = np.where(has, sxy - sx * ybar, 0.0)
    bound = np.sqrt(s_xx * s_yy)
    s_xy = np.clip(s_xy, -bound, bound)
    return n, sy, sx, ybar, xbar, s_yy, s_xx, s_xy


def _theta(s_xx: np.ndarray, s_xy: np.ndarray, s_yy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled within-arm ``(theta, rho, S_xx)`` over the last axis; 0 where ``x`` does not vary."""
    pxx, pxy, pyy = s_xx.sum(axis=-1), s_xy.sum(axis=-1), s_yy.sum(axis=-1)
    # A covariate constant within every arm (or too few rewards) carries no information.
    varies = pxx > 0
    theta = np.where(varies, pxy / np.where(varies, pxx, 1.0), 0.0)
    den = np.sqrt(pxx * pyy)
    rho = np.where(varies & (den > 0), pxy / np.where(den > 0, den, 1.0), 0.0)
    return theta, np.clip(rho, -1.0, 1.0), pxx


def adjusted(
    n: ArrayLike, sy: ArrayLike, syy: ArrayLike, sx: ArrayLike, sxx: ArrayLike, sxy: ArrayLike,
    theta: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Regression-adjusted (CUPED) arm means from the six per-arm counters.

    Parameters
    ----------
    n, sy, syy, sx, sxx, sxy : array_like, shape (..., k)
        Per arm: rewards, and the sums of ``y``, ``y^2``, ``x``, ``x^2`` and
        ``x y`` over them; leading axes are independent experiments.
    theta : float or array_like of shape (...), optional
        A coefficient fixed in advance (e.g. from the burn-in); by default the
        pooled within-arm slope (module docstring).

    Returns
    -------
    n : ndarray, shape (..., k)
    mean_adj : ndarray, shape (..., k)
        ``ybar_i - theta (xbar_i - xbar)``, ``xbar`` the mean of ``x`` over all
        arms (0 where an arm has no rewards).
    var_adj : ndarray, shape (..., k)
        Per-reward variance of the adjusted rewards ``y - theta x`` within each
        arm (``ddof=1``; NaN below 2 rewards): ``var(y) (1 - rho^2)`` at the
        arm's own slope.
    theta, rho : ndarray, shape (...)
        The coefficient used and the pooled within-arm correlation of ``x``
        and ``y`` (0 where ``x`` does not vary within the arms).
    """
    n_arr, _, sx_arr, ybar, xbar, s_yy, s_xx, s_xy = _within((n, sy, syy, sx, sxx, sxy))
    th, rho, _ = _theta(s_xx, s_xy, s_yy)
    if theta is not None:
        th = np.broadcast_to(np.asarray(theta, dtype=float), th.shape)
    tot = n_arr.sum(axis=-1)
    grand = np.where(tot > 0, sx_arr.sum(axis=-1) / np.where(tot > 0, tot, 1.0), 0.0)
    t = th[..., None]
    mean_adj = np.where(n_arr > 0, ybar - t * (xbar - grand[..., None]), 0.0)
    rss = np.maximum(s_yy - 2.0 * t * s_xy + t * t * s_xx, 0.0)
    two = n_arr >= 2
    var_adj = np.where(two, rss / np.where(two, n_arr - 1.0, 1.0), np.nan)
    return n_arr, mean_adj, var_adj, np.asarray(th, dtype=float), np.asarray(rho, dtype=float)


# --------------------------------------------------------------------------- evidence


def pairwise_log_e_adjusted(
    n: ArrayLike, sy: ArrayLike, syy: ArrayLike, sx: ArrayLike, sxx: ArrayLike, sxy: ArrayLike,
    tau2: float = DEFAULT_TAU2, theta: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Log e-values ``log E[..., i, j]`` against ``mu_i <= mu_j`` on the adjusted difference.

    Same form as :meth:`.beta_family.BetaFamily.pairwise_log_e` (so
    :func:`.anytime.leader_evidence` and :func:`.anytime.verdict` take them):
    ``(log_e, z)`` of shape ``(..., k, k)``, diagonals ``-inf`` and 0, pairs
    where an arm has no rewards ``log_e = 0`` and ``z = 0``. Rewards must lie
    in [0, 1] (the null variance is the pooled ``p (1 - p)`` bound); ``x`` is
    any real covariate. ``theta=None`` estimates the pooled within-arm slope
    and pays for it (module docstring); a fixed ``theta`` (a float, or one per
    leading index) is used as is.

    Raises
    ------
    ValueError
        On non-finite input, negative counts, fewer than 2 arms or bad ``tau2``.
    """
    t2 = check_tau2(tau2)
    stats = (n, sy, syy, sx, sxx, sxy)
    counters(stats, need_arms=True)
    n_arr, sy_arr, _, ybar, xbar, s_yy, s_xx, s_xy = _within(stats)
    # Float sums of fractional rewards can drift a hair outside [0, n].
    sy_arr = np.clip(sy_arr, 0.0, n_arr)
    est, _, pxx = _theta(s_xx, s_xy, s_yy)
    estimated = theta is None
    th = est if estimated else np.broadcast_to(np.asarray(theta, dtype=float), est.shape)
    if not np.all(np.isfinite(th)):
        raise ValueError(f"theta must be finite, got {theta}")
    th = th[..., None, None]
    ni, nj = n_arr[..., :, None], n_arr[..., None, :]
    with np.errstate(all="ignore"):
        both = (ni > 0) & (nj > 0)
        total = np.where(both, ni + nj, 1.0)
        # The unadjusted statistic, term for term as in beta_family ...
        d_y = np.where(
            both, sy_arr[..., :, None] / np.where(ni > 0, ni, 1.0) - sy_arr[..., None, :] / np.where(nj > 0, nj, 1.0),
            0.0,
        )
        pooled = (sy_arr[..., :, None] + sy_arr[..., None, :] + 0.5) / (ni + nj + 1.0)
        sigma2_y = pooled * (1.0 - pooled)
        m = np.where(both, ni * nj / total, 0.0)
        # ... and what the covariate changes.
        d_x = np.where(both, xbar[..., :, None] - xbar[..., None, :], 0.0)
        c = (s_xy[..., :, None] + s_xy[..., None, :]) / total
        v = (s_xx[..., :, None] + s_xx[..., None, :]) / total
        d = d_y - th * d_x
        sigma2 = sigma2_y - 2.0 * th * c + th * th * v
        if estimated:
            # One degree of freedom for theta, and the variance its error adds to the contrast
            # (nothing is estimated where x does not vary within the arms: theta = 0 there).
            fit = (pxx > 0)[..., None, None]
            sigma2 = sigma2 * np.where(fit & (total > 1.0), total / (total - 1.0), 1.0)
            infl = np.where(fit, d_x * d_x / np.where(fit, pxx[..., None, None], 1.0), 0.0)
            m = m / (1.0 + m * infl)
        sigma2 = np.maximum(sigma2, 1e-12 * sigma2_y)
        z = np.where(both, d * np.sqrt(m / sigma2), 0.0)
        # tau2 mixes the effect in units of the raw reward's sd, as in the unadjusted test.
        r = t2 * m * (sigma2_y / sigma2)
        log_e = LOG2 - 0.5 * np.log1p(r) + r * z * z / (2.0 * (1.0 + r)) + log_ndtr(z * np.sqrt(r / (1.0 + r)))
    eye = np.eye(n_arr.shape[-1], dtype=bool)
    return np.where(eye | ~np.isfinite(log_e), -np.inf, log_e), np.where(eye, 0.0, z)
