"""Unit tests for the wiring of linear Thompson sampling (algorithm linear_thompson): the policy's
rules, the routing the refresh builds from a snapshot (exactly linear_shares for its counters),
the draw and its logged propensity on the request path, and the learned models the state shows.
No Redis: the Lua side is tests/integration/test_linear_routing.py. Seeded throughout."""
from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from gateway.bandit.linear_routing import linear_shares
from gateway.bandit.linear_ts import LinearPrior, LinearStats
from gateway.bandit.srm import SrmTracker
from gateway.cli.status_view import linear_tables
from gateway.dataplane import DataPlane
from gateway.dataplane.tokens import RewardTokens
from gateway.decisions import allocation, linear
from gateway.decisions.state import experiment_state
from gateway.policy import PolicyError, parse_policy
from gateway.schemas import ExperimentState
from gateway.store.experiments import ExperimentStore
from gateway.store.snapshot import ArmCounts, Snapshot

FEATURES = [
    {"name": "tenure", "type": "numeric"},
    {"name": "charges", "type": "numeric"},
    {"name": "fuzzy", "type": "numeric", "missing": "impute"},
    {"name": "plan", "type": "categorical", "values": ["basic", "pro"]},
]
VARIANTS = [{"name": "a", "model": "a.skops"}, {"name": "b", "model": "b.skops"}]


def policy(**fields):
    return parse_policy({"experiment": "lin", "features": FEATURES, "variants": VARIANTS,
                         "algorithm": "linear_thompson", "context": ["tenure", "charges"], **fields})


# --------------------------------------------------------------------------- policy


def test_the_policy_takes_numeric_context_and_the_prior_with_linear_ts_defaults():
    p = policy(burn_in=10)
    assert p.context == ("tenure", "charges")
    prior = linear.prior(p)
    assert prior == LinearPrior()  # linear_prior's defaults are LinearPrior's
    assert linear.prior(policy(linear_prior={"ridge": 4, "a0": 2, "b0": 1})) == LinearPrior(ridge=4, a=2, b=1)
    assert policy(reward={"type": "gaussian"}).reward.type == "gaussian"


@pytest.mark.parametrize(("fields", "message"), [
    ({"context": ["plan"]}, "'plan' is not a numeric feature"),
    ({"context": ["fuzzy"]}, "'fuzzy' is not a numeric feature"),
    ({"context": ["nope"]}, "'nope' is not a numeric feature"),
    ({"context": []}, "linear_thompson needs the numeric features"),
    ({"context": ["tenure", "tenure"]}, "names must be unique"),
    ({"holdout": {"variant": "b", "fraction": 0.1}}, "does not take a holdout"),
    ({"linear_prior": {"ridge": 0}}, "greater than 0"),
    ({"linear_prior": {"a": 1}}, "Extra inputs"),
    ({"variance_reduction": {"covariate": "tenure"}}, "non-contextual algorithm"),
    ({"algorithm": "thompson", "context": [], "linear_prior": {"ridge": 2}}, "only for algorithm linear_thompson"),
    ({"algorithm": "contextual_thompson"}, "'tenure' is not a categorical feature"),
])
def test_the_policy_refuses_what_linear_thompson_cannot_take(fields, message):
    with pytest.raises(PolicyError, match=message):
        policy(**fields)


# --------------------------------------------------------------------------- routing


def _snapshot(stats: LinearStats, names=("a", "b"), meta=None) -> Snapshot:
    arms = {v: ArmCounts(rewards=int(stats.n[i]), reward_sum=float(stats.xty[i, 0])) for i, v in enumerate(names)}
    per_variant = {v: LinearStats(stats.n[i:i + 1], stats.xtx[i:i + 1], stats.xty[i:i + 1], stats.yty[i:i + 1])
                   for i, v in enumerate(names)}
    return Snapshot(arms=arms, meta={"status": "exploring", **(meta or {})}, linear=per_variant)


def _world(n: int = 600, seed: int = 3) -> tuple[LinearStats, np.ndarray]:
    """a is better at low tenure, b at high: rewards drawn from a linear probability model."""
    rng = np.random.default_rng(seed)
    X = np.c_[np.ones(n), rng.uniform(0, 2, n), rng.uniform(0, 1, n)]
    arms = rng.integers(0, 2, n)
    p = np.where(arms == 0, 0.8 - 0.3 * X[:, 1], 0.2 + 0.3 * X[:, 1])
    y = (rng.random(n) < p).astype(float)
    return LinearStats.zeros(2, 3).update(X, arms, y), X


def test_routing_from_a_snapshot_is_linear_shares_for_its_counters():
    p = policy(burn_in=50)
    stats, X = _world()
    snap = _snapshot(stats)
    routes = linear.routing(p, snap)
    got = np.array([[routes.shares(x)[v] for v in ("a", "b")] for x in X[:40]])
    want = linear_shares(LinearPrior(), stats, X[:40], min_weight=linear.floor(p, snap.arms, ["a", "b"]), burn_in=50)
    assert np.array_equal(got, want)
    # Where each is better, it gets most of the traffic.
    assert routes.shares(np.array([1.0, 0.1, 0.5]))["a"] > 0.9 and routes.shares(np.array([1.0, 1.9, 0.5]))["b"] > 0.9
    assert routes.allocation(X[0]).mode == "linear_thompson"


def test_a_variant_still_burning_in_gets_the_uniform_share_everywhere():
    stats, X = _world()
    young = LinearStats(np.array([stats.n[0], 10.0]), stats.xtx, stats.xty, stats.yty)
    routes = linear.routing(policy(burn_in=50), _snapshot(young))
    assert routes.shares(X[0]) == {"a": 0.5, "b": 0.5}
    assert routes.allocation(X[0]).mode == "burn_in_challenger"
    assert linear.routing(policy(burn_in=10**6), _snapshot(stats)).allocation(X[0]).mode == "burn_in"


def test_counters_kept_under_another_context_are_not_mixed_in():
    stats, _ = _world()
    other = {v: LinearStats(s.n, np.ones((1, 2, 2)), np.ones((1, 2)), s.yty) for v, s in _snapshot(stats).linear.items()}
    snap = Snapshot(arms={}, meta={}, linear=other)
    assert linear.stats(policy(), snap, ["a", "b"]).n.tolist() == [0.0, 0.0]


def test_the_context_vector_and_its_record_encoding():
    p = policy()
    row = [12.5, 80.25, None, "pro"]
    x = linear.context_of(p, row)
    assert x.tolist() == [1.0, 12.5, 80.25]
    assert x.tolist() == linear.context_of(p, {"tenure": 12.5, "charges": 80.25, "plan": "pro", "fuzzy": None}).tolist()
    assert [float(v) for v in linear.encode(x).split(",")] == x.tolist()
    assert linear.context_of(p, [1e101, 1.0, None, "pro"]) is None  # too large to learn from


# --------------------------------------------------------------------------- request path


def test_each_request_is_drawn_from_the_shares_at_its_context_and_logs_that_share():
    p = policy(burn_in=50)
    stats, X = _world()
    snap = _snapshot(stats)
    plane = DataPlane({"lin": p}, ExperimentStore.from_url("redis://127.0.0.1:1"), {"lin": {"a": None, "b": None}},
                      RewardTokens("k" * 32), rng=np.random.default_rng(11))
    rt = plane.runtime("lin")
    rt.allocation = allocation.allocate(p, snap.arms, snap.meta)
    rt.linear = linear.routing(p, snap)
    # Where the two models cross, both variants take traffic.
    x = min((np.array([1.0, t, 0.5]) for t in np.linspace(0.5, 1.5, 101)),
            key=lambda x: abs(rt.linear.shares(x)["a"] - 0.5))
    shares = rt.linear.shares(x)
    picks = [plane._select("lin", rt, None, None, x) for _ in range(4000)]
    assert all(prop == shares[v] for v, prop in picks)
    freq = sum(v == "a" for v, _ in picks) / len(picks)
    assert 0.2 < shares["a"] < 0.8
    assert abs(freq - shares["a"]) < 4 * np.sqrt(shares["a"] * (1 - shares["a"]) / len(picks))  # 4 sd
    # An operator's promotion governs every context.
    rt.allocation = allocation.Allocation({"a": 0.0, "b": 1.0}, "promoted")
    assert {plane._select("lin", rt, None, None, x) for _ in range(20)} == {("b", 1.0)}


# --------------------------------------------------------------------------- state


def test_the_state_shows_each_variants_learned_coefficients_by_term():
    p = policy(burn_in=50)
    rng = np.random.default_rng(5)
    X = np.c_[np.ones(4000), rng.uniform(0, 2, 4000), rng.uniform(0, 1, 4000)]
    arms = np.repeat([0, 1], 2000)
    y = np.where(arms == 0, 0.8 - 0.3 * X[:, 1], 0.2 + 0.3 * X[:, 1] + 0.1 * X[:, 2]) + rng.normal(0, 0.1, 4000)
    state = experiment_state(p, _snapshot(LinearStats.zeros(2, 3).update(X, arms, y)), [])
    models = state["linear"]
    assert models["terms"] == ["intercept", "tenure", "charges"]
    a, b = models["variants"]["a"], models["variants"]["b"]
    assert a["rewards"] == b["rewards"] == 2000
    for got, want in ((a, [0.8, -0.3, 0.0]), (b, [0.2, 0.3, 0.1])):
        coef = [got["coefficients"][t] for t in models["terms"]]
        sd = [got["coefficient_sd"][t] for t in models["terms"]]
        assert all(abs(c - w) < 4 * s for c, w, s in zip(coef, want, sd)), (coef, sd)  # within 4 sd
        assert got["noise_sd"] == pytest.approx(0.1, rel=0.1)
    assert state["allocation"] == "linear_thompson"
    assert experiment_state(policy(algorithm="thompson", context=[]), _snapshot(LinearStats.zeros(2, 3)), [])["linear"] is None
    # The API's schema takes it (with what the data plane adds).
    ExperimentState.model_validate({**state, "srm": SrmTracker().result(), "kpis": None, "drift": None})
    # The CLI's status prints them, a row per variant, whole at 80 columns too.
    console = Console(width=80, record=True)
    console.print(*linear_tables(console, state))
    text = console.export_text()
    assert "…" not in text
    assert "intercept" in text and "tenure" in text and f"{a['coefficients']['tenure']:.4f}" in text


def test_a_changed_context_starts_the_linear_counters_afresh():
    """Counters are kept under the context they were learned on: after `context` changes (fewer
    features, more, or another order) the old ones are neither read nor added to."""
    from redis.crc import key_slot

    from gateway.store import keys

    names = [keys.linear("churn", c) for c in (("tenure", "monthly_charges"), ("tenure",), ("monthly_charges", "tenure"))]
    assert len(set(names)) == 3
    assert len({key_slot(k.encode()) for k in [*names, keys.arms("churn")]}) == 1  # one experiment, one slot
