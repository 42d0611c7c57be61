"""Variance reduction (CUPED) end to end on a real DataPlane (real Redis, real models, no Ray):
each request's covariate is kept with it, the reward script (and the default-reward sweeper)
sums it with the reward per variant exactly, and the promotion rule reads those sums."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.decisions import allocation
from gateway.sim import churn
from tests.planes import Clock, env, run, serve  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.integration


def test_the_covariate_is_summed_with_each_reward_exactly_once(env):
    clock = Clock()
    plane = env.plane(clock, variance_reduction={"covariate": "tenure"},
                      reward={"type": "bernoulli", "window_s": 60, "default": 0})
    name = plane.experiment_names()[0]
    rows, _ = churn.make_churn(60, seed=51)

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
            clock.t += 61
            await plane.refresh()  # the other 20 take the default reward, 0
            snap = (await plane.store.snapshots([name]))[name]
            return served, rewarded, snap, plane.runtime(name).policy
        finally:
            await plane.stop()

    served, rewarded, snap, policy = run(scenario())
    for variant in {p["variant"] for p in served}:
        mine = [(row[0], rewarded.get(p["request_id"], 0.0)) for p, row in zip(served, rows) if p["variant"] == variant]
        x = np.array([m[0] for m in mine])
        y = np.array([m[1] for m in mine])
        counts = snap.arms[variant]
        assert counts.rewards == len(mine)
        assert counts.x_sum == pytest.approx(x.sum()) and counts.xx_sum == pytest.approx((x * x).sum())
        assert counts.xy_sum == pytest.approx((x * y).sum())
    # The promotion rule takes the adjusted test: its evidence says so.
    decision = allocation.promotion_decision(policy, snap.arms, snap.meta, clock.t)
    assert "cuped" in decision.evidence
