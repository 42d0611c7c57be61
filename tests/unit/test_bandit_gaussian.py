"""Unit tests for gateway.bandit.gaussian (Normal-Inverse-Gamma posteriors, Gaussian promotion).

Everything is seeded: every run is identical and nothing is flaky. Monte-Carlo comparisons
use tolerances of at least 5 standard errors; the simulation tests state the chance that
their assertion would fail by bad luck if the claim held with equality (<= 1e-3).
"""
from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from gateway.bandit import PromotionRule
from gateway.bandit import gaussian as g

PROPERTY = settings(deadline=None, max_examples=60, derandomize=True, database=None)
PRIOR = g.DEFAULT_PRIOR
RULE = PromotionRule(prob_best=0.95, max_expected_loss=0.0025, min_samples=500)


def stats_of(x) -> tuple[float, float, float]:
    x = np.asarray(x, dtype=float)
    return float(x.size), float(x.sum()), float((x * x).sum())


def arms_from(samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, s, ss = zip(*(stats_of(x) for x in samples))
    return np.array(n), np.array(s), np.array(ss)


def decide(n, s, ss, names=("a", "b"), rule=RULE, elapsed_s=60.0, **kw):
    post = g.posterior(*PRIOR, n, s, ss)
    return g.evaluate_sequential(list(names), post, n, s, ss, rule, elapsed_s, **kw)


def test_doctests():
    result = doctest.testmod(g, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


# --------------------------------------------------------------------------- posterior


def test_posterior_matches_the_textbook_update():
    x = np.array([1.5, -0.5, 2.0, 3.0, 0.25])
    mu0, k0, a0, b0 = 1.0, 2.0, 3.0, 4.0
    mu, kappa, alpha, beta = g.posterior(mu0, k0, a0, b0, *stats_of(x))
    n, xbar = x.size, x.mean()
    assert float(kappa) == k0 + n
    assert float(mu) == pytest.approx((k0 * mu0 + n * xbar) / (k0 + n))
    assert float(alpha) == a0 + n / 2
    expected_beta = b0 + 0.5 * ((x - xbar) ** 2).sum() + k0 * n * (xbar - mu0) ** 2 / (2 * (k0 + n))
    assert float(beta) == pytest.approx(expected_beta)


def test_no_data_gives_the_prior():
    mu, kappa, alpha, beta = g.posterior(0.5, 0.2, 3.0, 7.0, [0, 0], [0, 0], [0, 0])
    assert mu.tolist() == [0.5, 0.5] and kappa.tolist() == [0.2, 0.2]
    assert alpha.tolist() == [3.0, 3.0] and beta.tolist() == [7.0, 7.0]


finite = st.floats(-1e4, 1e4, allow_nan=False)
prior_st = st.tuples(finite, st.floats(1e-3, 1e3), st.floats(0.51, 1e3), st.floats(1e-3, 1e3))


@PROPERTY
@given(prior=prior_st, a=st.lists(finite, max_size=30), b=st.lists(finite, max_size=30))
def test_updates_compose_batch_by_batch(prior, a, b):
    # The posterior after a then b equals the posterior after both at once (and after b then a).
    one = g.posterior(*prior, *stats_of(a + b))
    first = g.posterior(*prior, *stats_of(a))
    two = g.posterior(*(float(v) for v in first), *stats_of(b))
    other = g.posterior(*(float(v) for v in g.posterior(*prior, *stats_of(b))), *stats_of(a))
    for x, y, z in zip(one, two, other):
        assert float(x) == pytest.approx(float(y), rel=1e-6, abs=1e-6)
        assert float(x) == pytest.approx(float(z), rel=1e-6, abs=1e-6)


@PROPERTY
@given(prior=prior_st, n=st.floats(0, 1e7), loc=st.floats(-1e6, 1e6), sd=st.floats(0, 1e3))
def test_posterior_is_always_valid(prior, n, loc, sd):
    # Statistics with a large mean and a tiny spread cancel in ss - s^2/n; the posterior must
    # stay proper (beta >= beta0 > 0) and its summaries finite.
    s = n * loc
    ss = n * (loc * loc + sd * sd)
    mu, kappa, alpha, beta = g.posterior(*prior, [n], [s], [ss])
    assert np.all(np.isfinite([mu, kappa, alpha, beta]))
    assert kappa[0] > 0 and alpha[0] > 0 and beta[0] >= prior[3] * (1 - 1e-12)
    lo, hi = g.credible_interval(mu, kappa, alpha, beta)
    assert lo[0] <= mu[0] <= hi[0]


def test_posterior_learns_the_mean_and_the_variance():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=20_000)
    mu, kappa, alpha, beta = g.posterior(*PRIOR, *stats_of(x))
    lo, hi = g.credible_interval(mu, kappa, alpha, beta, 0.999)
    assert lo[()] < 3.0 < hi[()] and hi[()] - lo[()] < 0.2
    assert float(beta / (alpha - 1)) == pytest.approx(4.0, rel=0.05)  # E[sigma^2 | data]


def test_credible_interval_is_the_marginal_of_the_joint_posterior():
    # Draw (sigma^2, mu) from the NIG itself; the mean's quantiles must be the Student-t ones.
    mu, kappa, alpha, beta = 1.0, 3.0, 2.5, 4.0
    rng = np.random.default_rng(7)
    sigma2 = beta / rng.gamma(alpha, size=400_000)
    draws = mu + np.sqrt(sigma2 / kappa) * rng.standard_normal(400_000)
    for level in (0.5, 0.9):
        lo, hi = g.credible_interval(mu, kappa, alpha, beta, level)
        q = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
        assert float(lo) == pytest.approx(q[0], abs=0.01) and float(hi) == pytest.approx(q[1], abs=0.01)
    df, loc, scale = g.marginal(mu, kappa, alpha, beta)
    assert (float(df), float(loc), float(scale)) == pytest.approx((5.0, 1.0, math.sqrt(4.0 / 7.5)))


@pytest.mark.parametrize(
    "bad",
    [{"kappa": 0.0}, {"alpha": -1.0}, {"beta": 0.0}, {"mu": math.nan}, {"beta": math.inf}],
)
def test_bad_posteriors_are_refused(bad):
    p = {"mu": [0.0], "kappa": [1.0], "alpha": [1.0], "beta": [1.0]}
    p.update({k: [v] for k, v in bad.items()})
    with pytest.raises(ValueError):
        g.prob_best(p["mu"], p["kappa"], p["alpha"], p["beta"])
    with pytest.raises(ValueError):
        g.credible_interval(p["mu"], p["kappa"], p["alpha"], p["beta"])


def test_bad_priors_and_counts_are_refused():
    with pytest.raises(ValueError):
        g.posterior(0.0, 0.0, 1.0, 1.0, [1], [1], [1])
    with pytest.raises(ValueError):
        g.posterior(math.inf, 1.0, 1.0, 1.0, [1], [1], [1])
    with pytest.raises(ValueError):
        g.posterior(0.0, 1.0, 1.0, 1.0, [-1], [0], [0])
    with pytest.raises(ValueError):
        g.posterior(0.0, 1.0, 1.0, 1.0, [1], [math.nan], [1])
    with pytest.raises(ValueError):
        g.credible_interval(0.0, 1.0, 1.0, 1.0, level=1.0)
    with pytest.raises(ValueError):
        g.prob_best([0.0], [1.0], [1.0], [1.0], draws=0)
    with pytest.raises(TypeError):
        g.prob_best([0.0], [1.0], [1.0], [1.0], rng=np.random.RandomState(0))


# --------------------------------------------------------------------------- Monte-Carlo


def test_prob_best_and_loss_match_the_normal_closed_form_at_large_df():
    # With alpha = 1e5 the t marginals are normal to ~1e-5: P(2 beats 1) = Phi(d / sd).
    mu = np.array([1.00, 1.03])
    kappa = np.array([1000.0, 800.0])
    alpha = np.full(2, 1e5)
    beta = np.full(2, 1e5)  # sigma^2 ~ 1: marginal sd = 1/sqrt(kappa)
    sd = math.sqrt(1 / 1000 + 1 / 800)
    d = 0.03
    p2 = stats.norm.cdf(d / sd)
    pb = g.prob_best(mu, kappa, alpha, beta, draws=200_000)
    assert pb[1] == pytest.approx(p2, abs=5 * 0.5 / math.sqrt(200_000))
    # E[(mu2 - mu1)^+] and E[(mu1 - mu2)^+] for mu2 - mu1 ~ N(d, sd^2)
    plus = sd * stats.norm.pdf(d / sd) + d * stats.norm.cdf(d / sd)
    el = g.expected_loss(mu, kappa, alpha, beta, draws=200_000)
    assert el[0] == pytest.approx(plus, rel=0.02)
    assert el[1] == pytest.approx(plus - d, rel=0.05)


def test_monte_carlo_is_reproducible_and_seedable():
    args = ([0.0, 0.1, 0.05], [10.0, 10.0, 10.0], [6.0, 6.0, 6.0], [5.0, 5.0, 5.0])
    assert g.prob_best(*args).tobytes() == g.prob_best(*args).tobytes()
    assert g.expected_loss(*args).tobytes() == g.expected_loss(*args).tobytes()
    other = g.prob_best(*args, rng=np.random.default_rng(123))
    assert other.tobytes() != g.prob_best(*args).tobytes()
    assert other == pytest.approx(g.prob_best(*args), abs=0.02)


def test_sample_shape_and_spread():
    draws = g.sample([0.0, 5.0], [4.0, 4.0], [50.0, 50.0], [50.0, 50.0], 100_000, np.random.default_rng(3))
    assert draws.shape == (100_000, 2)
    assert draws.mean(axis=0) == pytest.approx([0.0, 5.0], abs=0.01)
    assert draws.std(axis=0) == pytest.approx([0.5, 0.5], rel=0.02)  # sqrt(beta/(alpha kappa))


arm_st = st.tuples(
    st.floats(-100, 100), st.floats(0.01, 1e4), st.floats(0.51, 1e4), st.floats(0.01, 1e4)
)


@PROPERTY
@given(arms=st.lists(arm_st, min_size=1, max_size=6), floor=st.floats(0, 1))
def test_thompson_weights_sum_to_one_and_respect_the_floor(arms, floor):
    mu, kappa, alpha, beta = (np.array(x) for x in zip(*arms))
    floor = floor / len(arms)
    w = g.thompson_weights(mu, kappa, alpha, beta, floor, draws=2000)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(w >= floor - 1e-12)
    pb = g.prob_best(mu, kappa, alpha, beta, draws=2000)
    assert pb.sum() == pytest.approx(1.0, abs=1e-12) and np.all(pb >= 0)
    assert np.all(g.expected_loss(mu, kappa, alpha, beta, draws=2000) >= 0)


# --------------------------------------------------------------------------- sequential evidence


def mixture_by_quadrature(t: float, nu: float, r: float, tau2: float) -> float:
    """log of the half-normal mixture of noncentral-t likelihood ratios, integrated numerically:
    E = int_0^inf 2 N(delta; 0, tau2) nct(t; nu, delta sqrt(m)) / t(t; nu) d delta, m = r / tau2."""
    m = r / tau2
    f = lambda d: 2 * stats.norm.pdf(d, 0, math.sqrt(tau2)) * stats.nct.pdf(t, nu, d * math.sqrt(m))
    # Beyond 12 prior sds, or a noncentrality 15 above |t|, the integrand is negligible.
    upper = min(12 * math.sqrt(tau2), (abs(t) + 15) / math.sqrt(m))
    num, _ = integrate.quad(f, 0, upper, epsabs=0, epsrel=1e-10, limit=200)
    return math.log(num) - stats.t.logpdf(t, nu)


def test_statistic_is_welch_t_and_the_skew_t_bayes_factor():
    rng = np.random.default_rng(5)
    a, b = rng.normal(1.2, 1.0, 400), rng.normal(1.0, 2.0, 250)
    tau2 = 0.01
    log_e, t = g.pairwise_log_e(*arms_from([a, b]), tau2)
    welch = stats.ttest_ind(a, b, equal_var=False)
    assert t[0, 1] == pytest.approx(welch.statistic, rel=1e-9)
    assert t[1, 0] == pytest.approx(-welch.statistic, rel=1e-9)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    nu = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    pooled = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    r = tau2 * pooled / (va + vb)
    x = float(welch.statistic)
    assert x > 0
    assert log_e[0, 1] == pytest.approx(mixture_by_quadrature(x, nu, r, tau2), rel=1e-6)
    assert log_e[1, 0] == pytest.approx(mixture_by_quadrature(-x, nu, r, tau2), rel=1e-6)
    assert log_e[1, 0] < 0.0  # the arm that looks worse has no evidence for being better


@pytest.mark.parametrize(("tt", "nu"), [(3.0, 8.0), (-1.5, 30.0), (0.0, 5.0), (2.0, 2000.0)])
def test_closed_form_matches_quadrature_at_small_and_large_df(tt, nu):
    # Equal-variance arms of n rewards each: nu = 2n - 2, r = tau2 * n / 2.
    n = (nu + 2) / 2
    tau2 = 0.05
    d = tt * math.sqrt(2 / n)
    s = np.array([n * (1 + d), n])
    ss = s**2 / n + (n - 1)  # sample variance exactly 1
    log_e, t = g.pairwise_log_e([n, n], s, ss, tau2)
    assert t[0, 1] == pytest.approx(tt, abs=1e-9)
    assert log_e[0, 1] == pytest.approx(mixture_by_quadrature(tt, nu, tau2 * n / 2, tau2), rel=1e-6, abs=1e-9)


def test_large_df_limit_is_the_bernoulli_normal_mixture():
    # nu -> inf: log 2 - log(1+r)/2 + r z^2 / (2(1+r)) + log Phi(z sqrt(r/(1+r))), as in sequential.
    n, tt, tau2 = 1e6, 2.5, 1e-5
    d = tt * math.sqrt(2 / n)
    s = np.array([n * (1 + d), n])
    log_e, _ = g.pairwise_log_e([n, n], s, s**2 / n + (n - 1), tau2)
    r = tau2 * n / 2
    z_form = math.log(2) - 0.5 * math.log1p(r) + r * tt * tt / (2 * (1 + r)) + stats.norm.logcdf(tt * math.sqrt(r / (1 + r)))
    assert log_e[0, 1] == pytest.approx(z_form, rel=1e-5)


def test_no_evidence_without_two_rewards_or_without_variance():
    for n, s, ss in (
        ([0, 100], [0, 120], [0, 300]),
        ([1, 100], [5, 120], [25, 300]),
        ([50, 50], [50, 100], [50, 200]),  # constant rewards on both arms: V = 0
    ):
        log_e, t = g.pairwise_log_e(n, s, ss, 0.004)
        assert log_e[0, 1] == 0.0 and log_e[1, 0] == 0.0 and t[0, 1] == 0.0
        assert np.isneginf(np.diag(log_e)).all()
        leader, _ = g.sequential_evidence(n, s, ss, 0.05, 0.004)
        assert int(leader) == -1


counts_st = st.lists(
    st.tuples(st.integers(0, 5000), st.floats(-10, 10), st.floats(0, 10)), min_size=2, max_size=5
)


@PROPERTY
@given(arms=counts_st, tau2=st.floats(1e-4, 1.0))
def test_statistic_finite_symmetric_and_only_positive_t_counts(arms, tau2):
    n = np.array([a[0] for a in arms], dtype=float)
    s = n * np.array([a[1] for a in arms])
    ss = n * (np.array([a[1] for a in arms]) ** 2 + np.array([a[2] for a in arms]) ** 2)
    log_e, t = g.pairwise_log_e(n, s, ss, tau2)
    off = ~np.eye(n.size, dtype=bool)
    assert np.all(np.isfinite(log_e[off])) and np.all(np.isfinite(t))
    assert np.allclose(t, -t.T)
    assert np.all(log_e[off & (t <= 0)] <= 0)
    perm = np.arange(n.size)[::-1]
    log_p, _ = g.pairwise_log_e(n[perm], s[perm], ss[perm], tau2)
    assert np.allclose(log_p, log_e[np.ix_(perm, perm)], equal_nan=False)


def test_vectorised_over_leading_axes():
    n = np.array([[2000, 2000], [2000, 2000], [3, 3]], dtype=float)
    s = np.array([[2000, 2300], [2000, 2000], [3, 3.3]])
    ss = np.array([[4000, 4645], [4000, 4000], [6, 6.9]])
    leader, log_e = g.sequential_evidence(n, s, ss, 0.05, 0.004)
    assert leader.tolist() == [1, -1, -1]
    for i in range(3):
        li, le = g.sequential_evidence(n[i], s[i], ss[i], 0.05, 0.004)
        assert int(li) == leader[i] and float(le) == pytest.approx(log_e[i])


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_bad_tau2_and_alpha_raise(bad):
    with pytest.raises(ValueError):
        g.pairwise_log_e([2, 2], [1, 1], [1, 1], bad)
    with pytest.raises(ValueError):
        g.sequential_evidence([2, 2], [1, 1], [1, 1], alpha=bad if bad != 0.0 else 1.0, tau2=0.004)
    with pytest.raises(ValueError):
        g.pairwise_log_e([2], [1], [1], 0.004)  # one arm


def _aa(seeds, horizon, burn_in, alpha, tau2, thompson, seed, sd):
    """Two arms with equal means (sd as given), every seed at once; the test is checked after
    *every* reward once each arm has `burn_in` rewards. Allocation: alternating, or
    per-request Gaussian Thompson sampling after an alternating burn-in."""
    rng = np.random.default_rng(seed)
    n, s, ss = (np.zeros((seeds, 2)) for _ in range(3))
    hit = np.zeros(seeds, dtype=bool)
    rows = np.arange(seeds)
    sd = np.asarray(sd, dtype=float)
    for t in range(horizon):
        if thompson and t >= 2 * burn_in:
            mu, kappa, a, b = g.posterior(*PRIOR, n, s, ss)
            arm = (mu + np.sqrt(b / (a * kappa)) * rng.standard_t(2 * a)).argmax(axis=1)
        else:
            arm = np.full(seeds, t % 2)
        x = 1.0 + sd[arm] * rng.standard_normal(seeds)
        n[rows, arm] += 1
        s[rows, arm] += x
        ss[rows, arm] += x * x
        if t >= 2 * burn_in:
            hit |= g.sequential_evidence(n, s, ss, alpha, tau2)[0] >= 0
    return hit


@pytest.mark.parametrize(
    ("thompson", "sd"),
    [(False, (1.0, 1.0)), (True, (1.0, 1.0)), (True, (1.0, 3.0))],
    ids=["equal", "thompson", "thompson-unequal-variances"],
)
def test_aa_false_promotion_rate_is_bounded(thompson, sd):
    # 300 seeds x 2000 rewards, checked after every reward from 10 rewards per arm (small
    # samples are where a plug-in variance is most dangerous). alpha = 0.2 and tau2 = 0.05
    # (boundary lowest at ~150 per arm) make the check informative; realised rates are ~4-8%.
    # Thompson makes the allocation unequal and data dependent; unequal variances exercise
    # the Welch plug-in. Claim: P(ever reject) <= alpha. If it held with equality, exceeding
    # binom.ppf(0.999) has probability <= 1e-3.
    seeds, alpha = 300, 0.2
    hit = _aa(seeds, 2000, 10, alpha, 0.05, thompson, seed=11, sd=sd)
    assert hit.sum() <= stats.binom.ppf(0.999, seeds, alpha)


def test_a_real_difference_is_detected_under_thompson():
    # Means 1.0 vs 1.2, sd 1: every one of 100 seeds rejects for the right arm within
    # 4000 rewards (the boundary at tau2 = 0.004 needs t ~ 3.3 near 2000 per arm).
    rng = np.random.default_rng(12)
    seeds = 100
    n, s, ss = (np.zeros((seeds, 2)) for _ in range(3))
    rows = np.arange(seeds)
    first = np.full(seeds, -1)
    for t in range(4000):
        x_arm = np.full(seeds, t % 2)
        x = np.where(x_arm == 1, 1.2, 1.0) + rng.standard_normal(seeds)
        n[rows, x_arm] += 1
        s[rows, x_arm] += x
        ss[rows, x_arm] += x * x
        if t % 10 == 9:
            leader, _ = g.sequential_evidence(n, s, ss, 0.05, 0.004)
            first = np.where((first < 0) & (leader >= 0), leader, first)
    assert np.all(first == 1)


# --------------------------------------------------------------------------- decisions


def _clear_winner(n=3000, means=(1.0, 1.15), sd=1.0):
    rng = np.random.default_rng(21)
    return arms_from([rng.normal(m, sd, n) for m in means])


def test_clear_winner_is_promoted_with_full_evidence():
    n, s, ss = _clear_winner()
    d = decide(n, s, ss, names=("control", "candidate"))
    assert d.promoted and d.variant == "candidate"
    arm = d.evidence["arms"]["candidate"]
    assert set(arm) == {"mu", "kappa", "alpha", "beta", "mean", "prob_best", "expected_loss", "rewards"}
    assert arm["rewards"] == 3000 and arm["prob_best"] > 0.95
    seq = d.evidence["sequential"]
    assert seq["rejected"] and seq["leader"] == "candidate" and seq["p_value"] <= 0.05
    assert set(seq["pairs"]["control"]) == {"t", "log_e"}
    json.dumps(d.evidence, allow_nan=False)


def test_bayesian_pass_alone_is_not_enough():
    # 1.0 vs 1.1 with 800 per arm: prob_best ~ 0.99 but t ~ 2 is far from the boundary.
    n = np.array([800.0, 800.0])
    s = np.array([800.0, 880.0])
    ss = s**2 / n + 799.0
    bayes = g.evaluate(["a", "b"], g.posterior(*PRIOR, n, s, ss), n, RULE, 60.0)
    assert bayes.promoted
    d = decide(n, s, ss)
    assert not d.promoted and "sequential test not significant" in d.reason


def test_sequential_pass_alone_is_not_enough():
    n, s, ss = _clear_winner()
    strict = PromotionRule(prob_best=0.95, max_expected_loss=0.0, min_samples=500)
    d = decide(n, s, ss, rule=strict)
    assert not d.promoted and d.evidence["sequential"]["rejected"]
    assert "expected loss too high" in d.reason


def test_too_few_samples_and_short_duration_are_inconclusive():
    n, s, ss = _clear_winner(n=400, means=(1.0, 2.0))
    d = decide(n, s, ss)
    assert not d.promoted and "too few samples" in d.reason and "a=400" in d.reason
    n, s, ss = _clear_winner()
    d = decide(n, s, ss, rule=PromotionRule(0.95, 0.0025, 500, min_duration_s=3600))
    assert not d.promoted and "min duration" in d.reason


@pytest.mark.parametrize(
    ("n", "s", "ss", "fragment"),
    [
        ([math.nan, 3000], [3000, 3450], [6000, 7000], "non-finite"),
        ([3000, 3000], [3000, math.inf], [6000, 7000], "non-finite"),
        ([-3, 3000], [3000, 3450], [6000, 7000], "negative"),
        ([3000, 3000], [3000, 3450], [-1, 7000], "negative"),
    ],
)
def test_bad_numbers_are_inconclusive_not_errors(n, s, ss, fragment):
    post = (np.array([1.0, 1.15]), np.full(2, 3000.0), np.full(2, 1500.0), np.full(2, 1500.0))
    if fragment == "non-finite":
        post = (np.array([1.0, math.nan]), *post[1:])
    d = g.evaluate_sequential(["a", "b"], post, n, s, ss, RULE, 60.0)
    assert not d.promoted and d.variant is None
    assert fragment in d.reason
    json.dumps(d.evidence, allow_nan=False)


def test_single_arm_is_inconclusive_and_programming_errors_raise():
    d = decide([3000.0], [3000.0], [6000.0], names=("a",))
    assert not d.promoted and "at least 2 arms" in d.reason
    n, s, ss = _clear_winner()
    post = g.posterior(*PRIOR, n, s, ss)
    with pytest.raises(ValueError):
        g.evaluate_sequential(["a", "a"], post, n, s, ss, RULE, 60.0)
    with pytest.raises(ValueError):
        g.evaluate_sequential(["a", "b", "c"], post, n, s, ss, RULE, 60.0)
    with pytest.raises(ValueError):
        g.evaluate_sequential(["a", "b"], post[:3], n, s, ss, RULE, 60.0)
    with pytest.raises(ValueError):
        g.evaluate_sequential(["a", "b"], post, n, s, ss, RULE, 60.0, alpha=1.5)


def test_three_arms_must_beat_every_other_arm():
    # Two good arms close together: neither beats the other, so nothing is promoted.
    n, s, ss = _clear_winner(n=3000, means=(1.0, 1.3, 1.3))
    d = decide(n, s, ss, names=("a", "b", "c"))
    assert not d.promoted
    n, s, ss = _clear_winner(n=3000, means=(1.0, 1.0, 1.3))
    d = decide(n, s, ss, names=("a", "b", "c"))
    assert d.promoted and d.variant == "c"
