"""Unit tests for gateway.bandit.selection (routing weights and picks).

Seeded and deterministic; statistical tolerances state the false-failure rate
they would have under a random seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from gateway.bandit import (
    apply_floor,
    choose,
    mix_holdout,
    posterior,
    thompson_weights,
    uniform_weights,
    unit_uniform,
)
from gateway.bandit.selection import FLOOR_FINAL_FRACTION, floor_schedule

PROPERTY = settings(deadline=None, max_examples=60, derandomize=True, database=None)
FLOAT_TOL = 1e-12

# --------------------------------------------------------------------------- apply_floor


def test_apply_floor_lifts_low_arms_and_rescales_the_rest():
    out = apply_floor([0.90, 0.06, 0.03, 0.01], 0.05)
    # arms 2 and 3 pinned at 0.05; 0.90 mass left, split 0.90:0.06 -> 0.84375 / 0.05625
    assert out.tolist() == pytest.approx([0.84375, 0.05625, 0.05, 0.05], abs=FLOAT_TOL)
    assert out[2] == 0.05 and out[3] == 0.05  # exactly the floor


def test_apply_floor_iterates_until_stable():
    # First pass pins arm 2 only; rescaling the rest (0.85:0.10 of 0.9) then
    # pushes arm 1 to 0.095 < 0.1, so a second pass pins it too.
    out = apply_floor([0.85, 0.10, 0.05], 0.1)
    assert out.tolist() == pytest.approx([0.8, 0.1, 0.1], abs=FLOAT_TOL)


def test_apply_floor_normalises_and_keeps_feasible_weights():
    assert apply_floor([2, 6], 0.1).tolist() == pytest.approx([0.25, 0.75], abs=FLOAT_TOL)
    assert apply_floor([0.3, 0.7], 0.0).tolist() == pytest.approx([0.3, 0.7], abs=FLOAT_TOL)


@pytest.mark.parametrize("weights", [[0, 0, 0], [np.nan, 0.5, 0.5], [np.inf, 1, 1], [np.nan] * 3])
def test_apply_floor_falls_back_to_uniform(weights):
    assert apply_floor(weights, 0.1).tolist() == pytest.approx([1 / 3] * 3, abs=FLOAT_TOL)


@pytest.mark.parametrize(("k", "m"), [(3, 1 / 3), (10, 0.1), (4, 0.25)])
def test_apply_floor_boundary_floor_gives_uniform(k, m):
    rng = np.random.default_rng(k)
    out = apply_floor(rng.random(k), m)
    assert out.tolist() == pytest.approx([1 / k] * k, abs=FLOAT_TOL)


@pytest.mark.parametrize(
    ("weights", "m"),
    [
        ([0.5, 0.5, 0.0], 0.34),  # 3 * 0.34 > 1
        ([1.0], 1.5),
        ([0.5, 0.5], -0.1),
        ([0.5, 0.5], np.nan),
        ([0.5, -0.1], 0.1),  # negative weight
        ([], 0.0),
        ([[0.5, 0.5]], 0.0),  # not 1-D
    ],
)
def test_apply_floor_rejects_impossible_or_invalid(weights, m):
    with pytest.raises(ValueError):
        apply_floor(weights, m)


@st.composite
def weights_and_floor(draw):
    w = draw(
        st.lists(
            st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e6)),
            min_size=1,
            max_size=12,
        )
    )
    m = draw(st.floats(min_value=0.0, max_value=1.0)) / len(w)
    return np.asarray(w), m


@PROPERTY
@given(weights_and_floor())
def test_property_floor_sums_to_one_and_respects_floor(case):
    w, m = case
    out = apply_floor(w, m)
    assert out.shape == w.shape
    assert out.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.all(out >= m - FLOAT_TOL)


@PROPERTY
@given(weights_and_floor())
def test_property_floor_preserves_order_and_proportions(case):
    w, m = case
    out = apply_floor(w, m)
    if w.sum() <= 0:
        return
    # Ranking is preserved (weakly).
    order = np.argsort(w, kind="stable")
    assert np.all(np.diff(out[order]) >= -FLOAT_TOL)
    # Arms above the floor keep their original proportions.
    free = out > m + 1e-9
    if free.sum() >= 2:
        ratios = out[free] / w[free]
        assert np.allclose(ratios, ratios[0], rtol=1e-9)


@PROPERTY
@given(weights_and_floor())
def test_property_floor_is_idempotent(case):
    w, m = case
    once = apply_floor(w, m)
    assert np.allclose(apply_floor(once, m), once, atol=1e-12)


# --------------------------------------------------------------------------- floor_schedule


def test_floor_schedule_is_full_until_every_arm_has_min_samples():
    # However much evidence the others have, one arm short of min_samples keeps the full floor:
    # the promotion rule cannot decide yet, so no arm may starve.
    assert floor_schedule(0.01, [499, 10**6], 500) == 0.01
    assert floor_schedule(0.01, [10**6, 10**6, 0], 500) == 0.01
    assert floor_schedule(0.05, [99, 99], 100) == 0.05
    # At the first moment the rule can decide (every arm exactly min_samples) it is still full.
    assert floor_schedule(0.01, [500, 500], 500) == 0.01
    assert floor_schedule(0.01, [500, 500, 500, 500], 500) == 0.01


def test_floor_schedule_decays_with_the_square_root_of_the_evidence():
    # min_weight * sqrt(k * min_samples / total): 4x the evidence halves the floor.
    assert floor_schedule(0.01, [1000, 3000], 500) == pytest.approx(0.005, abs=FLOAT_TOL)
    assert floor_schedule(0.01, [500, 1500], 500) == pytest.approx(0.01 / math.sqrt(2), abs=FLOAT_TOL)
    assert floor_schedule(0.02, [800, 800, 800], 200) == pytest.approx(0.01, abs=FLOAT_TOL)
    # The total counts, not how it is split between the arms.
    assert floor_schedule(0.01, [500, 7500], 500) == floor_schedule(0.01, [4000, 4000], 500)


def test_floor_schedule_bounds():
    # The default bound is min_weight * FLOOR_FINAL_FRACTION (0.001 for 0.01), reached at
    # 100 * k * min_samples rewards, and held there for good: never 0.
    assert FLOOR_FINAL_FRACTION == 0.1
    assert floor_schedule(0.01, [50_000, 50_000], 500) == pytest.approx(0.001, abs=FLOAT_TOL)
    assert floor_schedule(0.01, [10**9, 10**9], 500) == pytest.approx(0.001, abs=FLOAT_TOL)
    # An explicit bound; one above min_weight is capped at min_weight (a constant floor).
    assert floor_schedule(0.01, [10**9, 10**9], 500, final=0.002) == pytest.approx(0.002)
    assert floor_schedule(0.01, [10**9, 10**9], 500, final=0.0) == pytest.approx(0.01 * math.sqrt(1e3 / 2e9))
    assert floor_schedule(0.01, [10**9, 10**9], 500, final=0.01) == 0.01
    assert floor_schedule(0.01, [10**9, 10**9], 500, final=0.3) == 0.01
    # No floor stays no floor.
    assert floor_schedule(0.0, [10**6, 10], 5) == 0.0
    assert floor_schedule(0.0, [1, 1], 5) == 0.0


def test_floor_schedule_is_vectorised_over_leading_axes():
    n = np.array([[[499, 10**6], [500, 500]], [[1000, 3000], [10**8, 10**8]]])
    out = floor_schedule(0.01, n, 500)
    assert out.shape == (2, 2)
    expected = [[floor_schedule(0.01, row, 500) for row in block] for block in n]
    assert out.tolist() == expected
    assert isinstance(floor_schedule(0.01, [600, 600], 500), float)


@pytest.mark.parametrize(
    "args",
    [
        (-0.01, [10, 10], 5),
        (float("nan"), [10, 10], 5),
        (0.01, [10, -1], 5),
        (0.01, [10, float("nan")], 5),
        (0.01, [], 5),
        (0.01, 7, 5),
        (0.01, [10, 10], -1),
        (0.01, [10, 10], float("inf")),
        (0.01, [10, 10], 5, -0.001),
        (0.01, [10, 10], 5, float("nan")),
    ],
)
def test_floor_schedule_rejects_invalid(args):
    with pytest.raises(ValueError):
        floor_schedule(*args)


@st.composite
def schedule_case(draw):
    k = draw(st.integers(1, 5))
    n = draw(st.lists(st.integers(0, 10**7), min_size=k, max_size=k))
    arm = draw(st.integers(0, k - 1))
    more = draw(st.integers(1, 10**7))
    m = draw(st.floats(0.0, 0.49))
    ms = draw(st.integers(0, 5000))
    final = draw(st.one_of(st.none(), st.floats(0.0, 0.49)))
    return n, arm, more, m, ms, final


@PROPERTY
@given(schedule_case())
def test_property_floor_schedule_is_bounded_and_never_rises_with_evidence(case):
    n, arm, more, m, ms, final = case
    lo = min(m * FLOOR_FINAL_FRACTION if final is None else final, m)
    before = floor_schedule(m, n, ms, final)
    grown = list(n)
    grown[arm] += more
    after = floor_schedule(m, grown, ms, final)
    assert lo - FLOAT_TOL <= after <= before + FLOAT_TOL
    assert before <= m + FLOAT_TOL
    if min(n) < ms:
        assert before == m
    # A feasible floor stays feasible: apply_floor accepts it wherever it accepts min_weight.
    if m * len(n) <= 1:
        assert apply_floor(np.ones(len(n)), after).sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------- thompson / uniform


def test_uniform_weights():
    assert uniform_weights(4).tolist() == [0.25] * 4
    with pytest.raises(ValueError):
        uniform_weights(0)


def test_thompson_weights_floor_and_determinism():
    a, b = posterior(1, 1, n=[5000, 5000, 5000], s=[500, 700, 600])
    w = thompson_weights(a, b, min_weight=0.05)
    assert w.sum() == pytest.approx(1.0, abs=FLOAT_TOL)
    assert w.tolist() == pytest.approx([0.05, 0.90, 0.05], abs=FLOAT_TOL)
    assert w.tobytes() == thompson_weights(a, b, min_weight=0.05).tobytes()


def test_thompson_weights_match_prob_best_when_floor_inactive():
    # Beta(1,1) vs Beta(2,1): exact P = (1/3, 2/3). SE at 20k draws <= 0.0035;
    # 5 SE = 0.018 -> false-failure rate ~5.7e-7 under a random seed.
    w = thompson_weights([1, 2], [1, 1], min_weight=0.01)
    assert w.tolist() == pytest.approx([1 / 3, 2 / 3], abs=5 * 0.5 / math.sqrt(20_000))


# --------------------------------------------------------------------------- choose


def test_choose_boundaries():
    w = [0.2, 0.0, 0.3, 0.5]
    assert choose(w, 0.0) == 0
    assert choose(w, 0.1999) == 0
    assert choose(w, 0.2) == 2  # zero-weight arm 1 owns an empty interval
    assert choose(w, 0.4999) == 2
    assert choose(w, 0.5) == 3
    assert choose(w, math.nextafter(1.0, 0.0)) == 3


def test_choose_last_index_guard_against_round_off():
    # cumsum of these is 0.9999999999999999, not 1.0; u just below 1 must still map.
    w = [0.1] * 10
    assert choose(w, math.nextafter(1.0, 0.0)) == 9
    # Trailing zero-weight arms must never be picked even at u -> 1.
    assert choose([0.7, 0.3, 0.0, 0.0], math.nextafter(1.0, 0.0)) == 1


def test_choose_accepts_unnormalised_weights():
    assert choose([2, 2], 0.49) == 0
    assert choose([2, 2], 0.51) == 1


@pytest.mark.parametrize(
    ("weights", "u"),
    [([0.5, 0.5], 1.0), ([0.5, 0.5], -0.1), ([0.5, 0.5], np.nan), ([0, 0], 0.5), ([-1, 2], 0.5)],
)
def test_choose_rejects_invalid(weights, u):
    with pytest.raises(ValueError):
        choose(weights, u)


@PROPERTY
@given(
    w=st.lists(st.one_of(st.just(0.0), st.floats(1e-9, 1.0)), min_size=1, max_size=8).filter(
        lambda w: sum(w) > 0
    ),
    u=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_property_choose_never_picks_zero_weight(w, u):
    i = choose(w, u)
    assert 0 <= i < len(w)
    assert w[i] > 0


def test_choose_frequencies_chi_square():
    # 100k seeded picks against fixed weights. Pearson chi-square with 3 df;
    # the critical value at alpha = 1e-6 gives a 1e-6 false-failure rate under
    # a random seed (the fixed seed makes this deterministic).
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    rng = np.random.default_rng(20240601)
    n = 100_000
    picks = np.fromiter((choose(weights, rng.random()) for _ in range(n)), dtype=np.int64, count=n)
    counts = np.bincount(picks, minlength=weights.size)
    expected = n * weights
    chi2_stat = float(((counts - expected) ** 2 / expected).sum())
    assert chi2_stat < stats.chi2.isf(1e-6, df=weights.size - 1)
    # Per-arm binomial bound, 5 SE (false-failure rate ~5.7e-7 per arm).
    se = np.sqrt(weights * (1 - weights) / n)
    assert np.all(np.abs(counts / n - weights) < 5 * se)


# --------------------------------------------------------------------------- unit_uniform


def test_unit_uniform_is_stable_and_pinned():
    u = unit_uniform("exp", "user-1")
    assert u == unit_uniform("exp", "user-1")
    # Pinned: must not change across processes, platforms or releases
    # (a change would silently reshuffle every sticky assignment).
    assert u == 0.16406196823396846
    assert unit_uniform("exp-a", "u-42") == 0.32156406483314315


def test_unit_uniform_depends_on_experiment_and_unit():
    assert unit_uniform("exp-a", "u1") != unit_uniform("exp-b", "u1")
    assert unit_uniform("exp-a", "u1") != unit_uniform("exp-a", "u2")
    # The separator keeps "ab"+"c" apart from "a"+"bc".
    assert unit_uniform("ab", "c") != unit_uniform("a", "bc")


def test_unit_uniform_is_approximately_uniform():
    # Kolmogorov-Smirnov on 20k ids; the p-value threshold 1e-6 is the
    # false-failure rate for an ideal hash (deterministic inputs here).
    u = np.array([unit_uniform("exp-uniformity", f"user-{i}") for i in range(20_000)])
    assert np.all((u >= 0.0) & (u < 1.0))
    assert stats.kstest(u, "uniform").pvalue > 1e-6
    # Decile counts: 2000 expected each, SE sqrt(20000*0.1*0.9) ~ 42; 5 SE = 212.
    counts = np.bincount((u * 10).astype(int), minlength=10)
    assert np.all(np.abs(counts - 2000) < 212)


def test_sticky_assignment_is_stable_while_weights_stand():
    w = [0.2, 0.5, 0.3]
    for uid in ("alice", "bob", "carol"):
        first = choose(w, unit_uniform("exp", uid))
        assert all(choose(w, unit_uniform("exp", uid)) == first for _ in range(5))


# --------------------------------------------------------------------------- mix_holdout


def test_mix_holdout():
    h, w = mix_holdout([0.75, 0.25], 0.2)
    assert h == 0.2
    assert w.tolist() == pytest.approx([0.6, 0.2], abs=FLOAT_TOL)
    assert h + w.sum() == pytest.approx(1.0, abs=FLOAT_TOL)
    h, w = mix_holdout([0.5, 0.5], 0.0)
    assert h == 0.0 and w.tolist() == [0.5, 0.5]


@pytest.mark.parametrize(("weights", "f"), [([0.5, 0.5], -0.1), ([0.5, 0.5], 1.1), ([0, 0], 0.1)])
def test_mix_holdout_invalid(weights, f):
    with pytest.raises(ValueError):
        mix_holdout(weights, f)
