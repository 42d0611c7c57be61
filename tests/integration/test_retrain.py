"""Continuous learning through HTTP: when the world drifts, the retrainer adds a challenger
trained on the new world, and the bandit promotes it."""
from __future__ import annotations

import time

import pytest

from gateway.sim.churn import make_churn
from tests.integration.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.integration


def test_a_drift_makes_a_retrained_challenger_get_added_and_promoted(client):
    # The drifted world, seeded. The retrainer runs beside the traffic, so how many rows pass
    # before the challenger is added depends on the machine's speed: the budget is generous and
    # the loop stops at the promotion.
    rows, labels = make_churn(8000, seed=21, concept=1)
    added = promoted = None
    pending: list[dict] = []
    for i, (row, label) in enumerate(zip(rows, labels)):
        out = client.post("/v1/experiments/drift/predict", json={"instances": [row]}).json()
        pending.append({"request_id": out["request_id"], "token": out["reward_token"], "label": int(label)})
        if len(pending) == 50:
            assert client.post("/v1/rewards", json={"rewards": pending}).json()["accepted"] == 50
            pending = []
            state = client.get("/v1/experiments/drift").json()
            actions = [(h["action"], h.get("variant")) for h in state["history"]]
            added = next((v for a, v in actions if a == "challenger_added"), None)
            promoted = next((v for a, v in actions if a == "promote" and v == added), None) if added else None
            if promoted:
                break
            time.sleep(0.05)
    assert added is not None, "no challenger was added"
    entry = next(h for h in state["history"] if h["action"] == "challenger_added")
    assert entry["by"] == "retrainer" and entry["compared_against"] in {"logreg", "xgb"}
    assert entry["metrics"]["xgboost"]["accuracy"] >= entry["metrics"]["champion"]["accuracy"] + 0.05
    assert promoted == added and state["champion"] == added
    names = [v["name"] for v in state["variants"]]
    assert names[:2] == ["logreg", "xgb"] and added in names
    served = {client.post("/v1/experiments/drift/predict", json={"instances": [rows[0]]}).json()["variant"] for _ in range(10)}
    assert served == {added}


def test_an_operator_can_ask_for_a_retraining(client):
    r = client.post("/v1/experiments/churn/retrain", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outcome"] in {"skipped", "rejected", "admitted"}
    history = client.get("/v1/experiments/churn").json()["history"]
    assert history[-1]["by"] == "retrainer" and history[-1]["trigger"] == "admin"
    assert client.post("/v1/experiments/churn/retrain").status_code == 401
