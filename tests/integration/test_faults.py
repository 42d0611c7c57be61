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
    started = time.monotonic()
    answers = [predict(client) for _ in range(40)]
    cooldowns = int((time.monotonic() - started) / BREAKER_COOLDOWN_S)
    failures = [r for r in answers if r.status_code != 200]
    assert all(r.status_code == 503 and r.json()["error"]["code"] == "variant_unavailable" for r in failures)
    # The breaker opens after 5 consecutive failures of 'broken'; from then on 'ok' serves all,
    # but for one trial call after each cooldown (only on a machine slow enough to reach one).
    assert 1 <= len(failures) <= BREAKER_FAILURES + cooldowns
    tail = [r.json() for r in answers[-20:] if r.status_code == 200]
    assert len(tail) >= 19 and {o["variant"] for o in tail} == {"ok"}
    # While the breaker is open, 'ok' is drawn with its renormalised share: probability 1.
    assert any(o["propensity"] == 1.0 for o in tail)

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
