"""State survives a gateway restart: posteriors, champion, history and served requests."""
from __future__ import annotations

import numpy as np
import pytest

from tests.integration.conftest import POLICIES, ROW, start_gateway

pytestmark = pytest.mark.integration


def _snapshot(client):
    s = client.get("/v1/experiments/race").json()
    return {k: s[k] for k in ("status", "champion", "history", "variants", "started_at")}


def test_state_survives_a_restart(tmp_path):
    state_dir = tmp_path / "state"
    rng = np.random.default_rng(7)
    gw = start_gateway(POLICIES / "race.yaml", state_dir)  # no reward secret set: made once, kept in Redis
    try:
        with gw.client() as c:
            outs = [c.post("/v1/experiments/race/predict", json={"instances": [ROW]}).json() for _ in range(30)]
            items = [{"request_id": o["request_id"], "token": o["reward_token"], "reward": float(rng.random() < 0.5)}
                     for o in outs[:20]]
            assert c.post("/v1/rewards", json={"rewards": items}).json()["accepted"] == 20
            before = _snapshot(c)
    finally:
        assert gw.stop() == 0
    gw = start_gateway(POLICIES / "race.yaml", state_dir)
    try:
        with gw.client() as c:
            assert _snapshot(c) == before
            # A prediction served before the restart can still be rewarded, exactly once.
            late = {"request_id": outs[25]["request_id"], "token": outs[25]["reward_token"], "reward": 1.0}
            assert c.post("/v1/rewards", json=late).json()["status"] == "accepted"
            assert c.post("/v1/rewards", json=late).json()["status"] == "duplicate"
            assert c.post("/v1/rewards", json=items[0]).json()["status"] == "duplicate"
            after = {v["name"]: v["rewards"] for v in c.get("/v1/experiments/race").json()["variants"]}
            assert sum(after.values()) == 21
    finally:
        assert gw.stop() == 0
