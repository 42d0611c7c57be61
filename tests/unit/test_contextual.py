"""Unit tests for contextual routing's pure core: gateway.bandit.contextual (per-segment Beta
posteriors, shares, per-segment promotion) and gateway.bandit.linear_ts (linear Thompson
sampling). Every random quantity is seeded; Monte-Carlo comparisons use tolerances of several
standard deviations stated beside them."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from gateway.bandit import contextual, linear_routing, linear_ts, segment_keys, segment_promotion
from gateway.bandit.beta import posterior, prob_best
from gateway.bandit.contextual import (
    DEFAULT_STRENGTH,
    empirical_strength,
    parse_segment,
    segment_of,
    segment_shares,
    shrunk_beta,
)
from gateway.bandit.segment_promotion import segment_decisions, segment_level
from gateway.bandit.linear_routing import floor_rows, linear_shares
from gateway.bandit.linear_ts import (
    LinearPrior,
    LinearStats,
    context_vector,
    increments,
    linear_posterior,
    linear_prob_best,
    predictive,
)
from gateway.bandit.promotion import PromotionRule
from gateway.bandit.selection import apply_floor
from gateway.bandit.sequential import always_valid_p, evaluate_sequential
from gateway.decisions.allocation import allocate
from gateway.policy import parse_policy
from gateway.store.snapshot import ArmCounts

FEATURES = ["tenure", "monthly_charges", "support_calls", "plan"]
RULE = PromotionRule(prob_best=0.95, max_expected_loss=0.0025, min_samples=200)


def test_doctests():
    assert doctest.testmod(contextual).failed == 0
    assert doctest.testmod(segment_keys).failed == 0 and doctest.testmod(segment_promotion).failed == 0
    assert doctest.testmod(linear_ts).failed == 0 and doctest.testmod(linear_routing).failed == 0


# --------------------------------------------------------------------------- segment keys


def test_segment_key_from_a_list_or_a_mapping_is_the_same():
    row = [12.0, 80.5, 2.0, "pro"]
    by_name = dict(zip(FEATURES, row))
    assert segment_of(row, FEATURES, ["plan"]) == segment_of(by_name, FEATURES, ["plan"]) == "plan=pro"


def test_segment_key_follows_the_context_order_and_is_stable():
    row = {"plan": "pro", "region": "eu", "tenure": 3}
    names = ["tenure", "plan", "region"]
    # Exact strings: the key is what Redis stores, so it must never change across versions.
    assert segment_of(row, names, ["plan", "region"]) == "plan=pro|region=eu"
    assert segment_of(row, names, ["region", "plan"]) == "region=eu|plan=pro"
    assert segment_of(row, names, ["plan", "tenure"]) == "plan=pro|tenure=3.0"


@pytest.mark.parametrize("value", [1, 1.0, np.int64(1), np.float64(1.0), np.float32(1.0)])
def test_numbers_render_as_repr_of_float(value):
    assert segment_of([value], ["x"], ["x"]) == "x=1.0"


def test_booleans_and_strings_render_with_str():
    assert segment_of([True, "1.0"], ["flag", "s"], ["flag", "s"]) == "flag=True|s=1.0"
    assert segment_of([np.bool_(False)], ["flag"], ["flag"]) == "flag=False"


@pytest.mark.parametrize(
    "name, value, key",
    [
        ("plan", "a|b", "plan=a%7Cb"),
        ("plan", "a=b", "plan=a%3Db"),
        ("plan", "100%", "plan=100%25"),
        ("plan", "%7C", "plan=%257C"),  # an escape sequence in the data is escaped itself
        ("p|q", "x", "p%7Cq=x"),
        ("p=q", "x=y|z", "p%3Dq=x%3Dy%7Cz"),
    ],
)
def test_separators_are_escaped_and_parse_inverts(name, value, key):
    assert segment_of({name: value}, [name], [name]) == key
    assert parse_segment(key) == {name: value}


def test_distinct_values_never_share_a_key():
    values = ["a", "a|b", "a=b", "a%7Cb", "a%3Db", "a|", "|a", "=", "%", "%25"]
    keys = {segment_of({"p": v, "q": "x"}, ["p", "q"], ["p", "q"]) for v in values}
    assert len(keys) == len(values)
    for v in values:
        k = segment_of({"p": v, "q": "x"}, ["p", "q"], ["p", "q"])
        assert parse_segment(k) == {"p": v, "q": "x"}


@pytest.mark.parametrize(
    "row, context, match",
    [
        ({"plan": "pro"}, [], "at least one"),
        ({"plan": "pro"}, ["plan", "plan"], "unique"),
        ({"plan": "pro"}, ["region"], "not among"),
        ({"tenure": 1}, ["plan"], "lacks"),
        ({"plan": None}, ["plan"], "no value"),
        ([1, 2], ["plan"], "sequence of 4"),
        ("pro", ["plan"], "sequence of 4"),
    ],
)
def test_bad_rows_and_contexts_are_refused(row, context, match):
    with pytest.raises(ValueError, match=match):
        segment_of(row, FEATURES, context)


def test_parse_segment_refuses_a_malformed_key():
    for bad in ("plan", "plan=a=b", "plan=a|"):
        with pytest.raises(ValueError):
            parse_segment(bad)


# --------------------------------------------------------------------------- shrinkage


def test_shrunk_beta_exact_update():
    # m = (1 + 60) / (2 + 100) per the prior Beta(1, 1) and 100 overall rewards summing to 60.
    a, b = shrunk_beta(1.0, 1.0, [100.0], [60.0], [10.0], [7.0], strength=20.0)
    m = 61.0 / 102.0
    assert a[0] == pytest.approx(m * 20 + 7, rel=1e-15)
    assert b[0] == pytest.approx((1 - m) * 20 + 3, rel=1e-15)


def test_a_segment_without_data_has_the_variants_overall_mean():
    on, os_ = np.array([1000.0, 50.0]), np.array([900.0, 10.0])
    a, b = shrunk_beta(2.0, 3.0, on, os_, [0, 0], [0, 0], strength=15.0)
    overall_a, overall_b = posterior(2.0, 3.0, on, os_)
    np.testing.assert_allclose(a / (a + b), overall_a / (overall_a + overall_b), rtol=1e-14)
    np.testing.assert_allclose(a + b, 15.0, rtol=1e-14)  # worth `strength` rewards


def test_a_segment_with_much_data_has_its_own_mean():
    # Overall the variant converts 90%, in this segment 30% over a million rewards.
    a, b = shrunk_beta(1.0, 1.0, [2e6], [1.2e6], [1e6], [3e5], strength=DEFAULT_STRENGTH)
    assert float(a[0] / (a[0] + b[0])) == pytest.approx(0.3, abs=1e-4)


def test_shrinkage_moves_monotonically_from_overall_to_segment():
    means = []
    for n in (0, 10, 100, 1000, 10000):
        a, b = shrunk_beta(1, 1, [20000], [18000], [n], [0.5 * n], strength=50)
        means.append(float(a[0] / (a[0] + b[0])))
    assert means == sorted(means, reverse=True)
    assert means[0] == pytest.approx(18001 / 20002) and means[-1] == pytest.approx(0.5, abs=0.002)


def test_shrunk_beta_broadcasts_over_leading_axes_and_per_variant_strength():
    rng = np.random.default_rng(3)
    seg_n = rng.integers(0, 50, size=(4, 3, 2)).astype(float)
    seg_s = np.floor(seg_n * rng.random((4, 3, 2)))
    on, os_ = seg_n.sum(axis=1), seg_s.sum(axis=1)
    w = np.array([5.0, 40.0])
    a, b = shrunk_beta(1, 1, on[:, None, :], os_[:, None, :], seg_n, seg_s, w)
    assert a.shape == b.shape == (4, 3, 2)
    for i in range(4):
        for j in range(3):
            a1, b1 = shrunk_beta(1, 1, on[i], os_[i], seg_n[i, j], seg_s[i, j], w)
            np.testing.assert_allclose(a[i, j], a1)
            np.testing.assert_allclose(b[i, j], b1)


@pytest.mark.parametrize(
    "args",
    [
        (1, 1, [10], [5], [1], [2], 10),  # s > n in the segment
        (1, 1, [10], [11], [1], [1], 10),  # s > n overall
        (1, 1, [10], [5], [1], [1], 0),  # strength must be > 0
        (1, 1, [10], [5], [1], [1], float("nan")),
        (0, 1, [10], [5], [1], [1], 10),  # prior must be > 0
        (1, 1, [10], [5], [-1], [0], 10),
    ],
)
def test_shrunk_beta_refuses_bad_input(args):
    with pytest.raises(ValueError):
        shrunk_beta(*args)


def test_empirical_strength_pools_agreeing_segments_and_not_disagreeing_ones():
    n = np.full((3, 2), 2000.0)
    s = np.array([[1800.0, 1000.0], [1000.0, 1010.0], [1040.0, 990.0]])
    kappa = empirical_strength(n, s)
    assert kappa[0] < 10  # rates 0.9 / 0.5 / 0.52: barely pool
    assert kappa[1] == 1000.0  # rates within sampling noise of each other: pool fully
    # Method of moments with known numbers (equal traffic): w = 1/3.
    m = s[:, 0].sum() / 6000
    rates = s[:, 0] / 2000
    observed = ((rates - m) ** 2).mean()
    sampling = 3 * (1 / 3) * (2 / 3) * m * (1 - m) / 2000
    between = (observed - sampling) / (1 - 3 / 9)
    assert kappa[0] == pytest.approx(max(1.0, m * (1 - m) / between - 1), rel=1e-12)


def test_empirical_strength_over_leading_axes_matches_one_at_a_time():
    rng = np.random.default_rng(5)
    n = rng.integers(0, 400, size=(6, 4, 3)).astype(float)
    s = np.floor(n * rng.uniform(0.1, 0.9, size=(6, 4, 3)))
    many = empirical_strength(n, s)
    assert many.shape == (6, 3)
    for i in range(6):
        np.testing.assert_allclose(many[i], empirical_strength(n[i], s[i]))


def test_empirical_strength_without_two_segments_pools():
    assert empirical_strength([[100, 0]], [[50, 0]]).tolist() == [1000.0, 1000.0]
    assert empirical_strength([[100, 0], [0, 5]], [[50, 0], [0, 1]], max_strength=80).tolist() == [80.0, 80.0]


# --------------------------------------------------------------------------- shares


def make_policy(names=("a", "b"), *, min_weight=0.01, min_samples=200, burn_in=None):
    data = {
        "experiment": "exp",
        "features": [{"name": "x"}],
        "variants": [{"name": n, "model": f"{n}.m"} for n in names],
        "min_weight": min_weight,
        "promotion": {"min_samples": min_samples},
    }
    if burn_in is not None:
        data["burn_in"] = burn_in
    return parse_policy(data)


def counts(n, rate):
    n = np.asarray(n, dtype=float)
    return n, np.round(n * np.asarray(rate, dtype=float))


SEGMENTS = {
    "plan=basic": counts([900, 600], [0.91, 0.885]),
    "plan=pro": counts([300, 250], [0.49, 0.95]),
    "plan=enterprise": counts([40, 300], [0.5, 0.95]),  # logreg still burning in here
    "plan=new": counts([0, 0], [0, 0]),
}
OVERALL = (sum(v[0] for v in SEGMENTS.values()), sum(v[1] for v in SEGMENTS.values()))


def test_shares_sum_to_one_and_respect_the_floor_and_the_burn_in():
    alloc = segment_shares(["logreg", "xgb"], OVERALL, SEGMENTS, min_weight=0.02, burn_in=200)
    assert set(alloc.shares) == set(SEGMENTS)
    for key, shares in alloc.shares.items():
        assert math.fsum(shares.values()) == pytest.approx(1.0, abs=1e-12)
        assert min(shares.values()) >= 0.02 - 1e-12
    assert alloc.modes["plan=new"] == "burn_in" and alloc.shares["plan=new"] == {"logreg": 0.5, "xgb": 0.5}
    # One variant young: it keeps 1/k, the other takes the rest (k = 2: also 1/2).
    assert alloc.modes["plan=enterprise"] == "burn_in_challenger"
    assert alloc.shares["plan=enterprise"] == pytest.approx({"logreg": 0.5, "xgb": 0.5})
    assert alloc.modes["plan=pro"] == "contextual_thompson"
    assert alloc.shares["plan=pro"]["logreg"] == pytest.approx(0.02)


def test_segment_shares_are_the_floored_prob_best_of_the_shrunk_posteriors():
    alloc = segment_shares(["logreg", "xgb"], OVERALL, SEGMENTS, min_weight=0.01, burn_in=200, strength=30)
    a, b = shrunk_beta(1, 1, *OVERALL, *SEGMENTS["plan=basic"], strength=30)
    expected = apply_floor(prob_best(a, b), 0.01)
    assert [alloc.shares["plan=basic"][v] for v in ("logreg", "xgb")] == expected.tolist()


def test_a_young_challenger_in_a_segment_burns_in_beside_the_bandit():
    segs = {"s": counts([1000, 1000, 10], [0.9, 0.1, 0.5])}
    alloc = segment_shares(["a", "b", "c"], segs["s"], segs, min_weight=0.05, burn_in=100)
    assert alloc.modes["s"] == "burn_in_challenger"
    assert alloc.shares["s"] == pytest.approx({"a": 2 / 3 - 0.05, "b": 0.05, "c": 1 / 3})


def test_default_is_the_gateways_allocation_of_the_overall_counters():
    policy = make_policy(("a", "b", "c"), min_weight=0.03, min_samples=150)
    overall = counts([400, 500, 300], [0.10, 0.12, 0.11])
    arms = {v: ArmCounts(rewards=int(n), reward_sum=float(s)) for v, n, s in zip("abc", *overall)}
    expected = allocate(policy, arms, {})
    alloc = segment_shares(["a", "b", "c"], overall, {}, min_weight=0.03, burn_in=150)
    assert alloc.default == expected.shares  # byte-identical: same seeded draws
    assert alloc.default_mode == expected.mode == "thompson"
    # Burn-in of the default follows the overall counters, as allocate() does.
    young = counts([400, 500, 20], [0.10, 0.12, 0.11])
    arms = {v: ArmCounts(rewards=int(n), reward_sum=float(s)) for v, n, s in zip("abc", *young)}
    alloc = segment_shares(["a", "b", "c"], young, {}, min_weight=0.03, burn_in=150)
    assert alloc.default == allocate(policy, arms, {}).shares
    assert alloc.default_mode == "burn_in_challenger"


def test_an_unseen_segment_gets_the_default_and_a_promoted_one_its_champion():
    alloc = segment_shares(["logreg", "xgb"], OVERALL, SEGMENTS, champions={"plan=pro": "xgb"})
    assert alloc.for_segment("plan=unknown") is alloc.default
    assert alloc.shares["plan=pro"] == {"logreg": 0.0, "xgb": 1.0} and alloc.modes["plan=pro"] == "promoted"
    assert alloc.pick("plan=pro", 0.0) == ("xgb", 1.0)
    with pytest.raises(ValueError, match="champion"):
        segment_shares(["logreg", "xgb"], OVERALL, SEGMENTS, champions={"plan=pro": "nope"})


def test_equal_counters_give_identical_shares():
    one = segment_shares(["logreg", "xgb"], OVERALL, SEGMENTS)
    two = segment_shares(["logreg", "xgb"], OVERALL, dict(reversed(list(SEGMENTS.items()))))
    assert one.shares == two.shares and one.default == two.default


def test_auto_strength_uses_the_empirical_bayes_estimate():
    alloc = segment_shares(["logreg", "xgb"], OVERALL, SEGMENTS, strength="auto", burn_in=0)
    keys = sorted(SEGMENTS)
    w = empirical_strength([SEGMENTS[k][0] for k in keys], [SEGMENTS[k][1] for k in keys])
    direct = segment_shares(["logreg", "xgb"], OVERALL, SEGMENTS, strength=w, burn_in=0)
    assert alloc.shares == direct.shares
    with pytest.raises(ValueError, match="auto"):
        segment_shares(["logreg", "xgb"], OVERALL, SEGMENTS, strength="eb")


def test_burn_in_zero_lets_shrinkage_route_a_new_segment_like_the_overall():
    overall = counts([5000, 5000], [0.6, 0.9])
    alloc = segment_shares(["a", "b"], overall, {"s": counts([0, 0], [0, 0])}, burn_in=0, min_weight=0.01)
    assert alloc.modes["s"] == "contextual_thompson"
    assert alloc.shares["s"]["b"] > 0.9  # the overall winner leads, with the spread of 20 rewards


def test_propensity_matches_routing_frequency():
    """Route 200,000 seeded draws through pick(); each variant's frequency must match its share
    within 5 standard deviations sqrt(p (1 - p) / n) (deterministic: the draws are seeded)."""
    alloc = segment_shares(["a", "b", "c"], counts([600, 600, 600], [0.5, 0.52, 0.51]),
                           {"s": counts([300, 300, 300], [0.5, 0.53, 0.51])}, min_weight=0.05, burn_in=100)
    shares = alloc.shares["s"]
    assert 0.05 < min(shares.values()) and max(shares.values()) < 0.9  # a non-trivial split
    rng = np.random.default_rng(11)
    n = 200_000
    picks = [alloc.pick("s", u) for u in rng.random(n)]
    for v, p in shares.items():
        freq = sum(1 for name, _ in picks if name == v) / n
        assert abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / n)
    assert all(prop == shares[name] for name, prop in picks)  # the logged propensity is the share


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(min_weight=0.6), "impossible"),
        (dict(burn_in=-1), "burn_in"),
        (dict(prior_alpha=0), "prior"),
        (dict(strength=0.0), "strength"),
    ],
)
def test_segment_shares_refuses_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        segment_shares(["a", "b"], counts([10, 10], [0.5, 0.5]), {"s": counts([5, 5], [0.5, 0.5])}, **kwargs)


def test_segment_shares_refuses_bad_counters():
    with pytest.raises(ValueError, match="shape"):
        segment_shares(["a", "b"], counts([10, 10], [0.5, 0.5]), {"s": counts([5, 5, 5], [0.5, 0.5, 0.5])})
    with pytest.raises(ValueError, match="n >= s"):
        segment_shares(["a", "b"], counts([10, 10], [0.5, 0.5]), {"s": ([5, 5], [6, 1])})
    with pytest.raises(ValueError, match="unique"):
        segment_shares(["a", "a"], counts([10, 10], [0.5, 0.5]), {})


# --------------------------------------------------------------------------- promotion


def test_segment_level_is_bonferroni():
    assert segment_level(0.05, 1) == 0.05
    assert segment_level(0.05, 4) == 0.0125
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError):
            segment_level(0.05, bad)


def test_each_segment_is_decided_by_evaluate_sequential_at_alpha_over_m():
    segs = {
        "plan=basic": ([6000, 6000], [600, 710]),  # always-valid p = 0.030: between alpha/3 and alpha
        "plan=pro": ([5000, 5000], [4750, 2450]),  # overwhelming
        "plan=enterprise": ([300, 300], [150, 151]),  # nothing
    }
    assert 0.05 / 3 < always_valid_p(*segs["plan=basic"], leader=1) < 0.05
    out = segment_decisions(["logreg", "xgb"], segs, RULE, 0.0, alpha=0.05)
    assert set(out) == set(segs)
    for key, (n, s) in segs.items():
        a, b = posterior(1, 1, n, s)
        direct = evaluate_sequential(["logreg", "xgb"], a, b, n, s, RULE, 0.0, alpha=0.05 / 3)
        assert (out[key].outcome, out[key].variant) == (direct.outcome, direct.variant)
        assert out[key].evidence["sequential"] == direct.evidence["sequential"]
        assert out[key].evidence["segment"] == {
            "key": key, "family_alpha": 0.05, "n_segments": 3, "level": 0.05 / 3, "correction": "bonferroni",
        }
    assert out["plan=pro"].variant == "logreg"
    assert out["plan=enterprise"].outcome == "inconclusive"
    # The correction bites: alone (one segment) basic would promote xgb, as one of three it does not.
    assert out["plan=basic"].outcome == "inconclusive"
    alone = segment_decisions(["logreg", "xgb"], {"plan=basic": segs["plan=basic"]}, RULE, 0.0)
    assert alone["plan=basic"].variant == "xgb"


def test_n_segments_sets_the_correction_and_must_cover_the_segments():
    segs = {"a": ([6000, 6000], [600, 710])}
    d = segment_decisions(["x", "y"], segs, RULE, 0.0, n_segments=3)["a"]
    assert d.evidence["segment"]["level"] == pytest.approx(0.05 / 3) and not d.promoted
    with pytest.raises(ValueError, match="smaller"):
        segment_decisions(["x", "y"], {"a": segs["a"], "b": segs["a"]}, RULE, 0.0, n_segments=1)


def test_bad_segment_counters_are_inconclusive_not_errors():
    out = segment_decisions(["x", "y"], {"a": ([100, 100], [150, 10]), "b": ([np.nan, 5], [1, 1])}, RULE, 0.0)
    assert out["a"].outcome == out["b"].outcome == "inconclusive"


# --------------------------------------------------------------------------- linear Thompson sampling


def random_data(rng, n=300, d=3, k=2):
    X = np.column_stack([np.ones(n), rng.standard_normal((n, d - 1))])
    arms = rng.integers(0, k, n)
    beta = rng.standard_normal((k, d)) * 0.3
    y = (X * beta[arms]).sum(axis=1) + 0.4 * rng.standard_normal(n)
    return X, arms, y


def test_linear_posterior_matches_the_direct_formulas():
    rng = np.random.default_rng(1)
    X, arms, y = random_data(rng)
    prior = LinearPrior(ridge=2.0, a=1.5, b=0.3)
    post = linear_posterior(prior, LinearStats.zeros(2, 3).update(X, arms, y))
    for i in range(2):
        Xi, yi = X[arms == i], y[arms == i]
        lam = 2.0 * np.eye(3) + Xi.T @ Xi
        mu = np.linalg.solve(lam, Xi.T @ yi)
        np.testing.assert_allclose(post.mean[i], mu, rtol=1e-10)
        np.testing.assert_allclose(post.cov[i], np.linalg.inv(lam), rtol=1e-10)
        assert post.a[i] == pytest.approx(1.5 + len(yi) / 2)
        # b = b0 + (y'y - mu' Lambda mu) / 2 = b0 + (|y - X mu|^2 + ridge |mu|^2) / 2
        resid = yi - Xi @ mu
        assert post.b[i] == pytest.approx(0.3 + 0.5 * (resid @ resid + 2.0 * mu @ mu), rel=1e-9)


def test_increments_fields_and_update_agree():
    rng = np.random.default_rng(2)
    X, arms, y = random_data(rng, n=50)
    stats = LinearStats.zeros(2, 3).update(X, arms, y)
    rows = [{}, {}]
    for x, i, v in zip(X, arms, y):
        for f, inc in increments(x, v).items():
            rows[i][f] = rows[i].get(f, 0.0) + inc
    rebuilt = LinearStats.from_fields(rows, d=3)
    for name in ("n", "xtx", "xty", "yty"):
        np.testing.assert_allclose(getattr(rebuilt, name), getattr(stats, name), rtol=1e-12)
    assert LinearStats.from_fields([stats.fields(0), stats.fields(1)], d=3).fields(1) == pytest.approx(stats.fields(1))
    assert len(stats.fields(0)) == 2 + 3 + 6  # n, y'y, X'y, upper triangle of X'X


def test_predictive_is_the_student_t_of_x_beta():
    rng = np.random.default_rng(3)
    X, arms, y = random_data(rng)
    post = linear_posterior(LinearPrior(), LinearStats.zeros(2, 3).update(X, arms, y))
    x = np.array([[1.0, 0.5, -1.0]])
    loc, scale, df = predictive(post, x)
    for i in range(2):
        assert loc[0, i] == pytest.approx(x[0] @ post.mean[i])
        assert scale[0, i] == pytest.approx(math.sqrt(post.b[i] / post.a[i] * x[0] @ post.cov[i] @ x[0]))
        assert df[i] == pytest.approx(2 * post.a[i])


def test_linear_prob_best_matches_the_exact_integral_within_its_precision():
    """Two arms: P(t1 > t0) by quadrature against the Monte-Carlo estimate; tolerance 5 sd of
    the estimate, sqrt(p (1 - p) / draws)."""
    rng = np.random.default_rng(4)
    X, arms, y = random_data(rng, n=120)
    prior = LinearPrior()
    stats = LinearStats.zeros(2, 3).update(X, arms, y)
    ctx = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, -1.0], [1.0, -2.0, 0.5]])
    draws = 20_000
    pb = linear_prob_best(prior, stats, ctx, draws=draws)
    loc, scale, df = predictive(linear_posterior(prior, stats), ctx)
    for r in range(len(ctx)):
        exact = integrate.quad(
            lambda v, r=r: sps.t.pdf(v, df[1], loc[r, 1], scale[r, 1]) * sps.t.cdf(v, df[0], loc[r, 0], scale[r, 0]),
            -np.inf, np.inf, epsabs=1e-10,
        )[0]
        assert abs(pb[r, 1] - exact) <= 5 * math.sqrt(max(exact * (1 - exact), 1e-4) / draws)
        assert pb[r].sum() == pytest.approx(1.0)


def test_linear_prob_best_is_the_frequency_of_thompson_sampling_picks():
    """Thompson sampling done the long way (sigma2 ~ InvGamma(a, b), beta ~ N(mu, sigma2 Lambda^-1)
    per arm, pick the argmax at x) picks each arm as often as linear_prob_best says: 5 sd of the
    two estimates' difference."""
    rng = np.random.default_rng(6)
    X, arms, y = random_data(rng, n=90, k=3)
    prior = LinearPrior()
    stats = LinearStats.zeros(3, 3).update(X, arms, y)
    post = linear_posterior(prior, stats)
    x = np.array([1.0, 0.3, -0.2])
    n_sim = 40_000
    sim = np.random.default_rng(7)
    theta = np.empty((n_sim, 3))
    for i in range(3):
        sigma2 = sps.invgamma.rvs(post.a[i], scale=post.b[i], size=n_sim, random_state=sim)
        z = sim.multivariate_normal(np.zeros(3), post.cov[i], size=n_sim)
        theta[:, i] = x @ post.mean[i] + np.sqrt(sigma2) * (z @ x)
    freq = np.bincount(theta.argmax(axis=1), minlength=3) / n_sim
    draws = 40_000
    pb = linear_prob_best(prior, stats, x[None, :], draws=draws)[0]
    for f, p in zip(freq, pb):
        sd = math.sqrt(max(p * (1 - p), 1e-4) * (1 / n_sim + 1 / draws))
        assert abs(f - p) <= 5 * sd


def test_linear_prob_best_is_seeded_and_vectorised():
    rng = np.random.default_rng(8)
    X, arms, y = random_data(rng)
    stats = LinearStats.zeros(2, 3).update(X, arms, y)
    ctx = np.column_stack([np.ones(500), rng.standard_normal((500, 2))])
    one = linear_prob_best(LinearPrior(), stats, ctx)
    assert np.array_equal(one, linear_prob_best(LinearPrior(), stats, ctx))  # default rng(0)
    rows = np.vstack([linear_prob_best(LinearPrior(), stats, ctx[i:i + 1]) for i in (0, 17, 499)])
    np.testing.assert_array_equal(rows, one[[0, 17, 499]])  # common random numbers across rows


def test_linear_shares_burn_in_floor_and_routing_frequency():
    rng = np.random.default_rng(9)
    X, arms, y = random_data(rng, n=400)
    prior = LinearPrior()
    stats = LinearStats.zeros(2, 3).update(X, arms, y)
    ctx = np.column_stack([np.ones(50), 3 * rng.standard_normal((50, 2))])
    young = linear_shares(prior, stats, ctx, burn_in=10_000)
    assert np.all(young == 0.5)
    shares = linear_shares(prior, stats, ctx, min_weight=0.05, burn_in=100)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-12)
    assert shares.min() >= 0.05 - 1e-12
    pb = linear_prob_best(prior, stats, ctx)
    np.testing.assert_allclose(shares, floor_rows(pb, 0.05))
    # Routing by the shares: frequencies match within 5 sd (propensity = the share drawn with).
    row = int(np.argmin(np.abs(shares[:, 0] - 0.5)))
    p = shares[row, 0]
    n = 100_000
    picked0 = (np.random.default_rng(10).random(n) < p).mean()
    assert abs(picked0 - p) <= 5 * math.sqrt(p * (1 - p) / n)


def test_linear_shares_with_one_young_arm_keeps_its_uniform_share():
    rng = np.random.default_rng(12)
    X, arms, y = random_data(rng, n=600, k=3)
    arms[arms == 2] = 0
    X2 = np.vstack([X, X[:5]])
    stats = LinearStats.zeros(3, 3).update(X2, np.concatenate([arms, [2] * 5]), np.concatenate([y, y[:5]]))
    shares = linear_shares(LinearPrior(), stats, X[:20], min_weight=0.05, burn_in=50)
    np.testing.assert_allclose(shares[:, 2], 1 / 3)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert shares[:, :2].min() >= 0.05 - 1e-12


def test_floor_rows_matches_apply_floor_row_by_row():
    rng = np.random.default_rng(13)
    w = rng.dirichlet(np.full(4, 0.3), size=200)
    w[0] = 0.0  # all-zero row: uniform
    got = floor_rows(w, 0.06)
    for i in range(200):
        np.testing.assert_allclose(got[i], apply_floor(w[i], 0.06), atol=1e-12)


def test_context_vector_numbers_and_one_hot():
    values = {"plan": ["basic", "pro", "enterprise"]}
    row = [12.0, 80.5, 2.0, "enterprise"]
    assert context_vector(row, FEATURES, ["tenure", "plan"], values).tolist() == [1.0, 12.0, 0.0, 0.0, 1.0]
    assert context_vector(dict(zip(FEATURES, row)), FEATURES, ["plan"], values, intercept=False).tolist() == [0, 0, 1]
    assert context_vector([1, 2, 3, "gold"], FEATURES, ["plan"], values).tolist() == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="declared values"):
        context_vector(row, FEATURES, ["plan"])
    with pytest.raises(ValueError, match="not among"):
        context_vector(row, FEATURES, ["region"], values)


def test_linear_stats_refuse_inconsistent_input():
    with pytest.raises(ValueError, match="shapes"):
        LinearStats(np.zeros(2), np.zeros((2, 3, 3)), np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match=">= 0"):
        LinearStats(np.array([-1.0, 0.0]), np.zeros((2, 1, 1)), np.zeros((2, 1)), np.zeros(2))
    with pytest.raises(ValueError, match="integers"):
        LinearStats.zeros(2, 1).update(np.ones((1, 1)), np.array([2]), np.ones(1))
    with pytest.raises(ValueError):
        LinearPrior(ridge=0.0)
