"""The typed edge (gateway.schemas): each request model refuses what the contract refuses, with
its status, code and message, in the order the gateway has always judged them; each answer
model describes the bodies the code builds (a round trip through the model changes nothing);
and pydantic's schemas become OpenAPI 3.0 (gateway.api.openapi30)."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import numpy as np
import pytest
from pydantic import BaseModel, Field

from gateway import monitoring
from gateway.api import oip
from gateway.api.app import create_app
from gateway.api.openapi import OIP, TOO_LARGE
from gateway.api.openapi30 import component_schemas
from gateway.dataplane import DataPlane
from gateway.dataplane.feedback import Feedback, _rejected
from gateway.dataplane.runtime import Experiments
from gateway.dataplane.tokens import RewardTokens, TokenClaims
from gateway.decisions.state import experiment_state
from gateway.errors import Forbidden, GatewayError, NotFound, TooManyRequests, Unprocessable
from gateway.policy import NAME_PATTERN, load_policy_file
from gateway.schemas import (
    MAX_ID_LEN, AddVariantRequest, AdminRequest, BatchRewardResponse, Error, ExperimentList, ExperimentState,
    Health, PredictRequest, PredictResponse, PromoteRequest, RejectedReward, RetrainResult, RewardBatch, RewardClaim,
    RewardItem, RewardResponse, RewardResult, Series, parse_feedback,
)
from gateway.store.embedded import EmbeddedRedis
from gateway.store.experiments import ExperimentStore
from gateway.store.snapshot import ArmCounts, Snapshot
from tests.models import loaded_variants
from tests.unit.test_openapi import GAUSSIAN, POLICY, decisions, served

CHURN = Path(__file__).resolve().parents[1] / "policies" / "churn.yaml"
ROW = {"tenure": 12.0, "monthly_charges": 80.5, "support_calls": 2, "plan": "pro"}
ADMIN_TOKEN = "schemas-admin-token-0123"
SECRET = "s" * 32


def refused(parse, body: Any, **kw) -> tuple[int, str, str]:
    with pytest.raises(GatewayError) as err:
        parse(body, **kw)
    return err.value.status, err.value.code, err.value.message


# -- request bodies: the contract's refusals ---------------------------------------------------

UNIT = (422, "invalid_unit_id", f"unit_id: a string of 1 to {MAX_ID_LEN} characters")
INSTANCES = (422, "invalid_instances", "instances: this field is required")


@pytest.mark.parametrize("body,expected", [
    ([ROW], (400, "invalid_body", "the body must be a JSON object with 'instances'")),
    (None, (400, "invalid_body", "the body must be a JSON object with 'instances'")),
    ({}, INSTANCES),
    ({"rows": [ROW]}, INSTANCES),
    ({"unit_id": 7}, INSTANCES),  # the first field wrong is the one answered
    ({"instances": [ROW], "unit_id": ""}, UNIT),
    ({"instances": [ROW], "unit_id": 7}, UNIT),
    ({"instances": [ROW], "unit_id": "u" * (MAX_ID_LEN + 1)}, UNIT),
])
def test_predict_refusals(body, expected):
    assert refused(PredictRequest.parse, body) == expected


def test_predict_rows_are_left_to_the_policy_and_not_copied():
    body = {"instances": [ROW, [1, 2, 3, "pro"]], "unit_id": "u" * MAX_ID_LEN, "pad": "ignored"}
    parsed = PredictRequest.parse(body)
    assert parsed.instances is body["instances"] and parsed.unit_id == body["unit_id"]
    # The encoder answers for rows (its messages name the feature); the model takes any value.
    assert PredictRequest.parse({"instances": "not rows", "unit_id": None}).instances == "not rows"


BATCH = (422, "invalid_rewards", "rewards: a non-empty list of feedback items")


@pytest.mark.parametrize("body,expected", [
    ([], (400, "invalid_body", "the body must be a JSON object: one feedback item or {'rewards': [...]}")),
    ("x", (400, "invalid_body", "the body must be a JSON object: one feedback item or {'rewards': [...]}")),
    ({"rewards": []}, BATCH),
    ({"rewards": {"request_id": "r"}}, BATCH),
    ({"rewards": None}, BATCH),
    ({"rewards": [{}] * 1001}, (422, "too_many_rewards", "rewards: at most 1000 items per batch, got 1001")),
])
def test_feedback_envelope_refusals(body, expected):
    assert refused(parse_feedback, body) == expected


def test_a_batch_keeps_its_items_as_sent_and_one_item_is_its_object():
    items = [{"request_id": "r", "reward": 1}, "not an object", 5]
    batch = parse_feedback({"rewards": items})
    assert isinstance(batch, RewardBatch) and batch.rewards == items
    one = {"request_id": "r", "reward": 1, "token": "t"}
    assert parse_feedback(one) is one


RID = (422, "invalid_request_id", f"request_id: a string of 1 to {MAX_ID_LEN} characters")
TOKEN = (403, "token_missing", "a reward needs the 'token' returned with the prediction")
NOT_A_NUMBER = (422, "invalid_reward", "reward: must be a number")
LABEL = (422, "invalid_label", "label: a value or a list of values, one per instance")


@pytest.mark.parametrize("body,expected", [
    ("x", (422, "invalid_feedback", "each feedback item must be an object")),
    ({"token": "t"}, RID),
    ({"request_id": "", "token": "t"}, RID),
    ({"request_id": 5}, RID),  # before the missing token
    ({"request_id": "r" * (MAX_ID_LEN + 1), "token": "t"}, RID),
    ({"request_id": "r"}, TOKEN),
    ({"request_id": "r", "token": 5, "reward": "x"}, TOKEN),
])
def test_who_sends_an_item_is_judged_first(body, expected):
    assert refused(RewardClaim.parse, body) == expected


@pytest.mark.parametrize("body,expected", [
    ({}, (422, "invalid_feedback", "a feedback item needs 'reward' or 'label'")),
    ({"reward": "1"}, NOT_A_NUMBER),
    ({"reward": True}, NOT_A_NUMBER),
    ({"reward": None}, NOT_A_NUMBER),
    ({"reward": [1]}, NOT_A_NUMBER),
    ({"reward": "1", "label": None}, NOT_A_NUMBER),
    ({"label": None}, LABEL),
    ({"label": {"y": 1}}, LABEL),
    ({"reward": 1, "label": "x" * 70_000}, (422, "invalid_label", "label: at most 65536 bytes as JSON")),
    ({"label": ["\ud800", 1]}, (422, "invalid_label", "label: a string that is not valid Unicode (a lone surrogate)")),
    ({"reward": 7, "label": {}}, (422, "invalid_reward", "reward: 7 is outside the policy's range [0.0, 1.0]")),
    ({"reward": float("nan")}, (422, "invalid_reward", "reward: nan is outside the policy's range [0.0, 1.0]")),
    ({"reward": 10**400}, (422, "invalid_reward", f"reward: {10**400!r} is outside the policy's range [0.0, 1.0]")),
])
def test_what_an_item_says_is_judged_in_the_policys_range(body, expected):
    context = {"reward_bounds": (0.0, 1.0)}
    assert refused(RewardItem.parse, {"request_id": "r", "token": "t", **body}, context=context) == expected


def test_an_item_keeps_its_values_as_sent():
    item = RewardItem.parse({"request_id": "r", "token": "t", "reward": 1, "label": 1}, {"reward_bounds": (0, 1)})
    assert type(item.reward) is int and type(item.label) is int  # 1, not 1.0: a label is compared as sent
    assert RewardItem.parse({"request_id": "r", "token": "t", "label": [True, "a", {"k": 1}]}).label == [
        True, "a", {"k": 1}]
    assert RewardItem.parse({"request_id": "r", "token": "t", "label": True}).reward is None


REASON = (422, "invalid_reason", "reason: a string of at most 500 characters")
VARIANT = (422, "invalid_variant", "variant: this field is required")


@pytest.mark.parametrize("parse,body,expected", [
    (AdminRequest.parse, {"reason": 5}, REASON),
    (AdminRequest.parse, {"reason": "r" * 501}, REASON),
    (PromoteRequest.parse, None, VARIANT),
    (PromoteRequest.parse, ["b"], VARIANT),
    (PromoteRequest.parse, {"reason": 5}, VARIANT),
    (PromoteRequest.parse, {"variant": None}, VARIANT),
    (PromoteRequest.parse, {"variant": "b", "reason": 5}, REASON),
    (AddVariantRequest.parse, None, (422, "invalid_variant",
                                     "the body must be {'name': ..., 'model': <artifact path>, 'sha256': ...}")),
    (AddVariantRequest.parse, {"model": "m.skops"}, (422, "invalid_variant", f"name: must match {NAME_PATTERN}")),
    (AddVariantRequest.parse, {"name": "a\n", "model": "m"},
     (422, "invalid_variant", f"name: must match {NAME_PATTERN}")),
    (AddVariantRequest.parse, {"name": "a"},
     (422, "invalid_variant", "model: the path of a .skops, .ubj or .json artifact, or an MLflow model URI")),
    (AddVariantRequest.parse, {"name": "a", "model": ""},
     (422, "invalid_variant", "model: the path of a .skops, .ubj or .json artifact, or an MLflow model URI")),
    (AddVariantRequest.parse, {"name": "a", "model": "m", "sha256": "A" * 64},
     (422, "invalid_variant", "sha256: 64 lowercase hex digits")),
    (AddVariantRequest.parse, {"name": "a", "model": "m", "reason": ["r"]}, REASON),
])
def test_admin_refusals(parse, body, expected):
    assert refused(parse, body) == expected


def test_admin_bodies_that_are_taken():
    for body in (None, [1], "x", {}, {"reason": None}):  # no object, no reason
        assert AdminRequest.parse(body).reason is None
    assert AdminRequest.parse({"reason": "r" * 500}).reason == "r" * 500
    # A variant name that is not a string names no variant: the control answers it (404).
    assert PromoteRequest.parse({"variant": 5}).variant == 5
    add = AddVariantRequest.parse({"name": "xgb-2", "model": "/m.ubj", "sha256": None, "reason": "offline"})
    assert (add.name, add.model, add.sha256, add.reason) == ("xgb-2", "/m.ubj", None, "offline")


# -- a feedback item: who, then what --------------------------------------------------------------


@pytest.fixture(scope="module")
def feedback() -> Feedback:
    return Feedback(Experiments.build({"churn": POLICY}, {"churn": {}}), None, None, RewardTokens(SECRET), None,
                    time.time)  # type: ignore[arg-type]


# The clock the items are judged at: fixed, since the parameters are built when the tests are
# collected, which may be minutes before they run.
NOW = 1_800_000_000.0


def token(rid: str, experiment: str = "churn", expires_in: float = 60.0) -> str:
    return RewardTokens(SECRET).sign(rid, TokenClaims(experiment, "xgb", NOW + expires_in))


@pytest.mark.parametrize("item,expected", [
    ({"request_id": "r", "token": "e30.forged", "reward": "x"}, (403, "token_invalid")),
    ({"request_id": "r", "token": token("r", expires_in=-1), "label": {}}, (404, "request_expired")),
    ({"request_id": "r", "token": token("r", "gone"), "reward": 7}, (404, "experiment_not_found")),
    ({"request_id": 5, "token": "e30.forged"}, (422, "invalid_request_id")),
    ({"request_id": "r", "token": token("r"), "reward": "x"}, (422, "invalid_reward")),
    ({"request_id": "r", "token": token("r"), "reward": 1.5}, (422, "invalid_reward")),
])
def test_an_items_token_is_verified_before_its_reward_and_label_are_judged(feedback, item, expected):
    with pytest.raises(GatewayError) as err:
        feedback._validate_item(item, NOW)
    assert (err.value.status, err.value.code) == expected


def test_a_valid_item_comes_out_typed(feedback):
    item, claims, reward = feedback._validate_item({"request_id": "r", "token": token("r"), "reward": 1}, NOW)
    assert isinstance(item, RewardItem) and (claims.experiment, claims.variant, reward) == ("churn", "xgb", 1.0)


# -- through the app ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]]:
    state_dir = tmp_path_factory.mktemp("schemas-state")
    redis = EmbeddedRedis(state_dir).start()
    try:
        policy = load_policy_file(CHURN)
        plane = DataPlane({policy.experiment: policy}, ExperimentStore.from_url(redis.url),
                          {policy.experiment: loaded_variants(policy, CHURN, state_dir)}, RewardTokens(SECRET))
        app = create_app(plane, admin_token=ADMIN_TOKEN)
        loop = asyncio.new_event_loop()
        lifespan = app.router.lifespan_context(app)
        loop.run_until_complete(lifespan.__aenter__())
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
        try:
            yield loop, http
        finally:
            loop.run_until_complete(http.aclose())
            loop.run_until_complete(lifespan.__aexit__(None, None, None))
            loop.close()
    finally:
        redis.stop()


def call(client, method: str, path: str, body: Any = None, **headers: str) -> httpx.Response:
    loop, http = client
    content = None if body is None else json.dumps(body)
    return loop.run_until_complete(http.request(method, path, content=content, headers=headers))


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    Error.model_validate(body)
    return response.status_code, body["error"]["code"], body["error"]["message"]


def test_the_app_judges_the_experiment_and_request_id_before_the_body(client):
    assert error_of(call(client, "POST", "/v1/experiments/nope/predict", []))[:2] == (404, "experiment_not_found")
    bad_id = call(client, "POST", "/v1/experiments/churn/predict", [], **{"x-request-id": "no spaces"})
    assert error_of(bad_id)[:2] == (400, "invalid_request_id")
    assert error_of(call(client, "POST", "/v1/experiments/churn/predict", {"unit_id": ""})) == INSTANCES


def test_a_served_prediction_and_its_feedback_match_their_models(client):
    r = call(client, "POST", "/v1/experiments/churn/predict", {"instances": [ROW, ROW], "unit_id": "u1"})
    assert r.status_code == 200, r.text
    out = round_trip(PredictResponse, r.json())
    good = {"request_id": out["request_id"], "reward": 1, "token": out["reward_token"]}
    batch = call(client, "POST", "/v1/rewards", {"rewards": [
        good, good, {**good, "request_id": ""}, "x", {**good, "reward": "1"}, {**good, "reward": 2},
    ]})
    assert batch.status_code == 200
    body = round_trip(BatchRewardResponse, batch.json())
    assert [(x["status"], x.get("error", {}).get("code")) for x in body["results"]] == [
        ("accepted", None), ("duplicate", None), ("rejected", "invalid_request_id"),
        ("rejected", "invalid_feedback"), ("rejected", "invalid_reward"), ("rejected", "invalid_reward")]
    round_trip(RewardResponse, batch.json())
    single = call(client, "POST", "/reward", good)
    assert single.status_code == 200 and round_trip(RewardResult, single.json())["status"] == "duplicate"
    assert error_of(call(client, "POST", "/v1/rewards", {**good, "reward": None})) == (422, *NOT_A_NUMBER[1:])
    assert error_of(call(client, "POST", "/v1/rewards", [good]))[:2] == (400, "invalid_body")


def test_read_routes_match_their_models(client):
    round_trip(Health, call(client, "GET", "/healthz").json())
    round_trip(ExperimentList, call(client, "GET", "/v1/experiments").json())
    round_trip(Series, call(client, "GET", "/v1/experiments/churn/series").json())


def test_admin_bodies_through_the_app(client):
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    promote = "/v1/experiments/churn/promote"
    assert error_of(call(client, "POST", promote, {}, **auth)) == VARIANT
    assert error_of(call(client, "POST", promote, {"variant": 5}, **auth)) == (
        404, "variant_not_found", "experiment 'churn' has no variant 5")
    # The body is judged before the experiment is looked up, as it was.
    unknown = call(client, "POST", "/v1/experiments/nope/promote", {"variant": "x", "reason": 1}, **auth)
    assert error_of(unknown) == REASON
    assert error_of(call(client, "POST", "/v1/experiments/churn/pause", {"reason": "r" * 501}, **auth)) == REASON
    assert error_of(call(client, "DELETE", "/v1/experiments/churn/variants/xgb", {"reason": 5}, **auth)) == REASON
    # Without a registry the gateway says so before it reads the body.
    assert error_of(call(client, "POST", "/v1/experiments/churn/variants", [], **auth))[:2] == (409, "no_registry")


# -- answers: the models describe what the code builds ---------------------------------------------


def round_trip(model: type[BaseModel], body: Any) -> Any:
    """The body through the model and back: equal, so the model knows every field and accepts
    every value (a field it did not know would be dropped)."""
    data = json.loads(json.dumps(body))
    assert model.model_validate(data).model_dump(mode="json", exclude_unset=True) == data
    return data


def test_experiment_states_round_trip():
    arms = {"logreg": ArmCounts(rewards=10, reward_sum=4.0, requests=12), "base": ArmCounts(requests=1)}
    history = [{"action": "promote", "variant": "logreg", "at": 1.0, "by": "admin", "reason": "r", "previous": None},
               {"action": "pause", "at": 3.0, "by": "admin", "reason": "r", "weights": {"logreg": 1.0}}]
    state = served(experiment_state(POLICY, Snapshot(arms=arms, meta={"status": "promoted", "champion": "logreg",
                                                                      "started_at": "1.0"}), history))
    round_trip(ExperimentState, state)
    round_trip(ExperimentState, served(experiment_state(POLICY, Snapshot(arms={}, meta={}), [])))
    gauss = {"b": ArmCounts(rewards=20, reward_sum=-50.0, reward_sq_sum=200.0, requests=25)}
    round_trip(ExperimentState, served(experiment_state(GAUSSIAN, Snapshot(arms=gauss, meta={}), [])))
    with pytest.raises(ValueError):
        ExperimentState.model_validate({k: v for k, v in state.items() if k != "drift"})


def test_kpis_and_drift_round_trip():
    policy = POLICY.model_copy(update={"monitoring": POLICY.monitoring.model_copy(update={"min_drift_rows": 20})})
    rng = np.random.default_rng(0)
    drift = monitoring.drift_report(policy, decisions(0.0, rng), decisions(2.0, rng), "first predictions served")
    feedback = [{"variant": "logreg", "label": "[1]", "pred": "[1]", "scores": "[0.8]"},
                {"variant": "logreg", "label": "[0]", "pred": "[1]", "scores": "[0.6]"}]
    kpis = monitoring.variant_kpis(policy.variant_names, {"logreg": {"tp": 3, "fp": 1, "tn": 2, "fn": 0, "correct": 5}},
                                   monitoring.window_kpis(feedback, 50))
    round_trip(ExperimentState, served(experiment_state(policy, Snapshot(arms={}, meta={}), []), kpis, drift))


def test_reward_answers_and_errors_round_trip():
    for err in (Forbidden("x", code="token_invalid"), NotFound("y"), Unprocessable("z"), TooManyRequests("q")):
        rejected = _rejected("rid", err)
        rejected.pop("_error")
        round_trip(RejectedReward, rejected)
    round_trip(RewardResult, {"request_id": "r", "status": "queued", "variant": "a", "reward": None})
    round_trip(Error, NotFound("no experiment", code="experiment_not_found").to_body())
    for result in ({"outcome": "skipped", "reason": "12 labelled requests", "rows": 12},
                   {"outcome": "admitted", "variant": "x-r1", "rows": 900, "retired": ["a"], "result": {"k": 1}}):
        round_trip(RetrainResult, result)


# -- OpenAPI 3.0 from pydantic ---------------------------------------------------------------------


class Inner(BaseModel):
    """An inner object."""

    n: Annotated[int, Field(gt=0)]


class Outer(BaseModel):
    maybe: Inner | None = Field(description="Inlined: 3.0 ignores nullable beside a $ref.")
    kind: Literal["one"]
    level: Literal["low", "high"] | None
    shared: Inner = Field(description="A $ref with a description.")
    absent: int = Field(default=None)


def test_the_conversion_to_openapi_3_0():
    schemas = component_schemas((Outer,))
    props = schemas["Outer"]["properties"]
    assert props["maybe"] == {"type": "object", "description": "Inlined: 3.0 ignores nullable beside a $ref.",
                              "properties": {"n": {"type": "integer", "minimum": 0, "exclusiveMinimum": True}},
                              "required": ["n"], "nullable": True}
    assert props["kind"] == {"type": "string", "enum": ["one"]}
    assert props["level"] == {"type": "string", "enum": ["low", "high", None], "nullable": True}
    assert props["shared"] == {"allOf": [{"$ref": "#/components/schemas/Inner"}],
                               "description": "A $ref with a description."}
    assert props["absent"] == {"type": "integer"}
    assert "title" not in json.dumps(schemas) and "Inner" in schemas  # still used by `shared`


def test_what_openapi_3_0_cannot_say_is_refused():
    class Pair(BaseModel):
        both: tuple[int, str]

    class Either(BaseModel):
        one: int | str | None

    with pytest.raises(ValueError, match="prefixItems"):
        component_schemas((Pair,))
    with pytest.raises(ValueError, match="nullable"):
        component_schemas((Either,))


def test_the_protocols_static_part_agrees_with_the_code():
    schemas = OIP["schemas"]
    assert schemas["Tensor"]["properties"]["datatype"]["enum"] == list(oip.SUPPORTED_DATATYPES)
    assert schemas["RequestedOutput"]["properties"]["name"]["enum"] == [oip.OUTPUT_NAME]
    assert schemas["InferRequest"]["properties"]["parameters"]["properties"]["unit_id"]["maxLength"] == MAX_ID_LEN
    infer = OIP["paths"]["/v2/models/{experiment}/infer"]["post"]
    assert oip.HEADER_LENGTH in {p.get("name") for p in infer["parameters"]}
    assert infer["responses"]["413"]["description"] == TOO_LARGE
    assert all(p.startswith("/v2") for p in OIP["paths"])


def test_the_document_is_built_from_the_models():
    schemas = component_schemas((PredictRequest, RewardItem))
    assert schemas["PredictRequest"]["required"] == ["instances"]
    assert schemas["PredictRequest"]["properties"]["unit_id"]["maxLength"] == MAX_ID_LEN
    assert schemas["RewardItem"]["anyOf"] == [{"required": ["reward"]}, {"required": ["label"]}]
    assert component_schemas((AddVariantRequest,))["AddVariantRequest"]["properties"]["name"]["pattern"] == NAME_PATTERN
