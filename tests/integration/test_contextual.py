"""Contextual routing through the HTTP app (real Redis, real models, no Ray): in a world where
one variant is better for one plan and the other for another, each segment finds and promotes
its own champion, the propensities the client gets are the shares of its segment, and the
state shows the routing table. Rewards are seeded draws (a fake only for the users)."""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from gateway.api.app import create_app
from gateway.dataplane.control import Control
from gateway.schemas import PromoteRequest
from gateway.sim import churn
from tests.planes import Clock, env, run  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.integration

# Reward rates by plan and variant: logreg wins on basic, xgb on pro; enterprise is a tie.
RATES = {"basic": {"logreg": 0.8, "xgb": 0.4}, "pro": {"logreg": 0.4, "xgb": 0.8},
         "enterprise": {"logreg": 0.5, "xgb": 0.5}}


def test_each_segment_promotes_its_own_champion(env):
    clock = Clock()
    plane = env.plane(clock, algorithm="contextual_thompson", context=["plan"], context_strength=20, segment_burn_in=30,
                      min_weight=0.05, promotion={"min_samples": 60, "prob_best": 0.95, "max_expected_loss": 0.01})
    name = plane.experiment_names()[0]
    app = create_app(plane)
    rows, _ = churn.make_churn(4000, seed=41)
    rng = np.random.default_rng(41)

    async def scenario():
        await plane.start()
        served = []
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
                for i, row in enumerate(rows):
                    p = (await c.post(f"/v1/experiments/{name}/predict", json={"instances": [row]})).json()
                    plan = row["plan"] if isinstance(row, dict) else row[3]
                    r = float(rng.random() < RATES[plan][p["variant"]])
                    await c.post("/v1/rewards", json={"request_id": p["request_id"], "reward": r, "token": p["reward_token"]})
                    served.append((plan, p["variant"], p["propensity"]))
                    if i % 20 != 19:
                        continue
                    clock.t += 1
                    await plane.refresh()
                    # Stop on the refresh that shows both champions (the plane refreshes only here):
                    # routing must follow at once.
                    state = (await c.get(f"/v1/experiments/{name}")).json()
                    if all((state["segments"].get(f"plan={p}") or {}).get("champion") for p in ("basic", "pro")):
                        break
                final = (await c.get(f"/v1/experiments/{name}")).json()
                after = []
                for row in rows[-200:]:
                    p = (await c.post(f"/v1/experiments/{name}/predict", json={"instances": [row]})).json()
                    after.append((row["plan"] if isinstance(row, dict) else row[3], p["variant"], p["propensity"]))
                # An operator's promotion governs every segment.
                await Control(plane).promote(name, PromoteRequest(variant="xgb"))
                overruled = [(await c.post(f"/v1/experiments/{name}/predict", json={"instances": [row]})).json()
                             for row in rows[-50:]]
                return served, final, after, overruled
        finally:
            await plane.stop()

    served, state, after, overruled = run(scenario())
    assert {(p["variant"], p["propensity"]) for p in overruled} == {("xgb", 1.0)}
    table = state["segments"]
    assert table["plan=basic"]["champion"] == "logreg"
    assert table["plan=pro"]["champion"] == "xgb"
    assert table["plan=enterprise"]["champion"] is None  # a tie: nothing to promote
    assert state["status"] == "exploring" and state["champion"] is None  # no single winner overall
    promoted = [h for h in state["history"] if h["action"] == "promote_segment"]
    assert sorted((h["segment"], h["variant"]) for h in promoted) == [("plan=basic", "logreg"), ("plan=pro", "xgb")]
    assert all(h["evidence"]["segment"]["n_segments"] == 3 for h in promoted)  # Bonferroni over the 3 plans
    # Once a segment has its champion, all its requests go there, with propensity 1.
    for plan, variant, propensity in after:
        if plan in ("basic", "pro"):
            assert (variant, propensity) == ({"basic": "logreg", "pro": "xgb"}[plan], 1.0)
    # Before: every propensity is the share the segment's table gave (uniform in burn-in).
    assert {p for plan, v, p in served[:20]} == {0.5}
    assert sum(1 for plan, v, p in served if plan == "enterprise" and v == "xgb") > 0
