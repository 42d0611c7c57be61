"""Variance reduction (CUPED / regression adjustment) for the anytime-valid promotion test.

A covariate ``x`` known when the request is routed (a feature named in the
policy, or the champion's predicted score, logged with the request) explains
part of the reward's noise. Subtracting ``theta (x - E[x])`` from every reward
keeps each arm's mean and, with the best ``theta``, shrinks the per-reward
variance from ``var(y)`` to ``var(y) (1 - rho^2)`` (``rho`` = corr(x, y)). The
promotion test then needs about ``1 - rho^2`` as many rewards: 64% at
``rho = 0.6`` (Deng, Xu, Kohavi, Walker 2013).

Sufficient statistics
---------------------
Everything here is a function of six per-arm counters that a Redis Lua script
can update atomically with each reward, beside today's ``n, sum y, sum y^2``:
``n, sy = sum y, syy = sum y^2, sx = sum x, sxx = sum x^2, sxy = sum x y``.

The coefficient: pooled within-arm slope
----------------------------------------
``theta = sum_i S_xy,i / sum_i S_xx,i`` with ``S_xy,i = sxy_i - sx_i sy_i / n_i``
(and ``S_xx,i`` alike): the least-squares slope of the ANCOVA model ``y = a_i +
theta x + e`` with one intercept per arm. Each arm's data is centred on its
own means, so adding a constant to one arm's rewards (a treatment effect)
does not move ``theta``: it estimates the common slope and nothing of the
arms' differences. The adjusted difference ``(ybar_i - ybar_j) - theta
(xbar_i - xbar_j)`` is unbiased for ``mu_i - mu_j`` whatever ``theta`` is,
because ``x`` is pre-treatment: ``E[xbar_i - xbar_j] = 0`` under randomised
allocation (and in the Gaussian linear model the within-arm slope is
independent of the arm means, so no bias enters through ``theta``'s error
either). ``theta`` only decides how much variance is removed; a pooled slope
that is wrong for some arm (a treatment-covariate interaction) costs
efficiency, not validity. A *total* slope (ignoring the arms) would let the
treatment effect leak into ``theta`` through the chance imbalance in ``x``.

Thompson allocation is not a fixed randomisation: an arm's share depends on
past rewards, with unequal probabilities. But routing never looks at ``x``,
and ``x_t`` is drawn independently of the past and of the routing of request
``t``; so each covariate is an unbiased draw of ``E[x]`` whichever arm it
goes to, ``sum_t 1{A_t = i} (x_t - E[x])`` is a martingale with mean zero at
every (stopping) time, and ``xbar_i`` is unbiased for ``E[x]`` up to an
``O(1 / n_i)`` term (later shares depend on earlier rewards, hence on earlier
``x``) and consistent for every arm that keeps receiving traffic (the
gateway's ``min_weight`` floor sees to that). The adjustment term ``theta
(xbar_i - xbar_j)`` therefore centres on zero under the bandit too. More to
the point for validity: with ``theta`` known, the adjusted rewards ``y_t -
theta x_t = mu_{A_t} + e_t`` have noise independent of the routing decision,
so the mixture likelihood ratio below is a test martingale under any routing
that depends only on the past, exactly as for the raw rewards; what remains
is the estimation of ``theta`` (next sections).

The test: the mSPRT of :mod:`.beta_family` on the adjusted difference
-----------------------------------------------------------------------
For the pair ``(i, j)``, with ``N = n_i + n_j`` and ``m = n_i n_j / N``:

* ``d = (ybar_i - ybar_j) - theta (xbar_i - xbar_j)``;
* ``sigma2_y = p (1 - p)``, ``p = (sy_i + sy_j + 1/2) / (N + 1)``: the null
  (pooled) variance bound of rewards in [0, 1] that the unadjusted test uses;
* ``c = (S_xy,i + S_xy,j) / N``, ``v = (S_xx,i + S_xx,j) / N``: the pair's
  within-arm covariance and covariate variance;
* ``sigma2 = (sigma2_y - 2 theta c + theta^2 v) * N / (N - 1)``: the residual
  variance of ``y - theta x`` (``sigma2_y (1 - rho^2)`` at the pair's own
  slope), with one degree of freedom paid for the estimated ``theta``;
* ``m_eff = 1 / (1 / m + (xbar_i - xbar_j)^2 / S_xx)``, ``S_xx = sum_i
  S_xx,i``: the ANCOVA variance of the adjusted difference,
  ``sigma2 (1/n_i + 1/n_j + (xbar_i - xbar_j)^2 / S_xx)``, i.e. the variance
  that ``theta``'s estimation error adds;
* ``z = d sqrt(m_eff / sigma2)``, ``r = tau2 m_eff sigma2_y / sigma2`` and the
  same one-sided normal-mixture e-value ``log E_ij = log 2 - log(1 + r)/2 + r
  z^2 / (2 (1 + r)) + log Phi(z sqrt(r / (1 + r)))``.

``tau2`` keeps the meaning it has in the unadjusted test and in a policy's
``promotion.tau2``: the mixing variance of the effect in units of the *raw*
reward's standard deviation (``(mu_i - mu_j) / sigma_y ~ |N(0, tau2)|``). The
covariate removes noise, it does not change what lift is plausible; in units
of the residual standard deviation that prior is ``|N(0, tau2 sigma2_y /
sigma2)|``, hence ``r``. (Mixing the residual-standardized effect over
``tau2`` instead would tune the mixture for an effect ``1 / sqrt(1 - rho^2)``
times smaller than intended: in ``tests/unit/test_cuped.py``'s 10% vs 12%
simulation at ``rho = 0.6`` it needed ~8% more rewards, a median ratio to the
unadjusted test of 0.69 instead of 0.63.)
The ratio ``sigma2_y / sigma2`` is a plug-in, as ``sigma2_y`` already is in
the unadjusted test.

With ``theta = 0`` fixed this is :meth:`.beta_family.BetaFamily.pairwise_log_e`
exactly (``d``, ``sigma2``, ``m_eff`` and ``r`` reduce to its ``d``, ``p (1 -
p)``, ``m`` and ``tau2 m``).

Validity, and the choice made for the estimated ``theta``
--------------------------------------------------------
With a ``theta`` fixed in advance, the test is the unadjusted mSPRT on the
rewards ``y - theta x`` with a plug-in variance, valid in the same
(asymptotic, Waudby-Smith et al. 2021) sense. Re-estimating ``theta`` at every look from the
same rewards makes the plug-in statistic slightly anti-conservative in small
samples: the fitted slope over-explains the noise (``E[theta_hat^2] > theta^2``,
so the residual variance is biased low by about ``sigma2 / N``), and the
adjusted difference carries ``theta``'s error times the chance imbalance
``xbar_i - xbar_j``. The choice here is to **inflate the variance by exactly
these two terms**, the small-sample correction of the Gaussian ANCOVA model
(the degree of freedom ``N / (N - 1)`` and the ``(xbar_i - xbar_j)^2 / S_xx``
term of the contrast's variance), rather than cross-fitting over time (the
gateway keeps cumulative counters, so a time split would need snapshots and
would throw away half of the data for ``theta``) or freezing ``theta`` after
the burn-in (which the caller can still do: ``theta=`` fixes it, and the
corrections are then dropped because nothing is estimated). Both terms are
``O(1/N)``: they matter only in the first hundreds of rewards, where
``min_samples`` already blocks promotion (in simulation from 20 rewards per
arm the bare plug-in's A/A rate was within noise of the corrected one).
``tests/unit/test_cuped.py`` checks the A/A error at ``alpha`` with the
test's boundary placed early (from 20 rewards per arm, checked every 10
rewards, 50/50 and Thompson allocation), and ``bench/cuped.py`` under the
gateway's allocation over 50,000 rewards.

The promotion decision (:func:`evaluate_sequential_cuped`) is
:func:`.anytime.decide` with :class:`CupedFamily`: the pairwise e-values
above, Bonferroni over the arms, and the Bayesian gates (``prob_best``,
expected loss, ``min_samples``, ``min_duration_s``) on a normal posterior of
each arm's *adjusted* mean (the Beta(1, 1) prior's two pseudo-rewards placed
at ``x = xbar``; with ``theta = 0`` and 0/1 rewards its mean and standard
deviation are the Beta posterior's). Routing is untouched: it keeps the Beta
posteriors of the raw rewards, so the covariate cannot bias the allocation.

References
----------
* A. Deng, Y. Xu, R. Kohavi, T. Walker (2013). Improving the sensitivity of
  online controlled experiments by utilizing pre-experiment data. WSDM - CUPED.
* W. Lin (2013). Agnostic notes on regression adjustments to experimental
  data: reexamining Freedman's critique. Ann. Appl. Stat. 7(1).
* M. Lindon, D. J. Ham, M. Tingley, I. Bojinov (2022). Anytime-valid linear
  models and regression adjusted causal inference in randomized experiments.
  arXiv:2210.08589 - the ANCOVA contrast inside an anytime-valid test.
* I. Waudby-Smith, D. Arbour, R. Sinha, E. H. Kennedy, A. Ramdas (2021).
  Time-uniform central limit theory and asymptotic confidence sequences.

Examples
--------
>>> n, sy, syy = [4000, 4000], [400, 480], [400, 480]  # 10% vs 12%, 0/1 rewards
>>> sx, sxx, sxy = [400, 400], [130, 130], [148, 165]  # a score x with corr 0.6
>>> _, mean, var, theta, rho = adjusted(n, sy, syy, sx, sxx, sxy)
>>> round(float(theta), 3), round(float(rho), 2), mean.round(4).tolist()
(1.25, 0.6, [0.1, 0.12])
>>> log_e, z = pairwise_log_e_adjusted(n, sy, syy, sx, sxx, sxy, tau2=0.004)
>>> round(float(z[1, 0]), 2), bool(log_e[1, 0] >= threshold(2, 0.05))  # unadjusted: z = 2.86, not yet
(3.57, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtri

from .anytime import decide
from .cuped_stats import adjusted, pairwise_log_e_adjusted
from .family import DEFAULT_DRAWS, PosteriorFamily, Post, Sampler
from .promotion import Decision, PromotionRule, _num
from .sequential import DEFAULT_ALPHA, DEFAULT_TAU2, threshold

__all__ = [
    "CUPED",
    "CupedFamily",
    "adjusted",
    "evaluate_sequential_cuped",
    "pairwise_log_e_adjusted",
    "threshold",
]

# Beta(1, 1): one pseudo-success and one pseudo-failure, as the unadjusted posteriors.
DEFAULT_PRIOR = (1.0, 1.0)


# --------------------------------------------------------------------------- the family


class CupedFamily(PosteriorFamily):
    """Normal posteriors ``(mean, sd)`` of each arm's *adjusted* mean reward; the evidence is the
    adjusted mSPRT above. Statistics are the six counters ``(n, sy, syy, sx, sxx, sxy)``.

    ``theta=None`` estimates the pooled within-arm slope from the counters at every look;
    a float fixes it (e.g. estimated on the burn-in).
    """

    labels = ("mean", "sd")
    positive = ("sd",)
    sums = ("reward_sums", "reward_sq_sums", "covariate_sums", "covariate_sq_sums", "cross_sums")
    sum_words = ("reward sums", "sums of squares", "covariate sums", "covariate sums of squares", "cross sums")
    stat_name = "z"
    method = (
        "one-sided normal-mixture SPRT on regression-adjusted (CUPED) means, pooled within-arm theta "
        "with the ANCOVA variance, Bonferroni over arms"
    )

    def __init__(self, theta: float | None = None) -> None:
        if theta is not None and not math.isfinite(float(theta)):
            raise ValueError(f"theta must be finite, got {theta}")
        self.theta = None if theta is None else float(theta)

    def update(self, prior: Sequence[float], stats: Sequence[ArrayLike]) -> Post:
        """``(mean, sd)`` of each arm's adjusted mean, shape ``(..., k)``.

        ``prior = (a, b)`` adds ``a`` pseudo-rewards 1 and ``b`` pseudo-rewards 0 at
        ``x = xbar`` (so they do not move the adjustment): ``mean = (n ybar_adj + a) / W``
        and ``sd^2 = (residual sum of squares about it) / (W (W + 1))``, ``W = n + a + b``;
        with ``theta = 0`` and 0/1 rewards, the ``Beta(a + s, b + n - s)`` mean and sd.
        """
        pa, pb = (float(x) for x in prior)
        if not (math.isfinite(pa) and math.isfinite(pb) and pa > 0 and pb > 0):
            raise ValueError(f"prior must be finite and > 0, got ({pa}, {pb})")
        n_arr, mean_adj, var_adj, _, _ = adjusted(*stats, theta=self.theta)
        rss = np.where(n_arr >= 2, var_adj * (n_arr - 1.0), 0.0)
        w = n_arr + pa + pb
        mean = (n_arr * mean_adj + pa) / w
        ss = rss + n_arr * (mean_adj - mean) ** 2 + pa * (1.0 - mean) ** 2 + pb * mean**2
        return mean, np.sqrt(ss / (w * (w + 1.0)))

    def mean(self, post: Sequence[ArrayLike]) -> np.ndarray:
        return self.validate(post)[0].copy()

    def _quantiles(self, post: Post, tail: float) -> tuple[np.ndarray, np.ndarray]:
        mu, sd = post
        q = -float(ndtri(tail))
        return mu - q * sd, mu + q * sd

    def _sampler(self, post: Post) -> Sampler:
        mu, sd = post
        return lambda rng, size: mu + sd * rng.standard_normal(size)

    def row_mean(self, row: dict[str, float | None]) -> float | None:
        return row["mean"]

    def counter_problem(self, n: np.ndarray, sums: Sequence[np.ndarray]) -> str | None:
        sy, syy, _, sxx, _ = sums
        if np.any(n < 0) or np.any(sy < -1e-9 * np.maximum(n, 1.0)) or np.any(syy < 0) or np.any(sxx < 0):
            return "negative reward counts, reward sums or sums of squares"
        if np.any(sy > n * (1.0 + 1e-9) + 1e-9):
            return "reward sums exceed reward counts (rewards must lie in [0, 1])"
        return None

    def pairwise_log_e(self, stats: Sequence[ArrayLike], tau2: float) -> tuple[np.ndarray, np.ndarray]:
        """``(log_e, z)`` from the six counters: :func:`pairwise_log_e_adjusted`."""
        return pairwise_log_e_adjusted(*stats, tau2=tau2, theta=self.theta)


CUPED = CupedFamily()


# --------------------------------------------------------------------------- decision


def evaluate_sequential_cuped(
    names: Sequence[str],
    n: ArrayLike,
    sy: ArrayLike,
    syy: ArrayLike,
    sx: ArrayLike,
    sxx: ArrayLike,
    sxy: ArrayLike,
    rule: PromotionRule,
    elapsed_s: float,
    alpha: float = DEFAULT_ALPHA,
    tau2: float = DEFAULT_TAU2,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
    theta: float | None = None,
    prior: Sequence[float] = DEFAULT_PRIOR,
) -> Decision:
    """:func:`.sequential.evaluate_sequential` with the covariate-adjusted test and gates.

    Promote only when the adjusted anytime-valid test (Bonferroni over the
    arms, level ``alpha``) *and* the Bayesian gates on the adjusted means name
    the same arm; :func:`.anytime.decide` with :class:`CupedFamily`. Valid when
    called after every reward, in the sense of the module docstring.

    Parameters
    ----------
    names, rule, elapsed_s, alpha, tau2, draws, rng
        As for :func:`.sequential.evaluate_sequential`.
    n, sy, syy, sx, sxx, sxy : array_like, shape (k,)
        The six per-arm counters (rewards in [0, 1], ``x`` any real covariate).
    theta : float, optional
        Fix the coefficient (default: the pooled within-arm slope, re-estimated).
    prior : (float, float)
        Pseudo-successes and pseudo-failures of the gates' posteriors.

    Returns
    -------
    Decision
        Evidence as for ``evaluate_sequential`` (``arms`` now hold the adjusted
        ``mean`` and its ``sd``), plus ``evidence["cuped"] = {theta,
        theta_estimated, rho, variance_ratio, raw_means}`` (``variance_ratio =
        1 - rho^2``; None where not computable). Inconclusive, never raising, on
        bad numbers.

    Raises
    ------
    ValueError
        Only for programming errors: mismatched lengths, duplicate names,
        ``alpha``/``tau2`` out of range or a non-finite ``theta``.

    Examples
    --------
    >>> rule = PromotionRule(prob_best=0.95, max_expected_loss=0.0025, min_samples=500)
    >>> stats = ([4000, 4000], [400, 480], [400, 480], [400, 400], [130, 130], [148, 165])
    >>> d = evaluate_sequential_cuped(["a", "b"], *stats, rule, elapsed_s=60)
    >>> d.outcome, d.variant, round(d.evidence["cuped"]["variance_ratio"], 2)
    ('promote', 'b', 0.64)
    """
    names = [str(x) for x in names]
    family = CUPED if theta is None else CupedFamily(theta)
    family.update(prior, ([0.0, 0.0],) * 6)  # a bad prior is a programming error: raise it here
    stats = (n, sy, syy, sx, sxx, sxy)
    k = len(names)
    info: dict[str, object] = {"theta": None, "theta_estimated": theta is None, "rho": None,
                               "variance_ratio": None, "raw_means": None}
    try:
        with np.errstate(all="ignore"):
            post = family.update(prior, stats)
            _, _, _, th, rho = adjusted(*stats, theta=family.theta)
            n_arr = np.asarray(n, dtype=float)
            raw = np.where(n_arr > 0, np.asarray(sy, dtype=float) / np.where(n_arr > 0, n_arr, 1.0), np.nan)
        info.update(theta=_num(th), rho=_num(rho), variance_ratio=_num(1.0 - float(rho) ** 2),
                    raw_means=[_num(x) for x in np.atleast_1d(raw)])
    except (TypeError, ValueError):
        # Non-finite or non-numeric counters: decide() reports them as inconclusive.
        nan = np.full(k, np.nan)
        post = (nan, nan)
    decision = decide(family, names, post, n, stats[1:], rule, elapsed_s, alpha, tau2, draws, rng)
    decision.evidence["cuped"] = info
    return decision
