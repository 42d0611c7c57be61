"""Unit tests for gateway.bandit.discounted: discounted statistics from cumulative counters."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bandit import discounted as dmod
from gateway.bandit.discounted import batch_weight, initial, update

PROPERTY = settings(deadline=None, max_examples=80, derandomize=True, database=None)


def test_doctests():
    result = doctest.testmod(dmod)
    assert result.attempted >= 5 and result.failed == 0


def exact_discounted(arms: list[int], rewards: list[float], k: int, gamma: float) -> np.ndarray:
    """Raj & Kalyani's recursion, one reward at a time: everything decays, the played arm adds."""
    out = np.zeros((k, 3))
    for a, r in zip(arms, rewards):
        out *= gamma
        out[a] += (1.0, r, r * r)
    return out


def cumulative(arms: list[int], rewards: list[float], k: int) -> np.ndarray:
    out = np.zeros((k, 3))
    for a, r in zip(arms, rewards):
        out[a] += (1.0, r, r * r)
    return out


def test_batch_weight_values():
    assert batch_weight(0.9, 1) == pytest.approx(1.0)
    assert batch_weight(0.9, 0) == 1.0
    assert batch_weight(1.0, 10_000) == 1.0
    assert batch_weight(0.5, 3) == pytest.approx((1 + 0.5 + 0.25) / 3)
    # gamma a hair below 1: no cancellation, 1 - (d - 1)(1 - gamma)/2 to second order
    gamma = 1 - 1e-12
    assert batch_weight(gamma, 1000) == pytest.approx(1 - 999 * (1 - gamma) / 2, abs=1e-15)


@PROPERTY
@given(gamma=st.floats(1e-3, 1.0), d=st.integers(1, 10_000))
def test_batch_weight_is_the_average_of_the_batch_weights(gamma, d):
    exact = math.fsum(gamma**t for t in range(d)) / d
    assert batch_weight(gamma, d) == pytest.approx(exact, rel=1e-9, abs=1e-300)
    assert 0.0 < batch_weight(gamma, d) <= 1.0


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.5, math.nan])
def test_bad_gamma_raises(gamma):
    with pytest.raises(ValueError):
        batch_weight(gamma, 1)
    with pytest.raises(ValueError):
        update(initial(2, 3), np.zeros((2, 3)), gamma)


def test_shape_and_value_errors():
    with pytest.raises(ValueError):
        update(initial(2, 3), np.zeros((3, 3)), 0.9)
    with pytest.raises(ValueError):
        update(initial(1, 3), [[1.0, math.inf, 1.0]], 0.9)
    with pytest.raises(ValueError):
        initial(0)
    with pytest.raises(ValueError):
        batch_weight(0.9, -1)


seq_st = st.lists(st.tuples(st.integers(0, 2), st.floats(-5, 5)), min_size=1, max_size=60)


@PROPERTY
@given(seq=seq_st, gamma=st.floats(0.5, 1.0))
def test_one_reward_per_refresh_is_the_exact_recursion(seq, gamma):
    arms, rewards = [a for a, _ in seq], [r for _, r in seq]
    state = initial(3, 3)
    for t in range(1, len(seq) + 1):
        state = update(state, cumulative(arms[:t], rewards[:t], 3), gamma)
    np.testing.assert_allclose(state.decayed, exact_discounted(arms, rewards, 3, gamma), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(state.seen, cumulative(arms, rewards, 3))


@PROPERTY
@given(seq=seq_st, gamma=st.floats(0.5, 1.0), cuts=st.lists(st.integers(1, 60), max_size=8))
def test_any_batching_keeps_the_total_weight_exact(seq, gamma, cuts):
    # Whatever the refreshes, the discounted counts add up to sum_t gamma^age_t exactly.
    arms, rewards = [a for a, _ in seq], [r for _, r in seq]
    state = initial(3, 3)
    for t in sorted({c for c in cuts if c < len(seq)} | {len(seq)}):
        state = update(state, cumulative(arms[:t], rewards[:t], 3), gamma)
    total = math.fsum(gamma**age for age in range(len(seq)))
    assert state.decayed[:, 0].sum() == pytest.approx(total, rel=1e-9)
    assert np.all(state.decayed[:, 0] >= 0)


def test_gamma_one_is_the_cumulative_counters():
    c = np.array([[10.0, 3.0, 5.0], [4.0, 1.0, 1.0]])
    state = update(update(initial(2, 3), c / 2, 1.0), c, 1.0)
    np.testing.assert_array_equal(state.decayed, c)


def test_same_counters_twice_change_nothing():
    c = np.array([[10.0, 3.0], [4.0, 1.0]])
    once = update(initial(2), c, 0.95)
    twice = update(once, c, 0.95)
    np.testing.assert_array_equal(once.decayed, twice.decayed)
    np.testing.assert_array_equal(once.seen, twice.seen)


def test_counters_going_down_start_over():
    state = update(initial(2), [[100.0, 50.0], [100.0, 10.0]], 0.99)
    reset = update(state, [[3.0, 1.0], [200.0, 20.0]], 0.99)
    fresh = update(initial(2), [[3.0, 1.0], [200.0, 20.0]], 0.99)
    np.testing.assert_array_equal(reset.decayed, fresh.decayed)


def test_inputs_are_not_mutated():
    state = update(initial(2), [[5.0, 2.0], [5.0, 1.0]], 0.9)
    before = (state.seen.copy(), state.decayed.copy())
    update(state, [[6.0, 3.0], [5.0, 1.0]], 0.9)
    np.testing.assert_array_equal(state.seen, before[0])
    np.testing.assert_array_equal(state.decayed, before[1])


def test_discounted_mean_follows_a_change_while_the_cumulative_one_lags():
    # Arm 0 converts 90% for 10,000 rewards, then 10% for 3,000; arm 1 converts 50% throughout.
    # Refreshed every 10 rewards with gamma = 0.999 (memory ~1,000 rewards).
    state = initial(2)
    c = np.zeros((2, 2))
    for t in range(1300):
        rate0 = 0.9 if t < 1000 else 0.1
        c += [[5, 5 * rate0], [5, 2.5]]
        state = update(state, c, 0.999)
    disc_mean = state.decayed[:, 1] / state.decayed[:, 0]
    cum_mean = c[:, 1] / c[:, 0]
    assert cum_mean[0] > cum_mean[1]  # the cumulative view still ranks arm 0 first
    assert disc_mean[0] < 0.2 < disc_mean[1] == pytest.approx(0.5)
    # The old regime keeps ~gamma^3000 (5%) of the total weight.
    assert disc_mean[0] == pytest.approx(0.1 + 0.8 * 0.999**3000, abs=0.005)
