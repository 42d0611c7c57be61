"""Prometheus metrics and the dashboard's time series, from a real gateway."""
from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ROW

pytestmark = pytest.mark.integration


def scrape(client) -> dict[str, list]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def test_metrics_follow_prometheus_conventions_and_move_with_traffic(client):
    out = client.post("/v1/experiments/churn/predict", json={"instances": [ROW]}).json()
    client.post("/v1/rewards", json={"request_id": out["request_id"], "reward": 1, "token": out["reward_token"]})
    client.post("/v1/experiments/churn/predict", json={"instances": [[1]]})  # a 422
    deadline = time.monotonic() + 15
    while True:  # gauges come from the state the router refreshes every 2 s
        families = scrape(client)
        if "gateway_prob_best" in families or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    served = [s for s in families["gateway_predictions"] if s.name == "gateway_predictions_total"]
    assert any(s.labels == {"experiment": "churn", "variant": out["variant"]} and s.value >= 1 for s in served)
    buckets = [s for s in families["http_server_request_duration_seconds"] if s.name.endswith("_bucket")]
    assert any(s.labels["http_route"] == "/v1/experiments/{experiment}/predict" for s in buckets)
    errors = [s for s in families["gateway_errors"] if s.name == "gateway_errors_total"]
    assert any(s.labels["code"] == "invalid_instances" for s in errors)
    rewards = {s.labels["outcome"]: s.value for s in families["gateway_rewards"] if s.name == "gateway_rewards_total"}
    assert rewards.get("accepted", 0) >= 1
    reward_sum = {s.labels["variant"]: s.value for s in families["gateway_reward_sum"] if s.labels["experiment"] == "churn"}
    assert reward_sum.get(out["variant"], 0) >= 1
    prob_best = {s.labels["variant"]: s.value for s in families["gateway_prob_best"] if s.labels["experiment"] == "churn"}
    assert set(prob_best) == {"logreg", "xgb"} and abs(sum(prob_best.values()) - 1) < 1e-9
    shares = {s.labels["variant"]: s.value for s in families["gateway_traffic_share"] if s.labels["experiment"] == "churn"}
    assert abs(sum(shares.values()) - 1) < 1e-9


def test_the_series_grows_every_few_seconds(client):
    def points() -> list[dict]:
        return client.get("/v1/experiments/churn/series").json()["points"]

    first = points()
    newest_then = first[-1]["t"] if first else float("-inf")
    deadline = time.monotonic() + 15  # a point every 2 s, on a machine however busy
    later = points()
    while not (later and later[-1]["t"] > newest_then) and time.monotonic() < deadline:
        time.sleep(0.5)
        later = points()
    assert later and later[-1]["t"] > newest_then
    point = later[-1]
    assert set(point["variants"]) == {"logreg", "xgb"}
    assert abs(sum(v["traffic_share"] for v in point["variants"].values()) - 1) < 1e-9
    newer = client.get("/v1/experiments/churn/series", params={"since": point["t"] - 0.001}).json()["points"]
    assert newer and newer[0]["t"] == point["t"]  # a newer point may have landed since
    assert all(p["t"] >= point["t"] for p in newer)
    assert client.get("/v1/experiments/churn/series", params={"since": "soon"}).status_code == 400
