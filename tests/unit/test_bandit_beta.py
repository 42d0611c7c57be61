"""Unit tests for gateway.bandit.beta (posterior arithmetic and Monte-Carlo statistics).

Statistical tests use fixed seeds, so they are deterministic. Where a tolerance
is derived from a sampling distribution, the comment states the false-failure
rate the tolerance would have under a *random* seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bandit import beta as bb
from gateway.bandit import (
    credible_interval,
    expected_loss,
    mean,
    posterior,
    prob_best,
    prob_best_two,
    sample,
)

# Deterministic property tests: same examples every run, nothing written to disk.
PROPERTY = settings(deadline=None, max_examples=60, derandomize=True, database=None)

MC_DRAWS = 200_000
# Worst-case standard error of a proportion estimated from MC_DRAWS draws.
MC_SE_MAX = 0.5 / math.sqrt(MC_DRAWS)  # ~0.00112
# 5 standard errors: P(|Z| > 5) ~ 5.7e-7 false-failure rate per comparison.
MC_TOL = 5 * MC_SE_MAX


# --------------------------------------------------------------------------- posterior


def test_posterior_exact_integer_updates():
    a, b = posterior(1.0, 1.0, n=[10, 0, 7], s=[3, 0, 7])
    assert a.tolist() == [4.0, 1.0, 8.0]
    assert b.tolist() == [8.0, 1.0, 1.0]


def test_posterior_fractional_rewards():
    # rewards 0.25, 0.5, 1.0 -> s = 1.75, n = 3
    a, b = posterior(2.0, 3.0, n=[3], s=[1.75])
    assert a.tolist() == [3.75]
    assert b.tolist() == [4.25]


def test_posterior_scalar_and_broadcast():
    a, b = posterior(0.5, 0.5, n=4, s=1)
    assert float(a) == 1.5 and float(b) == 3.5
    a, b = posterior(1, 1, n=[5, 5], s=0)
    assert a.tolist() == [1.0, 1.0] and b.tolist() == [6.0, 6.0]


@pytest.mark.parametrize(
    ("prior", "n", "s"),
    [
        ((1, 1), [5], [6]),  # s > n
        ((1, 1), [5], [-1]),  # s < 0
        ((1, 1), [-1], [-1]),  # n < 0 (via s < 0)
        ((1, 1), [float("nan")], [0]),
        ((1, 1), [float("inf")], [1]),
        ((0, 1), [1], [1]),  # prior must be > 0
        ((1, -2), [1], [1]),
        ((float("nan"), 1), [1], [1]),
        ((1, 1), [1, 2], [1, 2, 3]),  # shapes do not broadcast
    ],
)
def test_posterior_invalid_input_raises(prior, n, s):
    with pytest.raises(ValueError):
        posterior(prior[0], prior[1], n, s)


def test_mean_exact():
    assert mean([1, 3, 2], [1, 1, 6]).tolist() == [0.5, 0.75, 0.25]


@pytest.mark.parametrize(("alpha", "beta"), [([0, 1], [1, 1]), ([1], [-1]), ([np.nan], [1])])
def test_invalid_parameters_raise(alpha, beta):
    with pytest.raises(ValueError):
        mean(alpha, beta)
    with pytest.raises(ValueError):
        prob_best(alpha, beta, draws=10)


# --------------------------------------------------------------------------- credible interval


def test_credible_interval_uniform_is_exact():
    lo, hi = credible_interval([1.0], [1.0], level=0.9)
    assert lo[0] == pytest.approx(0.05, abs=1e-12)
    assert hi[0] == pytest.approx(0.95, abs=1e-12)


def test_credible_interval_brackets_median_and_shrinks_with_data():
    small = credible_interval(*posterior(1, 1, [20], [5]))
    large = credible_interval(*posterior(1, 1, [20_000], [5_000]))
    for lo, hi in (small, large):
        assert 0.0 <= lo[0] < 0.25 < hi[0] <= 1.0
    assert (large[1] - large[0])[0] < (small[1] - small[0])[0] / 10


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5, float("nan")])
def test_credible_interval_bad_level(level):
    with pytest.raises(ValueError):
        credible_interval([1], [1], level=level)


# --------------------------------------------------------------------------- sampling / MC


def test_sample_shape_and_seed_reproducibility():
    x = sample([1, 2, 3], [3, 2, 1], draws=50, rng=np.random.default_rng(7))
    y = sample([1, 2, 3], [3, 2, 1], draws=50, rng=np.random.default_rng(7))
    assert x.shape == (50, 3)
    assert np.array_equal(x, y)
    assert np.all((x >= 0) & (x <= 1))


def test_prob_best_sums_to_one_and_single_arm():
    p = prob_best([2, 5, 9, 1], [8, 5, 1, 1])
    assert p.shape == (4,)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(p >= 0)
    assert prob_best([3], [4]).tolist() == [1.0]


def test_prob_best_default_rng_is_byte_identical():
    # The status endpoint is compared byte for byte across calls.
    args = ([120.0, 130.0, 90.0], [880.0, 870.0, 910.0])
    assert prob_best(*args).tobytes() == prob_best(*args).tobytes()
    assert expected_loss(*args).tobytes() == expected_loss(*args).tobytes()


def test_prob_best_explicit_rng_differs_from_default():
    args = ([12.0, 13.0], [88.0, 87.0])
    p_other = prob_best(*args, rng=np.random.default_rng(123))
    assert p_other.tobytes() != prob_best(*args).tobytes()
    assert np.allclose(p_other, prob_best(*args), atol=10 * 0.5 / math.sqrt(bb.DEFAULT_DRAWS))


def test_prob_best_splits_exact_ties():
    # Identical degenerate posteriors: draws are mostly exactly 0.0 or 1.0, so ties
    # are common; splitting them keeps the estimate symmetric (SE ~0.0035 at 20k).
    p = prob_best([1e-3, 1e-3], [1e-3, 1e-3])
    assert p == pytest.approx([0.5, 0.5], abs=0.02)


TWO_ARM_CASES = [
    (1, 1, 1, 1),
    (1, 1, 2, 1),
    (3, 7, 2, 9),
    (10, 90, 20, 80),
    (50, 50, 60, 40),
    (1200, 8800, 1300, 8700),  # large counts, P ~ 0.984
    (1300, 8700, 1200, 8800),  # mirror, P ~ 0.016
    (1200.5, 8800.25, 1300.75, 8700.5),  # non-integer: quadrature path
]


@pytest.mark.parametrize(("a1", "b1", "a2", "b2"), TWO_ARM_CASES)
def test_prob_best_matches_closed_form(a1, b1, a2, b2):
    exact = prob_best_two(a1, b1, a2, b2)
    p = prob_best([a1, a2], [b1, b2], draws=MC_DRAWS, rng=np.random.default_rng(2024))
    assert p[1] == pytest.approx(exact, abs=MC_TOL)
    assert p[0] == pytest.approx(1.0 - exact, abs=MC_TOL)


# --------------------------------------------------------------------------- prob_best_two


def test_prob_best_two_known_values():
    assert prob_best_two(1, 1, 1, 1) == 0.5
    assert prob_best_two(1, 1, 2, 1) == pytest.approx(2 / 3, abs=1e-14)  # int 2x * x dx
    assert prob_best_two(1, 1, 1, 2) == pytest.approx(1 / 3, abs=1e-14)  # int 2(1-x) x dx


@pytest.mark.parametrize(
    ("a", "b", "c", "d"),
    [
        (1, 1, 2, 1),
        (3, 7, 2, 9),
        (10, 90, 20, 80),
        (1200, 8800, 1300, 8700),
        (2.5, 3, 4, 1.5),  # mixed integer / non-integer parameters
        (0.5, 10.5, 1.5, 9.5),  # Jeffreys-style prior: quadrature
    ],
)
def test_prob_best_two_symmetric(a, b, c, d):
    assert prob_best_two(a, b, c, d) + prob_best_two(c, d, a, b) == pytest.approx(1.0, abs=1e-9)


def test_prob_best_two_symmetric_huge_counts():
    # betaln of ~1e6 arguments carries ~eps * lgamma(1e6) ~ 3e-9 absolute error,
    # so the identity only holds to ~1e-8 at this scale (documented accuracy).
    a, b, c, d = 120_000, 880_000, 121_000, 879_000
    assert prob_best_two(a, b, c, d) + prob_best_two(c, d, a, b) == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize(
    ("a1", "b1", "a2", "b2"),
    [
        (3, 7, 2, 9),  # a2 integer: Evan Miller's sum over range(a2)
        (3, 7, 2.5, 9.5),  # b1 integer only: mirrored sum over range(b1)
        (3, 7.5, 2.5, 9.5),  # a1 integer only: complement
        (3.5, 7.5, 2.5, 9),  # b2 integer only: mirrored complement
        (3.5, 7.5, 2.5, 9.5),  # none: quadrature
        (40, 60, 45, 55),
    ],
)
def test_prob_best_two_all_paths_agree_with_quadrature(a1, b1, a2, b2):
    ref = bb._prob_best_two_quad(float(a1), float(b1), float(a2), float(b2))
    assert prob_best_two(a1, b1, a2, b2) == pytest.approx(ref, abs=1e-9)


def test_prob_best_two_large_counts_stable():
    # The raw Beta functions underflow here; log-space must keep it finite and exact.
    p = prob_best_two(120_000, 880_000, 130_000, 870_000)
    assert p == 1.0 or 1.0 - p < 1e-12
    q = prob_best_two(130_000, 870_000, 120_000, 880_000)
    assert 0.0 <= q < 1e-12
    mid = prob_best_two(1200, 8800, 1300, 8700)
    assert 0.98 < mid < 0.99


def test_prob_best_two_continuity_across_paths():
    # Integer (exact sum) and nearby non-integer (other path) must agree closely.
    p_int = prob_best_two(40, 60, 45, 55)
    p_near = prob_best_two(40 + 1e-9, 60 + 1e-9, 45 + 1e-9, 55 + 1e-9)
    assert p_int == pytest.approx(p_near, abs=1e-7)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_prob_best_two_invalid(bad):
    with pytest.raises(ValueError):
        prob_best_two(bad, 1, 1, 1)
    with pytest.raises(ValueError):
        prob_best_two(1, 1, 1, bad)


# --------------------------------------------------------------------------- expected loss


def test_expected_loss_nonnegative():
    loss = expected_loss([2, 5, 9, 1, 30], [8, 5, 1, 1, 70])
    assert loss.shape == (5,)
    assert np.all(loss >= 0)


def test_expected_loss_dominating_arm_is_zero_ish():
    a, b = posterior(1, 1, n=[10_000, 10_000], s=[1_000, 2_000])
    loss = expected_loss(a, b)
    assert loss[1] < 1e-9  # P(arm 0 beats arm 1) is ~1e-80
    assert loss[0] == pytest.approx(0.1, abs=0.005)  # the gap in means


def test_expected_loss_two_uniforms():
    # E[(U2 - U1)^+] = 1/6; sd of (U2 - U1)^+ = sqrt(1/12 - 1/36) ~ 0.236,
    # so SE at 200k draws ~ 0.00053; 5 SE -> false-failure rate ~ 5.7e-7.
    loss = expected_loss([1, 1], [1, 1], draws=MC_DRAWS, rng=np.random.default_rng(11))
    tol = 5 * math.sqrt(1 / 12 - 1 / 36) / math.sqrt(MC_DRAWS)
    assert loss == pytest.approx([1 / 6, 1 / 6], abs=tol)


# --------------------------------------------------------------------------- properties

reward = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
dyadic_reward = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])
prior_param = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)


def _sequential(prior_a: float, prior_b: float, rewards: list[float]) -> tuple[float, float]:
    a, b = prior_a, prior_b
    for r in rewards:
        na, nb = posterior(a, b, 1, r)
        a, b = float(na), float(nb)
    return a, b


@PROPERTY
@given(pa=prior_param, pb=prior_param, data=st.data())
def test_property_updates_commute_exactly_for_dyadic_rewards(pa, pb, data):
    # Dyadic rewards make every partial sum exact, so order cannot matter at all.
    rewards = data.draw(st.lists(dyadic_reward, max_size=40))
    shuffled = data.draw(st.permutations(rewards))
    assert _sequential(pa, pb, rewards) == _sequential(pa, pb, shuffled)


@PROPERTY
@given(pa=prior_param, pb=prior_param, data=st.data())
def test_property_updates_commute_and_match_batch(pa, pb, data):
    rewards = data.draw(st.lists(reward, max_size=40))
    shuffled = data.draw(st.permutations(rewards))
    seq = _sequential(pa, pb, rewards)
    perm = _sequential(pa, pb, shuffled)
    batch_a, batch_b = posterior(pa, pb, len(rewards), math.fsum(rewards))
    # Only float round-off may differ between orders.
    assert seq == pytest.approx(perm, rel=1e-12, abs=1e-12)
    assert seq == pytest.approx((float(batch_a), float(batch_b)), rel=1e-12, abs=1e-12)


@PROPERTY
@given(
    pa=prior_param,
    pb=prior_param,
    n=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=6),
    frac=st.floats(min_value=0.0, max_value=1.0),
)
def test_property_posteriors_stay_valid(pa, pb, n, frac):
    n_arr = np.asarray(n, dtype=float)
    a, b = posterior(pa, pb, n_arr, frac * n_arr)
    assert np.all(a > 0) and np.all(b > 0)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    m = mean(a, b)
    assert np.all((m > 0) & (m < 1))
    lo, hi = credible_interval(a, b)
    assert np.all((0 <= lo) & (lo <= hi) & (hi <= 1))


@settings(deadline=None, max_examples=30, derandomize=True, database=None)
@given(
    params=st.lists(
        st.tuples(st.floats(0.5, 1e4), st.floats(0.5, 1e4)), min_size=1, max_size=6
    )
)
def test_property_mc_outputs_valid(params):
    a = [p[0] for p in params]
    b = [p[1] for p in params]
    p = prob_best(a, b, draws=500)
    loss = expected_loss(a, b, draws=500)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(p >= 0) and np.all(loss >= 0)
