"""One prediction is one trace, proven against a real OTLP backend: the gateway exports OTLP/HTTP
to Arize Phoenix and the trace is read back through Phoenix's REST API
(GET /v1/projects/{project}/spans), not from anything the test itself received."""
from __future__ import annotations

import os
import secrets
import time

import httpx
import pytest

from tests.integration.conftest import (
    ADMIN_TOKEN,
    POLICIES,
    ROW,
    TEST_SECRET,
    start_gateway,
)

pytestmark = pytest.mark.integration

PREDICT_SPAN = "POST /v1/experiments/{experiment}/predict"
EXPECTED = {PREDICT_SPAN, "bandit.select", "redis.record_prediction", "variant.predict"}


def phoenix_trace(url: str, project: str, trace_id: str, names: set[str], timeout_s: float = 60) -> dict[str, dict]:
    """The trace's spans by name, once every expected name has arrived in Phoenix."""
    deadline = time.monotonic() + timeout_s
    spans: list[dict] = []
    last = ""
    with httpx.Client(base_url=url, timeout=10) as c:
        while time.monotonic() < deadline:
            # 404 until the first span of the project has been ingested.
            r = c.get(f"/v1/projects/{project}/spans", params={"trace_id": trace_id, "limit": 100})
            last = f"{r.status_code} {r.text[:300]}"
            if r.status_code == 200:
                spans = [s for s in r.json()["data"] if s["context"]["trace_id"] == trace_id]
                if names <= {s["name"] for s in spans}:
                    break
            time.sleep(0.5)
    by_name: dict[str, dict] = {}
    for s in spans:
        assert s["name"] not in by_name, f"two {s['name']!r} spans in one prediction's trace: {spans}"
        by_name[s["name"]] = s
    assert names <= set(by_name), (
        f"spans of trace {trace_id} in Phoenix project {project!r} after {timeout_s}s: {sorted(by_name)}; "
        f"last answer: {last}"
    )
    return by_name


def test_a_prediction_is_one_trace_in_phoenix(phoenix_url, tmp_path):
    project = f"gateway-e2e-{secrets.token_hex(4)}"  # Phoenix files spans by this resource attribute
    resource = f"openinference.project.name={project}"
    if os.environ.get("OTEL_RESOURCE_ATTRIBUTES"):
        resource = f"{os.environ['OTEL_RESOURCE_ATTRIBUTES']},{resource}"
    env = {
        "GATEWAY_REWARD_SECRET": TEST_SECRET,
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{phoenix_url}/v1/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_RESOURCE_ATTRIBUTES": resource,
    }
    gw = start_gateway(POLICIES / "churn.yaml", tmp_path / "state", env)
    try:
        trace_id, caller_span_id = secrets.token_hex(16), secrets.token_hex(8)
        with gw.client() as c:
            r = c.post(
                "/v1/experiments/churn/predict",
                json={"instances": [ROW]},
                headers={"traceparent": f"00-{trace_id}-{caller_span_id}-01"},
            )
        assert r.status_code == 200, r.text
        answer = r.json()

        trace = phoenix_trace(phoenix_url, project, trace_id, EXPECTED)

        assert {s["context"]["trace_id"] for s in trace.values()} == {trace_id}
        server = trace[PREDICT_SPAN]
        assert server["parent_id"] == caller_span_id  # the caller's trace is continued
        assert server["attributes"]["http.route"] == "/v1/experiments/{experiment}/predict"
        assert server["attributes"]["http.response.status_code"] == 200
        assert server["attributes"]["gateway.request_id"] == answer["request_id"]
        server_id = server["context"]["span_id"]

        select = trace["bandit.select"]
        assert select["parent_id"] == server_id
        assert select["attributes"]["gateway.variant"] == answer["variant"]
        assert trace["redis.record_prediction"]["parent_id"] == server_id

        variant = trace["variant.predict"]
        assert variant["parent_id"] == server_id
        assert variant["attributes"]["gateway.variant"] == answer["variant"]
        # Phoenix keeps no resource attributes (only the project name they select), so it cannot
        # show which process ran the model (tests/integration/test_traces.py and
        # test_replica_crash.py check that for both placements). What it does show: this span
        # carries the model's sha256, which the gateway's serving paths record; the bare
        # LoadedVariant.predict used by tools records no attributes at all.
        assert variant["attributes"]["gateway.experiment"] == "churn"
        assert len(variant["attributes"]["gateway.model_sha256"]) == 64
    finally:
        code = gw.stop()
    assert code == 0, f"gateway serve did not stop cleanly ({code}):\n{gw.log.read_text()[-3000:]}"
