"""A failing variant: the circuit breaker takes it out of rotation, and a promoted champion
that breaks its guardrails is rolled back automatically, with the evidence recorded."""
from __future__ import annotations

import time

import pytest

from gateway.decisions.guardrails import BREAKER_COOLDOWN_S, BREAKER_FAILURES
from tests.integration.conftest import ADMIN_TOKEN, ROW

pytestmark = pytest.mark.integration

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def predict(client):
    return client.post("/v1/experiments/faults/predict", json={"instances": [ROW]})


def test_a_failing_variant_leaves_rotation_and_a_failing_champion_is_rolled_back(client):
    # 'broken' fails every call: the breaker opens at its BREAKER_FAILURES-th consecutive failure.
    answers = []
    while sum(r.status_code != 200 for r in answers) < BREAKER_FAILURES and len(answers) < 200:
        answers.append(predict(client))
    opened_at = time.monotonic()
    assert len(answers) < 200  # 'broken' drawn 5 times in 200 at a share near 1/2
    # From then on 'ok' serves all, but for one trial call of 'broken' after each cooldown (only
    # on a machine slow enough to reach one within these requests).
    tail = [predict(client) for _ in range(20)]
    trials = int((time.monotonic() - opened_at) / BREAKER_COOLDOWN_S)
    failures = [r for r in answers + tail if r.status_code != 200]
    assert all(r.status_code == 503 and r.json()["error"]["code"] == "variant_unavailable" for r in failures)
    served = [r.json() for r in tail if r.status_code == 200]
    assert len(served) >= len(tail) - trials and {o["variant"] for o in served} == {"ok"}
    # While the breaker is open, 'ok' is drawn with its renormalised share: probability 1.
    assert any(o["propensity"] == 1.0 for o in served)

    assert client.post("/v1/experiments/faults/promote", json={"variant": "ok"}, headers=AUTH).status_code == 200
    assert client.post("/v1/experiments/faults/promote", json={"variant": "broken"}, headers=AUTH).status_code == 200
    answers = [predict(client) for _ in range(30)]
    assert sum(r.status_code != 200 for r in answers) <= 5
    state = client.get("/v1/experiments/faults").json()
    assert state["status"] == "promoted" and state["champion"] == "ok"
    rollback = state["history"][-1]
    assert rollback["action"] == "rollback" and rollback["by"] == "guardrail" and rollback["variant"] == "ok"
    assert rollback["from_variant"] == "broken" and "circuit breaker" in rollback["reason"]
    evidence = rollback["evidence"]
    assert evidence["variant"] == "broken" and evidence["breaker_open"] and evidence["consecutive_failures"] >= 5
    assert {r.json()["variant"] for r in answers[-10:]} == {"ok"}
