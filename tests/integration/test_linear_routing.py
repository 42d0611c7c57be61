"""Linear Thompson sampling end to end on a real DataPlane (real Redis, real churn models, no
Ray): each request's context vector rides on its record, the reward script (and the default-reward
sweeper) adds exactly LinearStats.update's increments, every propensity is the share the request
was drawn with at its own context, and in a world where the better variant depends on a numeric
feature each region of it ends up routed mostly to its own better variant. Rewards are seeded
draws (a fake only for the users)."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.bandit.linear_routing import linear_shares
from gateway.bandit.linear_ts import LinearStats
from gateway.decisions import linear
from gateway.sim import churn
from gateway.store import keys
from gateway.store.snapshot import RewardItem
from tests.planes import Clock, env, run, serve  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.integration


def _rows(n: int, seed: int) -> list[list]:
    """Churn rows with tenure and charges on a 0.5 grid: every product and sum of the counters is
    then exact in doubles, so Redis's sums and numpy's must agree to the bit."""
    rows, _ = churn.make_churn(n, seed=seed)
    return [[round(r[0] * 2) / 2, round(r[1] * 2) / 2, *r[2:]] for r in rows]


def test_rewards_add_exactly_the_linear_increments(env):
    clock = Clock()
    plane = env.plane(clock, algorithm="linear_thompson", context=["tenure", "monthly_charges"],
                      reward={"type": "bernoulli", "window_s": 60, "default": 0.5})
    name = plane.experiment_names()[0]
    rows = _rows(60, seed=61)

    async def scenario():
        await plane.start()
        try:
            served = await serve(plane, rows)
            rewarded = {}
            for i, p in enumerate(served[:40]):
                r = float(i % 3 == 0)
                await plane.rewards({"request_id": p["request_id"], "reward": r, "token": p["reward_token"]})
                await plane.rewards({"request_id": p["request_id"], "reward": r, "token": p["reward_token"]})  # a retry
                rewarded[p["request_id"]] = r
            records = await plane.store.read_requests(name, [p["request_id"] for p in served])
            clock.t += 61
            await plane.refresh()  # the other 20 take the default reward, 0.5
            snap = (await plane.store.snapshots([name], plane.experiments.linear_contexts()))[name]
            return served, rewarded, records, snap
        finally:
            await plane.stop()

    served, rewarded, records, snap = run(scenario())
    assert all(rec["lx"] == f"1.0,{row[0]!r},{row[1]!r}" for rec, row in zip(records, rows))
    names = sorted({p["variant"] for p in served})
    X = np.array([[1.0, row[0], row[1]] for row in rows])
    arms = np.array([names.index(p["variant"]) for p in served])
    y = np.array([rewarded.get(p["request_id"], 0.5) for p in served])
    expected = LinearStats.zeros(len(names), 3).update(X, arms, y)
    got = linear.stats(plane.runtime(name).policy, snap, names)
    for field in ("n", "xtx", "xty", "yty"):
        assert np.array_equal(getattr(got, field), getattr(expected, field)), field
    assert [snap.arms[v].rewards for v in names] == expected.n.tolist()


def test_a_reward_that_would_overflow_the_linear_counters_changes_nothing(env):
    clock = Clock()
    plane = env.plane(clock, algorithm="linear_thompson", context=["tenure"])
    name = plane.experiment_names()[0]
    store = plane.store

    async def scenario():
        await plane.start()
        try:
            assert await store.record_prediction(name, "big", "logreg", {"pred": "[1]", "lx": "1.0,1e100"},
                                                 ttl_s=600, log_entry=None)
            # y'y already half way to the limit: one more y^2 = 1e300 would pass it (the arm's sum
            # of squares, at 0, would not).
            await store.client.hset(keys.linear(name), "logreg|yty", "5e299")
            before = [await store.client.hgetall(k) for k in (keys.linear(name), keys.arms(name),
                                                              keys.request(name, "big"))]
            [(outcome, _)] = await store.apply_rewards([RewardItem(name, "big", "logreg", 1e150)], clock.t)
            after = [await store.client.hgetall(k) for k in (keys.linear(name), keys.arms(name),
                                                             keys.request(name, "big"))]
            return outcome, before, after
        finally:
            await plane.stop()

    outcome, before, after = run(scenario())
    assert outcome == "invalid" and after == before


# Reward rates by tenure (0 to 72 months): logreg wins for new customers, xgb for old ones.
def _rate(variant: str, tenure: float) -> float:
    early = tenure < 36
    return (0.8 if early else 0.3) if variant == "logreg" else (0.3 if early else 0.8)


def test_each_region_of_a_numeric_feature_goes_to_its_better_variant(env):
    clock = Clock()
    # Tenure in years (the prior suits features of order 1); a long min_samples keeps the overall
    # rule, which sees a tie, from promoting anyone while the routing learns.
    plane = env.plane(clock, algorithm="linear_thompson", context=["tenure"], burn_in=40, min_weight=0.02,
                      promotion={"min_samples": 100_000})
    name = plane.experiment_names()[0]
    rows, _ = churn.make_churn(1600, seed=71)
    rows = [[round(r[0] / 12, 3), *r[1:]] for r in rows]  # tenure in years, 0 to 6
    # Not churn's seed: its generator draws the tenures, and the same stream would decide the rewards.
    rng = np.random.default_rng(1071)
    rt = plane.runtime(name)

    async def scenario():
        await plane.start()
        checked = []
        try:
            for i, row in enumerate(rows):
                routes = rt.linear
                p = await plane.predict(name, {"instances": [row]}, f"q{i}")
                if routes is not None and rt.allocation.mode not in ("promoted", "paused"):
                    # The propensity is the share of the variant drawn at this request's context.
                    shares = routes.shares(np.array([1.0, row[0]]))
                    checked.append((p["propensity"], shares[p["variant"]]))
                r = float(rng.random() < _rate(p["variant"], row[0] * 12))
                await plane.rewards({"request_id": p["request_id"], "reward": r, "token": p["reward_token"]})
                if i % 20 == 19:
                    clock.t += 1
                    await plane.refresh()
            records = await plane.store.read_requests(name, [f"q{i}" for i in range(len(rows) - 5, len(rows))])
            snap = (await plane.store.snapshots([name], plane.experiments.linear_contexts()))[name]
            state = await plane.state(name)
            test_rows = [[t, 70.0, 2.0, "basic"] for t in np.linspace(0.05, 5.95, 60).round(3).tolist()] * 5
            after = await serve(plane, test_rows, prefix="after")
            return checked, records, snap, state, test_rows, after
        finally:
            await plane.stop()

    checked, records, snap, state, test_rows, after = run(scenario())
    assert state["status"] == "exploring" and state["allocation"] == "linear_thompson"
    assert len(checked) > 1400 and all(prop == share for prop, share in checked)
    # The record (what OPE and retraining read) keeps the same propensity the client got.
    assert all(float(rec["prop"]) > 0 for rec in records)
    # The refreshed routing is linear_shares on the snapshot's counters, to the bit.
    policy = plane.runtime(name).policy
    names = list(plane.runtime(name).linear.names)
    X = np.array([[1.0, row[0]] for row in test_rows[:60]])
    direct = linear_shares(linear.prior(policy), linear.stats(policy, snap, names), X,
                           min_weight=linear.floor(policy, snap.arms, names), burn_in=policy.burn_in_rewards)
    routed = np.array([[plane.runtime(name).linear.shares(x)[v] for v in names] for x in X])
    assert np.array_equal(direct, routed)
    # Each region of tenure goes mostly to its better variant.
    early = [p["variant"] for row, p in zip(test_rows, after) if row[0] < 2.0]
    late = [p["variant"] for row, p in zip(test_rows, after) if row[0] > 4.0]
    assert early.count("logreg") / len(early) > 0.8, early
    assert late.count("xgb") / len(late) > 0.8, late
    # The state shows what was learned: reward falls with tenure for logreg and rises for xgb, and
    # their models predict logreg better for a 1-year customer and xgb for a 5-year one.
    models = state["linear"]
    assert models["terms"] == ["intercept", "tenure"]
    coef = {v: m["coefficients"] for v, m in models["variants"].items()}
    assert coef["logreg"]["tenure"] < 0 < coef["xgb"]["tenure"]
    predict = lambda v, years: coef[v]["intercept"] + coef[v]["tenure"] * years  # noqa: E731
    assert predict("logreg", 1) > predict("xgb", 1) and predict("xgb", 5) > predict("logreg", 5)
