"""Unit tests for gateway.api.openapi: the document is valid OpenAPI 3.0, describes exactly the
routes create_app registers, and its schemas accept the bodies the code builds."""
from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import redis.asyncio as aioredis
import schemathesis
from schemathesis.specs.openapi.definitions import OPENAPI_30
from starlette.applications import Starlette
from starlette.routing import Route

from gateway import monitoring
from gateway.api.app import create_app
from gateway.evaluation import ope
from gateway.api.oip import encode_response, model_metadata, server_metadata
from gateway.api.openapi import OPENAPI_PATH, openapi_document, openapi_routes
from gateway.dataplane import DataPlane
from gateway.dataplane.feedback import _rejected
from gateway.errors import Forbidden, NotFound, TooManyRequests, Unprocessable
from gateway.policy import parse_policy
from gateway.decisions.state import experiment_state
from gateway.store.experiments import ExperimentStore
from gateway.store.snapshot import ArmCounts, Snapshot
from gateway.dataplane.tokens import RewardTokens

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

POLICY = parse_policy(
    {
        "experiment": "churn",
        "features": [
            {"name": "tenure"},
            {"name": "plan", "type": "categorical", "values": ["basic", "pro"]},
        ],
        "holdout": {"variant": "base", "fraction": 0.05},
        "variants": [
            {"name": "base", "model": "m/base.skops"},
            {"name": "logreg", "model": "m/lr.skops"},
            {"name": "xgb", "model": "m/xgb.ubj"},
        ],
    }
)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document(["churn", "faults"])


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, m.upper()): op for path, item in doc["paths"].items() for m, op in item.items() if m in METHODS}


def app_routes() -> set[tuple[str, str]]:
    """(path, method) of every route create_app registers; built over a Redis client that never
    connects (nothing here starts the app)."""
    plane = DataPlane({}, ExperimentStore(aioredis.Redis()), {}, RewardTokens("x" * 32))
    app = create_app(plane, admin_token="t" * 16)
    out = set()
    for route in app.routes:
        assert isinstance(route, Route), f"not a plain route: {route!r}"
        out |= {(route.path, m) for m in route.methods or () if m != "HEAD"}  # Starlette adds HEAD to GET
    return out


# -- validity --------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_0(doc):
    assert doc["openapi"].startswith("3.0.")
    jsonschema.Draft4Validator(OPENAPI_30).validate(doc)
    json.dumps(doc, allow_nan=False)


def test_schemathesis_loads_every_operation(doc):
    loaded = [result.ok() for result in schemathesis.openapi.from_dict(doc).get_all_operations()]
    assert len(loaded) == len(operations(doc))


def test_every_ref_resolves(doc):
    def walk(node: Any):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                assert ref.startswith("#/"), ref
                target: Any = doc
                for part in ref[2:].split("/"):
                    assert part in target, f"unresolved {ref}"
                    target = target[part]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)


def test_every_component_schema_is_used(doc):
    text = json.dumps({k: v for k, v in doc.items() if k != "components"})
    text += json.dumps({k: v for k, v in doc["components"].items() if k != "schemas"})
    text += json.dumps(doc["components"]["schemas"])
    unused = [name for name in doc["components"]["schemas"] if f'"#/components/schemas/{name}"' not in text]
    assert unused == []


def test_operation_ids_are_unique(doc):
    ids = [op["operationId"] for op in operations(doc).values()]
    assert len(ids) == len(set(ids))


# -- coverage of the routes ----------------------------------------------------------------------


def test_every_route_of_create_app_is_documented_and_nothing_else(doc):
    documented = set(operations(doc))
    # /openapi.json is registered by create_app through openapi_routes.
    assert app_routes() | {(OPENAPI_PATH, "GET")} == documented


def test_openapi_routes_serve_the_document_with_the_served_experiments():
    names = ["churn", "race"]
    app = Starlette(routes=openapi_routes(lambda: names))

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            return await client.get(OPENAPI_PATH)

    r = asyncio.run(get())
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == json.loads(json.dumps(openapi_document(names)))
    assert r.json()["components"]["parameters"]["Experiment"]["schema"]["enum"] == names


def test_the_experiment_parameter_is_an_enum_only_when_names_are_given():
    assert "enum" not in openapi_document()["components"]["parameters"]["Experiment"]["schema"]
    assert openapi_document(["a"])["components"]["parameters"]["Experiment"]["schema"]["enum"] == ["a"]


ADMIN = {
    ("/v1/experiments/{experiment}/promote", "POST"),
    ("/v1/experiments/{experiment}/rollback", "POST"),
    ("/v1/experiments/{experiment}/pause", "POST"),
    ("/v1/experiments/{experiment}/resume", "POST"),
    ("/v1/experiments/{experiment}/variants/{variant}", "DELETE"),
    ("/v1/experiments/{experiment}/retrain", "POST"),
    ("/v1/experiments/{experiment}/variants", "POST"),
    ("/v1/experiments/{experiment}/variants/{variant}/shadow", "POST"),
    ("/v1/experiments/{experiment}/variants/{variant}/live", "POST"),
}


def test_admin_routes_and_only_they_need_the_bearer_token(doc):
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "The admin token (GATEWAY_ADMIN_TOKEN).",
    }
    for key, op in operations(doc).items():
        if key in ADMIN:
            assert op["security"] == [{"bearerAuth": []}], key
            assert {"401", "403"} <= set(op["responses"]), key
        else:
            assert "security" not in op and "401" not in op["responses"], key
    assert "security" not in doc  # no global requirement


def _error_ref(op: dict[str, Any], status: str) -> str:
    return op["responses"][status]["content"]["application/json"]["schema"]["$ref"]


def test_status_codes_per_route(doc):
    ops = operations(doc)
    predict = ops[("/v1/experiments/{experiment}/predict", "POST")]
    assert set(predict["responses"]) == {"200", "400", "404", "409", "413", "422", "503"}
    for path in ("/v1/rewards", "/reward"):
        assert set(ops[(path, "POST")]["responses"]) == {"200", "202", "400", "403", "404", "413", "422", "429", "503"}
    for key in ADMIN - {("/v1/experiments/{experiment}/retrain", "POST")}:
        assert set(ops[key]["responses"]) == {"200", "400", "401", "403", "404", "409", "413", "422"}
    retrain = ops[("/v1/experiments/{experiment}/retrain", "POST")]
    assert set(retrain["responses"]) == {"200", "400", "401", "403", "404", "409", "413", "503"}
    infer = ops[("/v2/models/{experiment}/infer", "POST")]
    assert set(infer["responses"]) == {"200", "400", "404", "409", "413", "422", "503"}
    assert set(ops[("/v1/experiments/{experiment}/series", "GET")]["responses"]) == {"200", "400", "404"}
    for (path, method), op in ops.items():
        errors = [s for s in op["responses"] if s >= "400"]
        for status in errors:
            expected = "#/components/schemas/OipError" if path.startswith("/v2") else "#/components/schemas/Error"
            assert _error_ref(op, status) == expected, (path, method, status)
        if "{experiment}" in path:
            assert "404" in op["responses"], path
        if "requestBody" in op:
            assert {"400", "413"} <= set(op["responses"]), path


def test_non_json_routes_declare_their_media_types(doc):
    ops = operations(doc)
    media = {path: next(iter(ops[(path, "GET")]["responses"]["200"]["content"])) for path in (
        "/metrics", "/dashboard", "/dashboard/plotly.min.js", "/dashboard/dashboard.js")}
    assert media == {
        "/metrics": "text/plain",
        "/dashboard": "text/html",
        "/dashboard/plotly.min.js": "text/javascript",
        "/dashboard/dashboard.js": "text/javascript",
    }


# -- the schemas accept what the code builds ------------------------------------------------------


def json_schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """Component `name` as a draft-4 JSON Schema: `nullable` spelled as a type union, refs into
    a definitions block."""

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: convert(v) for k, v in node.items() if k != "nullable"}
            if "$ref" in out:
                out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/definitions/")
            if node.get("nullable") and "type" in out:
                out["type"] = [out["type"], "null"]
            return out
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node

    definitions = convert(copy.deepcopy(doc["components"]["schemas"]))
    return {"definitions": definitions, "$ref": f"#/definitions/{name}"}


def check(doc: dict[str, Any], name: str, instance: Any) -> None:
    jsonschema.Draft4Validator(json_schema(doc, name)).validate(json.loads(json.dumps(instance)))


def test_experiment_state_matches(doc):
    arms = {"logreg": ArmCounts(rewards=10, reward_sum=4.0, requests=12), "base": ArmCounts(requests=1)}
    meta = {"status": "promoted", "champion": "logreg", "started_at": "1700000000.0"}
    history = [
        {"action": "promote", "variant": "logreg", "at": 1.0, "by": "admin", "reason": "r", "previous": None},
        {"action": "rollback", "at": 2.0, "by": "guardrail", "reason": "breaker", "variant": None,
         "from_variant": "xgb", "evidence": {"variant": "xgb", "error_rate": 1.0}},
        {"action": "pause", "at": 3.0, "by": "admin", "reason": "r", "weights": {"logreg": 1.0},
         "resume_to": "promoted"},
        {"at": 4.0, "by": "retrainer", "trigger": "labels", "rows": 900, "action": "challenger_added",
         "variant": "xgb-r1", "outcome": "admitted", "reason": None, "window": [1.0, 2.0]},
    ]
    state = served(experiment_state(POLICY, Snapshot(arms=arms, meta=meta), history))
    assert state["holdout_uplift"]["variant"] == "logreg" and state["discount"] is None
    check(doc, "ExperimentState", state)
    check(doc, "ExperimentList", {"experiments": [state]})
    fresh = served(experiment_state(POLICY, Snapshot(arms={}, meta={}), []))
    assert fresh["champion"] is None and fresh["started_at"] is None
    assert fresh["kpis"] is None and fresh["drift"] is None  # before the first monitoring pass
    check(doc, "ExperimentState", fresh)
    assert any(v["prob_best"] is None for v in fresh["variants"])  # the holdout


def test_a_state_while_a_challenger_burns_in_matches(doc):
    """Every allocation mode the router reports is in the document: here a newer arm (xgb, no
    rewards yet) burns in beside arms past their burn-in."""
    burn_in = POLICY.burn_in_rewards
    arms = {"logreg": ArmCounts(rewards=burn_in, reward_sum=burn_in / 2, requests=burn_in),
            "base": ArmCounts(rewards=burn_in, reward_sum=burn_in / 3, requests=burn_in)}
    state = served(experiment_state(POLICY, Snapshot(arms=arms, meta={"started_at": "1.0"}), []))
    assert state["allocation"] == "burn_in_challenger"
    check(doc, "ExperimentState", state)


def served(state: dict[str, Any], kpis: Any = None, drift: Any = None) -> dict[str, Any]:
    """The state as GET /v1/experiments/{e} answers it: DataPlane.state adds these."""
    return {**state, "srm": {"expected": {}, "observed": {}, "p_value": None, "mismatch": False},
            "kpis": kpis, "drift": drift}


def test_a_state_without_the_data_plane_fields_is_refused(doc):
    state = experiment_state(POLICY, Snapshot(arms={}, meta={}), [])
    with pytest.raises(jsonschema.ValidationError, match="kpis"):
        check(doc, "ExperimentState", {**served(state), "kpis": "none"})
    with pytest.raises(jsonschema.ValidationError, match="'drift' is a required property"):
        check(doc, "ExperimentState", {k: v for k, v in served(state).items() if k != "drift"})


GAUSSIAN = parse_policy(
    {
        "experiment": "revenue",
        "features": [{"name": "x"}],
        "reward": {"type": "gaussian"},
        "algorithm": "discounted_thompson",
        "discount": 0.99,
        "holdout": {"variant": "base", "fraction": 0.1},
        "variants": [{"name": "base", "model": "a.m"}, {"name": "b", "model": "b.m"}, {"name": "c", "model": "c.m"}],
    }
)


def test_gaussian_state_with_discount_matches(doc):
    arms = {"b": ArmCounts(rewards=20, reward_sum=-50.0, reward_sq_sum=200.0, requests=25), "c": ArmCounts(requests=2)}
    state = served(experiment_state(GAUSSIAN, Snapshot(arms=arms, meta={"started_at": "1.0"}), []))
    assert state["reward_type"] == "gaussian"
    assert set(state["variants"][1]["posterior"]) == {"mu", "kappa", "alpha", "beta"}
    assert state["variants"][1]["mean"] < 0  # a real-valued reward
    assert state["discount"]["gamma"] == 0.99 and set(state["discount"]["effective_rewards"]) == {"b", "c"}
    check(doc, "ExperimentState", state)
    # A posterior is one model or the other, never a mix.
    with pytest.raises(jsonschema.ValidationError):
        check(doc, "VariantState", {**state["variants"][1], "posterior": {"mu": 1.0, "alpha": 2.0, "beta": 1.0}})


def decisions(shift: float, rng: np.random.Generator, n: int = 60) -> list[dict[str, str]]:
    """Decision-log entries as the store returns them (rows and predictions as JSON)."""
    return [
        {"x": json.dumps([[float(rng.normal(shift, 1)), "pro" if rng.random() < 0.5 else "basic"]]),
         "pred": json.dumps([int(rng.random() < 0.5)]), "variant": ["logreg", "xgb"][i % 2]}
        for i in range(n)
    ]


def test_kpis_drift_and_drift_alarm_match(doc):
    policy = POLICY.model_copy(update={"monitoring": POLICY.monitoring.model_copy(update={"min_drift_rows": 20})})
    rng = np.random.default_rng(0)
    drift = monitoring.drift_report(policy, decisions(0.0, rng), decisions(2.0, rng), "first predictions served")
    assert drift["status"] == "ok" and drift["level"] == "significant"
    too_few = monitoring.drift_report(policy, decisions(0.0, rng, 3), decisions(0.0, rng), "training window of xgb")
    assert too_few["max_psi"] is None and too_few["level"] is None
    feedback = [
        {"variant": "logreg", "label": "[1]", "pred": "[1]", "scores": "[0.8]"},
        {"variant": "logreg", "label": "[0]", "pred": "[1]", "scores": "[0.6]"},
        {"variant": "xgb", "label": "[0]", "pred": "[0]"},
    ]
    counts = {"logreg": {"tp": 3, "fp": 1, "tn": 2, "fn": 0, "correct": 5}}
    kpis = monitoring.variant_kpis(policy.variant_names, counts, monitoring.window_kpis(feedback, 50))
    assert kpis["logreg"]["window"]["roc_auc"] == 1.0 and kpis["base"]["window"]["accuracy"] is None
    alarm = {"action": "drift_alarm", "at": 5.0, "by": "monitor", "reason": "PSI 4.652 exceeds retrain.drift_psi 0.25",
             "evidence": {"psi": {"tenure": 4.65, "prediction:xgb": 0.02}, "reference": "first predictions served",
                          "reference_rows": 60, "live_rows": 60}}
    state = experiment_state(policy, Snapshot(arms={}, meta={}), [alarm])
    for d in (drift, too_few):
        check(doc, "ExperimentState", served(state, kpis, d))
    with pytest.raises(jsonschema.ValidationError):
        check(doc, "ExperimentState", served(state, kpis, {**drift, "level": "alarming"}))


SERIES_FIELDS = ("traffic_share", "prob_best", "mean", "credible_interval", "requests", "rewards")


def test_a_state_with_a_shadow_variant_and_corrected_means_matches(doc):
    meta = {"status": "exploring", "roles": json.dumps({"logreg": "shadow"})}
    state = served(experiment_state(POLICY, Snapshot(arms={"base": ArmCounts(rewards=3, reward_sum=1.0)}, meta=meta), []))
    assert {v["name"]: v["role"] for v in state["variants"]}["logreg"] == "shadow"
    state["corrected_means"] = {"base": {"mean": 0.31, "ci_low": 0.2, "ci_high": 0.42, "n_served": 3, "ess": 3.0},
                                "logreg": {"mean": None, "ci_low": None, "ci_high": None, "n_served": 0, "ess": 0.0}}
    check(doc, "ExperimentState", state)


def test_an_off_policy_evaluation_matches(doc):
    rng = np.random.default_rng(0)
    data = ope.LoggedData(("base", "logreg"), rng.normal(size=(200, 2)), rng.integers(0, 2, 200),
                          np.full(200, 0.5), rng.integers(0, 2, 200).astype(float))
    for target in ("uniform", "logreg", {"base": 0.25, "logreg": 0.75}):
        check(doc, "OffPolicyEvaluation", {"experiment": "churn", **ope.evaluate(data, target)})


def test_retrain_results_match(doc):
    check(doc, "RetrainResult", {"outcome": "skipped", "reason": "12 labelled requests", "rows": 12})
    check(doc, "RetrainResult", {"outcome": "rejected", "reason": None, "rows": 900, "result": {"reason": None}})
    check(doc, "RetrainResult", {"outcome": "admitted", "variant": "xgb-r1", "rows": 900, "retired": ["logreg"],
                                 "result": {"candidates": {}}})


def test_series_point_matches(doc):
    state = experiment_state(POLICY, Snapshot(arms={}, meta={"status": "exploring"}), [])
    # As DataPlane._record_series builds a point.
    point = {
        "t": 1.0,
        "status": state["status"],
        "champion": state["champion"],
        "variants": {
            v["name"]: {k: v[k] for k in SERIES_FIELDS} for v in state["variants"]
        },
    }
    check(doc, "Series", {"experiment": "churn", "points": [point], "history": []})


def test_error_bodies_match(doc):
    check(doc, "Error", NotFound("no experiment", code="experiment_not_found").to_body())
    check(doc, "OipError", {"error": "no model named 'x'"})
    for err in (Forbidden("x", code="token_invalid"), NotFound("y"), Unprocessable("z")):
        rejected = _rejected("rid", err)
        rejected.pop("_error")
        check(doc, "RejectedReward", rejected)
    anonymous = _rejected(7, Unprocessable("each feedback item must be an object"))
    anonymous.pop("_error")
    check(doc, "RejectedReward", anonymous)


def test_reward_bodies_match(doc):
    accepted = {"request_id": "r1", "status": "accepted", "variant": "xgb", "reward": 1.0}
    late = {"request_id": "r3", "status": "late", "variant": "xgb", "reward": 0.0}
    rejected = _rejected("r2", Forbidden("x", code="token_missing"))
    rejected.pop("_error")
    over_quota = _rejected("r4", TooManyRequests("this unit already sent 5 rewards", code="reward_quota_exceeded"))
    over_quota.pop("_error")
    assert over_quota["http_status"] == 429
    check(doc, "RewardResponse", accepted)
    check(doc, "RewardResponse", late)
    check(doc, "RewardResponse", {"results": [accepted, late, rejected, over_quota], "accepted": 1, "duplicate": 0,
                                  "late": 1, "queued": 0, "rejected": 2})
    with pytest.raises(jsonschema.ValidationError):  # a batch always counts its late items
        check(doc, "BatchRewardResponse", {"results": [accepted], "accepted": 1, "duplicate": 0, "rejected": 0})
    check(doc, "RewardItem", {"request_id": "r1", "token": "t", "reward": 0.5})
    check(doc, "RewardItem", {"request_id": "r1", "token": "t", "label": [1, 0]})
    with pytest.raises(jsonschema.ValidationError):
        check(doc, "RewardItem", {"request_id": "r1", "token": "t"})  # neither reward nor label
    check(doc, "RewardBatch", {"rewards": [{"request_id": "r1", "token": "t", "reward": 1}]})


def test_predict_bodies_match(doc):
    check(doc, "PredictRequest", {"instances": [[1.0, "pro"], {"tenure": 2, "plan": "basic"}], "unit_id": "u1"})
    check(doc, "PredictResponse", {
        "request_id": "01J", "experiment": "churn", "variant": "xgb", "predictions": [1, 0],
        "propensity": 0.62, "reward_token": "a.b",
    })


def test_oip_bodies_match(doc):
    check(doc, "InferResponse", encode_response("churn", "xgb", "rid", [1, 0], propensity=0.5, reward_token="t",
                                                client_id="c"))
    check(doc, "InferResponse", encode_response("churn", "xgb", "rid", ["yes", 2.5]))
    check(doc, "ModelMetadata", model_metadata(POLICY, ["base", "logreg", "xgb"]))
    check(doc, "ModelMetadata", model_metadata(POLICY, ["base", "logreg", "xgb"], version="xgb"))
    check(doc, "ServerMetadata", server_metadata())
    check(doc, "InferRequest", {
        "id": "c1",
        "parameters": {"unit_id": "u"},
        "inputs": [{"name": "tenure", "shape": [1], "datatype": "FP64", "data": [1.0]},
                   {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]}],
        "outputs": [{"name": "predict"}],
    })
