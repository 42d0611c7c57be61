"""Unit tests for gateway.bandit.family: the posterior-family interface and its shared helpers.

Everything is seeded. The decisions are checked on the two shipped families
and on a toy third one (Normal rewards of known variance), which shows that
promotion and the sequential test need nothing beyond the interface.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from scipy.special import log_ndtr
from scipy.stats import norm

from gateway.bandit import PromotionRule, anytime, beta, family, gaussian, promotion, sequential
from gateway.bandit.beta_family import BETA, BetaFamily
from gateway.bandit.family import PosteriorFamily, counters, join_words, vector
from gateway.bandit.nig_family import NIG, NormalInverseGammaFamily

RULE = PromotionRule(prob_best=0.95, max_expected_loss=0.01, min_samples=100)


class KnownVarianceNormal(PosteriorFamily):
    """Rewards N(mu, 1): the mean's posterior is N(mu, 1 / prec); a z-mixture for evidence."""

    labels = ("mu", "prec")
    positive = ("prec",)
    sums = ("reward_sums",)
    sum_words = ("reward sums",)
    stat_name = "zk"
    method = "toy"

    def update(self, prior, stats):
        (mu0, prec0), (n, s) = prior, counters(stats)
        prec = prec0 + n
        return (prec0 * mu0 + s) / prec, prec

    def mean(self, post):
        return self.validate(post)[0].copy()

    def _quantiles(self, post, tail):
        mu, prec = post
        q = norm.isf(tail) / np.sqrt(prec)
        return mu - q, mu + q

    def _sampler(self, post):
        mu, prec = post
        return lambda rng, size: mu + rng.standard_normal(size) / np.sqrt(prec)

    def row_mean(self, row):
        return row["mu"]

    def counter_problem(self, n, sums):
        return "negative reward counts" if np.any(n < 0) else None

    def pairwise_log_e(self, stats, tau2):
        t2 = family.check_tau2(tau2)
        n, s = counters(stats, need_arms=True)
        ni, nj = n[..., :, None], n[..., None, :]
        both = (ni > 0) & (nj > 0)
        m = np.where(both, ni * nj / np.where(both, ni + nj, 1.0), 0.0)
        xbar = s / np.where(n > 0, n, 1.0)
        z = (xbar[..., :, None] - xbar[..., None, :]) * np.sqrt(m)
        r = t2 * m
        log_e = family.LOG2 - 0.5 * np.log1p(r) + r * z * z / (2 * (1 + r)) + log_ndtr(z * np.sqrt(r / (1 + r)))
        eye = np.eye(n.shape[-1], dtype=bool)
        return np.where(eye, -np.inf, log_e), np.where(eye, 0.0, z)


TOY = KnownVarianceNormal()


def test_doctests():
    result = doctest.testmod(family)
    assert result.attempted >= 4 and result.failed == 0


def test_the_families_implement_the_interface():
    assert isinstance(BETA, BetaFamily) and isinstance(BETA, PosteriorFamily)
    assert isinstance(NIG, NormalInverseGammaFamily) and isinstance(NIG, PosteriorFamily)
    with pytest.raises(TypeError):
        PosteriorFamily()  # abstract


@pytest.mark.parametrize("k", [1, 2, 3, 40])
def test_module_functions_are_the_family_methods_byte_for_byte(k):
    g = np.random.default_rng(k)
    n = g.integers(0, 500, size=k).astype(float)
    s = np.floor(n * 0.3)
    a, b = beta.posterior(1, 1, n, s)
    assert np.array_equal(BETA.mean((a, b)), beta.mean(a, b))
    for x, y in zip(BETA.mc_stats((a, b)), (beta.prob_best(a, b), beta.expected_loss(a, b))):
        assert x.tobytes() == y.tobytes()
    ss = s * 1.5
    post = gaussian.posterior(*gaussian.DEFAULT_PRIOR, n, s, ss)
    got = NIG.mc_stats(post, 999, np.random.default_rng(1))
    want = gaussian._mc_stats(*post, 999, np.random.default_rng(1))
    assert all(x.tobytes() == y.tobytes() for x, y in zip(got, want))
    draws = NIG.sample(post, 5, np.random.default_rng(2))
    assert draws.tobytes() == gaussian.sample(*post, 5, np.random.default_rng(2)).tobytes()


def test_validation_messages_name_each_familys_parameters():
    with pytest.raises(ValueError, match="^alpha and beta must be > 0$"):
        BETA.validate(([1.0], [0.0]))
    with pytest.raises(ValueError, match="^alpha and beta shapes differ"):
        BETA.validate(([1.0, 2.0], [1.0]))
    with pytest.raises(ValueError, match="^kappa, alpha and beta must be > 0$"):
        NIG.validate(([0.0], [1.0], [0.0], [1.0]))
    with pytest.raises(ValueError, match="^mu, kappa, alpha and beta must be finite$"):
        NIG.validate(([np.nan], [1.0], [1.0], [1.0]))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        TOY.mc_stats(([], []))
    with pytest.raises(ValueError, match="level must be in"):
        TOY.interval(([0.0], [1.0]), level=1.0)


def test_shared_helpers():
    assert join_words(["a"]) == "a"
    assert join_words(["a", "b"], "or") == "a or b"
    assert join_words(["a", "b", "c"]) == "a, b and c"
    assert vector("x") is None and vector(3).tolist() == [3.0]
    with pytest.raises(ValueError, match="^n, s and ss must be finite$"):
        counters(([1], [np.inf], [1]))
    with pytest.raises(ValueError, match="at least 2 arms"):
        counters(([1], [1]), need_arms=True)
    with pytest.raises(ValueError, match="tau2"):
        family.check_tau2(0.0)
    with pytest.raises(ValueError, match="alpha"):
        family.check_level(1.0)
    with pytest.raises(TypeError, match="Generator"):
        family.default_rng(42)


def test_identical_arms_split_prob_best_and_ties_share_the_win():
    pb, loss = TOY.mc_stats(([0.0, 0.0], [1e6, 1e6]), draws=20_000)
    assert abs(pb[0] - 0.5) < 0.02 and float(pb.sum()) == pytest.approx(1.0)
    # Degenerate identical posteriors: every draw ties, so the win is split exactly.
    pb, loss = NIG.mc_stats(([0.0, 0.0], [1e300, 1e300], [1.0, 1.0], [1e-300, 1e-300]), draws=100)
    assert pb.tolist() == [0.5, 0.5] and loss.tolist() == [0.0, 0.0]


def test_a_new_family_gets_promotion_and_the_sequential_test_for_free():
    n = np.array([2000.0, 2000.0])
    s = np.array([0.0, 200.0])  # means 0 and 0.1, sd 1: z ~ 3.2
    post = TOY.update((0.0, 1e-4), (n, s))
    d = promotion.decide(TOY, ["a", "b"], post, n, RULE, elapsed_s=60)
    assert d.promoted and d.variant == "b"
    assert list(d.evidence["arms"]["b"]) == ["mu", "prec", "mean", "prob_best", "expected_loss", "rewards"]
    d = anytime.decide(TOY, ["a", "b"], post, n, (s,), RULE, elapsed_s=60, alpha=0.05, tau2=0.004)
    seq = d.evidence["sequential"]
    assert seq["method"] == "toy" and set(seq["pairs"]["a"]) == {"zk", "log_e"}
    assert d.promoted == seq["rejected"]
    leader, log_e = anytime.verdict(TOY, (n, s), 0.05, 0.004)
    assert (int(leader) == 1) == seq["rejected"] and float(log_e) == pytest.approx(seq["log_e"])


def test_decisions_never_raise_on_bad_numbers_in_any_family():
    n = np.array([500.0, 500.0])
    post = TOY.update((0.0, 1.0), (n, [0.0, 200.0]))  # the Bayesian gates pass
    d = anytime.decide(TOY, ["a", "b"], post, n, ([np.nan, 1.0],), RULE, 60.0, 0.05, 0.004)
    assert d.reason == "sequential test not computable: non-finite or non-numeric rewards or reward sums"
    d = promotion.decide(TOY, ["a", "b"], (post[0], [0.0, 1.0]), n, RULE, 60.0)
    assert d.reason == "invalid posterior: prec must be > 0"
    post = NIG.update(gaussian.DEFAULT_PRIOR, (n, [500.0, 1000.0], [1000.0, 2500.0]))  # sd 1, means 1 and 2
    d = anytime.decide(NIG, ["a", "b"], post, n, (["x", 1.0], [1000.0, 2500.0]), RULE, 60.0, 0.05, 0.004)
    assert "rewards, reward sums or sums of squares" in d.reason


def test_programming_errors_still_raise():
    with pytest.raises(ValueError, match=r"post must be \(mu, prec\)"):
        promotion.decide(TOY, ["a", "b"], ([0, 0],), [1, 1], RULE, 1.0)
    with pytest.raises(ValueError, match="reward_sq_sums has shape"):
        post = ([0, 0], [1, 1], [1, 1], [1, 1])
        anytime.decide(NIG, ["a", "b"], post, [1, 1], ([1, 1], [1]), RULE, 1.0, 0.05, 0.004)


def test_sequential_verdict_is_the_module_function():
    n, s = [[3000, 3000], [100, 90]], [[300, 390], [10, 9]]
    got = anytime.verdict(BETA, (n, s), 0.05, 0.004)
    want = sequential.sequential_evidence(n, s, 0.05, 0.004)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(got, want))
    assert math.isfinite(float(got[1][0]))
