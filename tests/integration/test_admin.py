"""The admin API: bearer-token auth, and operator decisions that move traffic and are recorded."""
from __future__ import annotations

import pytest

from tests.integration.conftest import ADMIN_TOKEN, ROW

pytestmark = pytest.mark.integration

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def served(client, n=30):
    return {client.post("/v1/experiments/ops/predict", json={"instances": [ROW]}).json()["variant"] for _ in range(n)}


def admin(client, path, body=None, method="POST", headers=AUTH):
    return client.request(method, f"/v1/experiments/ops{path}", json=body, headers=headers)


@pytest.mark.parametrize("path,method", [("/promote", "POST"), ("/rollback", "POST"), ("/pause", "POST"),
                                         ("/resume", "POST"), ("/variants/a", "DELETE")])
def test_admin_routes_need_the_token(client, path, method):
    before = client.get("/v1/experiments/ops").json()
    r = admin(client, path, {"variant": "a"}, method, headers={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = admin(client, path, {"variant": "a"}, method, headers={"authorization": "Bearer wrong"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/experiments/ops").json() == before


def test_operator_decisions_move_traffic_and_are_recorded(client):
    seen = len(client.get("/v1/experiments/ops").json()["history"])
    r = admin(client, "/promote", {"variant": "b", "reason": "offline eval"})
    assert r.status_code == 200 and r.json()["status"] == "promoted" and r.json()["champion"] == "b"
    assert served(client) == {"b"}

    assert admin(client, "/promote", {"variant": "c"}).json()["champion"] == "c"
    assert served(client) == {"c"}
    back = admin(client, "/rollback").json()
    assert back["champion"] == "b" and back["status"] == "promoted"  # the previous champion returns

    paused = admin(client, "/pause").json()
    assert paused["status"] == "paused" and served(client) == {"b"}  # the split stands frozen
    assert admin(client, "/pause").status_code == 409
    assert admin(client, "/resume").json()["status"] == "promoted"

    assert admin(client, "/variants/b", method="DELETE").status_code == 409  # the champion
    retired = admin(client, "/variants/a", method="DELETE").json()
    assert next(v for v in retired["variants"] if v["name"] == "a")["traffic_share"] == 0.0
    assert admin(client, "/promote", {"variant": "a"}).status_code == 409  # retired
    assert admin(client, "/promote", {"variant": "nope"}).status_code == 404
    assert admin(client, "/promote", {}).status_code == 422

    history = client.get("/v1/experiments/ops").json()["history"][seen:]
    assert [(h["action"], h.get("variant")) for h in history] == [
        ("promote", "b"), ("promote", "c"), ("rollback", "b"), ("pause", None), ("resume", None), ("retire", "a"),
    ]
    assert history[0]["reason"] == "offline eval" and all(h["by"] == "admin" for h in history)


def test_a_challenger_is_added_from_an_artifact_and_served(client, tmp_path):
    from gateway.learning import artifacts
    from gateway.learning.features import FeatureEncoder
    from gateway.policy import load_policy_file
    from gateway.sim.churn import make_churn
    from tests.integration.conftest import POLICIES

    policy = load_policy_file(POLICIES / "ops.yaml")
    rows, y = make_churn(400, seed=5)
    model = artifacts.train("logistic_regression", FeatureEncoder(policy.features).encode(rows), y)
    path = tmp_path / "challenger.skops"
    digest = artifacts.save_model(model, path)

    tampered = tmp_path / "tampered.skops"
    tampered.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
    refused = admin(client, "/variants", {"name": "d", "model": str(tampered), "sha256": digest})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_artifact"
    assert admin(client, "/variants", {"name": "d", "model": str(path)}, headers={}).status_code == 401

    added = admin(client, "/variants", {"name": "d", "model": str(path), "sha256": digest})
    assert added.status_code == 200, added.text
    assert "d" in [v["name"] for v in added.json()["variants"]]
    assert added.json()["history"][-1]["action"] == "challenger_added"
    assert admin(client, "/variants", {"name": "d", "model": str(path)}).status_code == 409
    # Exploration reopens with 'd' among at most 4 live arms: P('d' unseen in 60 draws) <= 0.75**60 < 1e-7.
    served = {client.post("/v1/experiments/ops/predict", json={"instances": [ROW]}).json()["variant"] for _ in range(60)}
    assert "d" in served
