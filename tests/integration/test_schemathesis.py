"""Fuzz the session gateway's API from its own /openapi.json with schemathesis: no server error,
and every answer has a documented status, content type and body.

Other test files share this gateway and rely on the state of its experiments, so the fuzzing
keeps away from what they steer:
- predictions and inference are sent only to 'churn' (whose tests look at changes they make
  themselves) and to unknown experiments; never to the others ('race' is promoted by the HTTP
  tests, 'ops' steered by the admin and CLI tests, 'faults' has its failures counted, ...);
- admin routes are fuzzed only without the valid token: every answer must be 401 or 403.
Read-only routes see every experiment.
"""
from __future__ import annotations

import copy
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.api.openapi import openapi_document
from tests.integration.conftest import ADMIN_TOKEN, ROW

pytestmark = pytest.mark.integration

UNKNOWN_EXPERIMENT = "no-such-experiment"
UNKNOWN_VARIANT = "no-such-variant"
WRITABLE_EXPERIMENTS = ["churn", UNKNOWN_EXPERIMENT]
# Examples per operation: the most where the inputs are richest; admin routes answer 401/403
# before reading anything; plotly.min.js is megabytes, a few fetches show it is served.
MAX_EXAMPLES = {"write": 25, "read": 15, "admin": 10, "asset": 3}

FEATURES = ["tenure", "monthly_charges", "support_calls", "plan"]
INFER_EXAMPLE = {
    "id": "schemathesis",
    "inputs": [
        *({"name": n, "shape": [1], "datatype": "FP64", "data": [float(v)]} for n, v in zip(FEATURES[:3], ROW[:3])),
        {"name": "plan", "shape": [1], "datatype": "BYTES", "data": [ROW[3]]},
    ],
}
# Documented 503s: an inference whose variant failed or no variant is healthy, a model not loaded yet.
RETRYABLE_503 = {"variant_unavailable", "no_healthy_variant", "not_ready"}


def fetch_document(gateway) -> dict[str, Any]:
    """The document as the gateway serves it."""
    with gateway.client() as c:
        r = c.get("/openapi.json")
    assert r.status_code == 200, f"GET /openapi.json answered {r.status_code}: {r.text[:300]}"
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def _writes(method: str, path: str) -> bool:
    return method != "get" and "{experiment}" in path


def fuzzable(doc: dict[str, Any], variants: list[str]) -> dict[str, Any]:
    """The served document, with the path parameters narrowed to what this test may touch."""
    doc = copy.deepcopy(doc)
    served = doc["components"]["parameters"]["Experiment"]["schema"].get("enum")
    assert served and "churn" in served, f"the served document names no experiments: {served}"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            params = []
            for p in op.get("parameters", []):
                ref = p.get("$ref", "")
                if ref.endswith("/Experiment"):
                    p = copy.deepcopy(doc["components"]["parameters"]["Experiment"])
                    writes = _writes(method, path) and "security" not in op
                    p["schema"]["enum"] = WRITABLE_EXPERIMENTS if writes else [*served, UNKNOWN_EXPERIMENT]
                elif ref.endswith("/Variant"):
                    p = copy.deepcopy(doc["components"]["parameters"]["Variant"])
                    p["schema"]["enum"] = [*variants, UNKNOWN_VARIANT]
                params.append(p)
            if params:
                op["parameters"] = params
    return doc


def _retryable(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):  # our API: the code says why
        return error.get("code") in RETRYABLE_503
    # The V2 routes' {"error": "message"}, from the same errors.
    return isinstance(error, str) and any(w in error for w in ("retry", "not ready", "not loaded"))


@schemathesis.check
def no_server_error_but_documented_503(ctx, response, case):
    """not_a_server_error, except for a 503 that the document declares for the operation and whose
    body says to retry (a variant failed or none is healthy, a model is not loaded yet)."""
    if response.status_code == 503 and "503" in case.operation.definition.raw.get("responses", {}):
        try:
            body = response.json()
        except ValueError:
            body = None
        if _retryable(body):
            return None
    return not_a_server_error(ctx, response, case)


JSON_CHECKS = [no_server_error_but_documented_503, status_code_conformance, content_type_conformance,
               response_schema_conformance]
# /metrics, /dashboard and its scripts are not JSON: their bodies are not checked against a schema.
TEXT_CHECKS = [no_server_error_but_documented_503, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def served_experiments(gateway) -> list[str]:
    with gateway.client() as c:
        return c.get("/healthz").json()["experiments"]


@pytest.fixture(scope="module")
def api_schema(gateway, served_experiments):
    with gateway.client() as c:
        states = c.get("/v1/experiments").json()["experiments"]
    variants = sorted({v["name"] for s in states for v in s["variants"]})
    doc = fuzzable(fetch_document(gateway), variants)
    return schemathesis.openapi.from_dict(doc, config=SchemathesisConfig.from_dict({"base-url": gateway.url}))


# The operations as the document describes them (the served one must have the same: see
# test_the_served_document_describes_these_operations).
OPERATIONS = sorted(
    (method.upper(), path) for path, item in openapi_document()["paths"].items() for method in item
)


def test_the_served_document_describes_these_operations(gateway):
    served = fetch_document(gateway)
    assert sorted((m.upper(), p) for p, item in served["paths"].items() for m in item) == OPERATIONS


def _strategy(operation):
    """Valid and invalid requests: negative cases only where there is something to break."""
    positive = operation.as_strategy(GenerationMode.POSITIVE)
    raw = operation.definition.raw
    if raw.get("parameters") or raw.get("requestBody"):
        return st.one_of(positive, operation.as_strategy(GenerationMode.NEGATIVE))
    return positive


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_api_conforms_to_its_openapi_document(api_schema, served_experiments, gateway, method, path):
    operation = api_schema[path][method]
    raw = operation.definition.raw
    admin = "security" in raw
    writes = _writes(method.lower(), path) and not admin
    protected = set(served_experiments) - set(WRITABLE_EXPERIMENTS)
    is_json = "application/json" in raw["responses"]["200"].get("content", {})
    checks = JSON_CHECKS if is_json else TEXT_CHECKS
    kind = "asset" if path.startswith("/dashboard/") else "admin" if admin else "read" if method == "GET" else "write"

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES[kind],
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking: bounded time
        print_blob=False,
    )
    @hypothesis.given(case=_strategy(operation))
    def fuzz(case):
        headers = {k.lower(): v for k, v in (case.headers or {}).items()}
        assert ADMIN_TOKEN not in str(headers.get("authorization", "")), "never fuzz with the valid admin token"
        if writes and (case.path_parameters or {}).get("experiment") in protected:
            hypothesis.reject()  # a negative case that happened on an experiment other tests rely on
        response = case.call_and_validate(base_url=gateway.url, checks=checks, timeout=30)
        if admin:
            assert response.status_code in (401, 403), f"admin route answered {response.status_code} without the token"

    fuzz()


def test_real_answers_conform(gateway, api_schema):
    """The answers fuzzing rarely reaches (a served prediction, feedback accepted and duplicate,
    a batch, V2 inference) match the document."""

    def conforms(method: str, path: str, response: httpx.Response, status: int = 200) -> dict[str, Any]:
        assert response.status_code == status, response.text
        api_schema[path][method].validate_response(response)
        return response.json()

    with gateway.client() as c:
        predict = "/v1/experiments/{experiment}/predict"
        out = conforms("POST", predict, c.post("/v1/experiments/churn/predict", json={"instances": [ROW, ROW]}))
        item = {"request_id": out["request_id"], "reward": 1.0, "token": out["reward_token"]}
        assert conforms("POST", "/v1/rewards", c.post("/v1/rewards", json=item))["status"] == "accepted"
        assert conforms("POST", "/reward", c.post("/reward", json=item))["status"] == "duplicate"
        other = conforms("POST", predict, c.post("/v1/experiments/churn/predict", json={"instances": [ROW]}))
        batch = {"rewards": [
            item,
            {"request_id": other["request_id"], "label": other["predictions"], "token": other["reward_token"]},
            {"request_id": other["request_id"], "reward": 1.0, "token": "forged.0"},
            {"request_id": "x", "reward": 7.0},
        ]}
        results = conforms("POST", "/v1/rewards", c.post("/v1/rewards", json=batch))
        assert [r["status"] for r in results["results"]] == ["duplicate", "accepted", "rejected", "rejected"]
        conforms("POST", "/v1/rewards", c.post("/v1/rewards", json={"request_id": "x", "reward": 1}), 403)
        conforms("POST", predict, c.post("/v1/experiments/churn/predict", json={"instances": [[1]]}), 422)

        infer = conforms("POST", "/v2/models/{experiment}/infer", c.post("/v2/models/churn/infer", json=INFER_EXAMPLE))
        assert infer["parameters"]["client_id"] == "schemathesis" and "reward_token" in infer["parameters"]
        named = c.post("/v2/models/churn/versions/xgb/infer", json=INFER_EXAMPLE)
        assert conforms("POST", "/v2/models/{experiment}/versions/{variant}/infer", named)["model_version"] == "xgb"
        conforms("POST", "/v2/models/{experiment}/infer", c.post("/v2/models/churn/infer", json={"inputs": []}), 400)

        for name in ("churn", "faults", "ops", "race"):
            conforms("GET", "/v1/experiments/{experiment}", c.get(f"/v1/experiments/{name}"))
            conforms("GET", "/v1/experiments/{experiment}/series", c.get(f"/v1/experiments/{name}/series"))
        conforms("POST", "/v1/experiments/{experiment}/pause", c.post("/v1/experiments/ops/pause"), 401)
        bad = {"authorization": "Bearer not-the-token"}
        conforms("POST", "/v1/experiments/{experiment}/pause", c.post("/v1/experiments/ops/pause", headers=bad), 403)
