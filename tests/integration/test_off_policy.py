"""Off-policy evaluation through a real DataPlane (embedded redis-server, real models, no Ray):
the log the gateway writes is enough to estimate another policy's value, the state carries each
variant's IPS-corrected mean, and targets the log cannot support are refused with a clear error.
The estimators themselves are checked in simulation in tests/unit/test_ope.py."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.errors import Unprocessable
from gateway.sim import churn
from tests.planes import BASE, Clock, env, run, serve  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.integration

# Known reward rates per variant: what an evaluation must find.
RATES = {"logreg": 0.3, "xgb": 0.6}


def test_the_log_estimates_each_policy_and_the_state_shows_corrected_means(env):
    clock = Clock()
    # Burn-in longer than the run: every request is served with propensity 1/2, so the
    # corrected mean must equal the plain mean of each variant's rewards exactly.
    plane = env.plane(clock, burn_in=10_000)
    name = plane.experiment_names()[0]
    rows, _ = churn.make_churn(600, seed=21)
    rng = np.random.default_rng(3)

    async def scenario():
        await plane.start()
        try:
            served = await serve(plane, rows)
            rewards = {}
            for p in served:
                r = float(rng.random() < RATES[p["variant"]])
                rewards[p["request_id"]] = (p["variant"], r)
                await plane.rewards({"request_id": p["request_id"], "reward": r, "token": p["reward_token"]})
            await plane.monitor_now()
            out = {t: await plane.off_policy(name, t) for t in ("uniform", "xgb", "logreg", "logreg=0.25,xgb=0.75")}
            return served, rewards, out, await plane.state(name)
        finally:
            await plane.stop()

    served, rewards, out, state = run(scenario())
    assert {p["propensity"] for p in served} == {0.5}
    truth = {"uniform": 0.45, "xgb": 0.6, "logreg": 0.3, "logreg=0.25,xgb=0.75": 0.525}
    for target, result in out.items():
        assert result["n"] == 600
        for name_, est in result["estimates"].items():
            # Seeded; a correct estimator misses by more than 4 standard errors with p < 1e-4.
            assert abs(est["value"] - truth[target]) < 4 * est["stderr"], (target, name_, est)
            assert est["ci_low"] < est["value"] < est["ci_high"]
    assert out["xgb"]["estimates"]["ips"]["ess"] == pytest.approx(sum(1 for v, _ in rewards.values() if v == "xgb"))
    for v in state["variants"]:
        mine = [r for (variant, r) in rewards.values() if variant == v["name"]]
        corrected = state["corrected_means"][v["name"]]
        assert corrected["mean"] == pytest.approx(np.mean(mine)) and corrected["n_served"] == len(mine)
        assert corrected["ci_low"] < corrected["mean"] < corrected["ci_high"]


def test_targets_the_log_cannot_support_are_refused(env):
    clock = Clock()
    plane = env.plane(clock, variants=[BASE["variants"][0], {**BASE["variants"][1], "role": "shadow"}])
    name = plane.experiment_names()[0]
    rows, _ = churn.make_churn(30, seed=22)

    async def scenario():
        await plane.start()
        try:
            empty = await _refusal(plane.off_policy(name, "uniform"))
            for p in await serve(plane, rows):
                await plane.rewards({"request_id": p["request_id"], "reward": 1, "token": p["reward_token"]})
            never = await _refusal(plane.off_policy(name, "xgb"))
            unknown = await _refusal(plane.off_policy(name, "nope"))
            bad_shares = await _refusal(plane.off_policy(name, "logreg=0.5,xgb=0.2"))
            fine = await plane.off_policy(name, "logreg")
            # Uniform means uniform over the live variants: the shadow, never served, is not in it.
            uniform = await plane.off_policy(name, "uniform")
            return empty, never, unknown, bad_shares, fine, uniform
        finally:
            await plane.stop()

    empty, never, unknown, bad_shares, fine, uniform = run(scenario())
    assert uniform["target"] == "uniform" and uniform["estimates"]["snips"]["value"] == 1.0
    assert empty.code == "poor_overlap" and "no logged rewards" in empty.message
    assert never.code == "poor_overlap" and "'xgb'" in never.message and "never served" in never.message
    assert unknown.code == "invalid_target" and "nope" in unknown.message
    assert bad_shares.code == "invalid_target"
    assert fine["estimates"]["snips"]["value"] == 1.0


async def _refusal(coro) -> Unprocessable:
    with pytest.raises(Unprocessable) as err:
        await coro
    return err.value


def test_with_a_default_reward_only_requests_whose_window_ended_count(env):
    """Conversions send feedback, silence takes the default 0 after the window: while the window
    is open, keeping the converted requests and dropping the silent ones would read ~1."""
    clock = Clock()
    plane = env.plane(clock, reward={"type": "bernoulli", "window_s": 60, "default": 0}, burn_in=10_000)
    name = plane.experiment_names()[0]
    rows, _ = churn.make_churn(40, seed=23)

    async def scenario():
        await plane.start()
        try:
            served = await serve(plane, rows)
            for p in served[:10]:  # a quarter convert
                await plane.rewards({"request_id": p["request_id"], "reward": 1, "token": p["reward_token"]})
            early = await _refusal(plane.off_policy(name, "uniform"))
            clock.t += 61
            await plane.refresh()  # the sweeper gives the silent 30 their default
            return served, early, await plane.off_policy(name, "uniform")
        finally:
            await plane.stop()

    served, early, final = run(scenario())
    assert early.code == "poor_overlap" and "no logged rewards" in early.message  # nothing final yet
    assert final["n"] == 40
    assert final["estimates"]["snips"]["value"] == pytest.approx(10 / 40)
