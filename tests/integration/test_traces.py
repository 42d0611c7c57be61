"""One trace per request, exported over real OTLP/HTTP from the router and variant replicas."""
from __future__ import annotations

import secrets

import pytest

from tests.integration.conftest import ROW

pytestmark = pytest.mark.integration

PREDICT_SPAN = "POST /v1/experiments/{experiment}/predict"


def test_a_prediction_is_one_trace(client, collector):
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    r = client.post(
        "/v1/experiments/churn/predict",
        json={"instances": [ROW]},
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    assert r.status_code == 200
    expected = {PREDICT_SPAN, "bandit.select", "variant.predict", "redis.record_prediction"}
    trace = collector.wait_for_trace(trace_id, expected)
    assert expected <= set(trace), f"spans that arrived: {sorted(trace)}"
    server = trace[PREDICT_SPAN]
    assert server["parent_span_id"] == parent_id  # the caller's trace is continued
    assert server["attributes"]["http.route"] == "/v1/experiments/{experiment}/predict"
    assert server["attributes"]["http.response.status_code"] == 200
    assert server["resource"]["gateway.component"] == "router"
    select = trace["bandit.select"]
    assert select["parent_span_id"] == server["span_id"]
    assert select["attributes"]["gateway.variant"] == r.json()["variant"]
    assert select["attributes"]["gateway.propensity"] == r.json()["propensity"]
    variant = trace["variant.predict"]
    assert variant["parent_span_id"] == server["span_id"]
    # The default placement runs the model inside the router replica (no Ray hop);
    # test_replica_crash.py checks the trace across the hop with placement `deployment`.
    assert variant["resource"]["gateway.component"] == "router"
    assert variant["attributes"]["gateway.variant"] == r.json()["variant"]
    assert trace["redis.record_prediction"]["parent_span_id"] == server["span_id"]


@pytest.mark.parametrize("traceparent", ["00-zz-not-a-trace-01", "00-" + "a" * 600 + "-01"])
def test_a_malformed_or_oversized_traceparent_starts_a_new_trace(client, collector, traceparent):
    r = client.post("/v1/experiments/churn/predict", json={"instances": [ROW]}, headers={"traceparent": traceparent})
    assert r.status_code == 200
    rid = r.json()["request_id"]
    spans = collector.wait_for(lambda s: s["name"] == PREDICT_SPAN and s["attributes"].get("gateway.request_id") == rid)
    assert spans and spans[0]["parent_span_id"] is None


def test_a_reward_links_to_the_span_of_the_prediction_it_rewards(client, collector):
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    out = client.post("/v1/experiments/churn/predict", json={"instances": [ROW]},
                      headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}).json()
    predict_span = collector.wait_for_trace(trace_id, {PREDICT_SPAN})[PREDICT_SPAN]
    r = client.post("/v1/rewards", json={"request_id": out["request_id"], "reward": 1, "token": out["reward_token"]})
    assert r.status_code == 200
    rewards = collector.wait_for(lambda s: s["name"] == "POST /v1/rewards" and (trace_id, predict_span["span_id"]) in s["links"])
    assert len(rewards) == 1 and rewards[0]["trace_id"] != trace_id
