"""The OpenAPI 3 document of the gateway's HTTP API, served at GET /openapi.json.

It describes every route that `create_app` registers: our JSON API (predictions, feedback,
experiments, the admin verbs behind a bearer token), the Open Inference Protocol (KServe V2)
routes, the operations routes (/healthz, /metrics, /dashboard and its scripts) and this
document itself; with the request and response bodies and every status a route can answer.

The schemas of our own API are generated from the models in gateway.schemas, which the
handlers parse requests with and which document what the data plane answers (converted to
OpenAPI 3.0 by openapi30.py). The Open Inference Protocol's routes and schemas are the
protocol's, kept as they are in openapi_oip.json (as MLServer keeps its dataplane.json). This
file holds the table of our own routes: what each takes and answers, and why it may refuse.
tests/unit/test_openapi.py and the schemathesis fuzz test hold the document and the code
together.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.dashboard import DASHBOARD_JS, PLOTLY_JS
from gateway.api.http import DEFAULT_MAX_BODY_BYTES
from gateway.api.oip import SERVER_NAME, server_version
from gateway.api.openapi30 import component_schemas
from gateway.dataplane import REQUEST_ID
from gateway.schemas import (
    AddVariantRequest,
    AdminRequest,
    Error,
    ExperimentList,
    ExperimentState,
    Health,
    OffPolicyEvaluation,
    PredictRequest,
    PredictResponse,
    PromoteRequest,
    RetrainResult,
    RewardBatch,
    RewardItem,
    RewardResponse,
    RewardResult,
    Series,
)
from gateway.schemas.base import MAX_REWARDS_PER_BATCH, ref

OPENAPI_VERSION = "3.0.3"
OPENAPI_PATH = "/openapi.json"
JSON = "application/json"

# The Open Inference Protocol's paths and schemas: {"paths": ..., "schemas": ...}.
OIP: dict[str, Any] = json.loads((resources.files("gateway.api") / "openapi_oip.json").read_text())


class OpenAPIDocument(BaseModel):
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


# -- responses and parameters ---------------------------------------------------------------

EXPERIMENT = {"$ref": "#/components/parameters/Experiment"}
VARIANT = {"$ref": "#/components/parameters/Variant"}
CLIENT_REQUEST_ID = {"$ref": "#/components/parameters/ClientRequestId"}

TOO_LARGE = f"The body is larger than {DEFAULT_MAX_BODY_BYTES} bytes (`payload_too_large`)."
NOT_JSON = "The body is not JSON (`invalid_json`)."
ADMIN_401 = "No bearer token (`unauthorized`), or the admin API is off: no GATEWAY_ADMIN_TOKEN (`admin_disabled`)."
ADMIN_403 = "The bearer token is wrong (`forbidden`)."
NO_EXPERIMENT = "No such experiment (`experiment_not_found`)."


def answer(description: str, model: type[BaseModel] | str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
        "content": {JSON: {"schema": ref(model)}},
    }


def ok(model: type[BaseModel], description: str = "OK") -> dict[str, Any]:
    return answer(description, model)


def error(description: str) -> dict[str, Any]:
    return answer(description, Error)


def body(schema: dict[str, Any], *, required: bool = True, description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"required": required, "content": {JSON: {"schema": schema}}}
    if description:
        out["description"] = description
    return out


def operation(tag: str, operation_id: str, summary: str, responses: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An operation: `fields` are the optional parts (parameters, requestBody, security, ...)."""
    return {"tags": [tag], "operationId": operation_id, "summary": summary, **fields, "responses": responses}


def components(experiments: Sequence[str] | None) -> dict[str, Any]:
    experiment_schema: dict[str, Any] = {"type": "string"}
    if experiments:
        experiment_schema["enum"] = list(experiments)
    models = (Error, PredictRequest, PredictResponse, RewardItem, RewardBatch, RewardResult, RewardResponse,
              ExperimentState, ExperimentList, Series, Health, AdminRequest, AddVariantRequest, PromoteRequest,
              RetrainResult, OffPolicyEvaluation, OpenAPIDocument)
    return {
        "schemas": {**_model_schemas(models), **OIP["schemas"]},
        "parameters": {
            "Experiment": {"name": "experiment", "in": "path", "required": True,
                           "description": "The experiment (in the Open Inference Protocol: the model).",
                           "schema": experiment_schema},
            "Variant": {"name": "variant", "in": "path", "required": True,
                        "description": "A variant of the experiment (in the Open Inference Protocol: a model version).",
                        "schema": {"type": "string"}},
            "ClientRequestId": {
                "name": "x-request-id", "in": "header", "required": False,
                "description": "Bring your own request id (1 to 128 of letters, digits and `._:-`); it must not "
                "have been used before in the experiment (409).",
                "schema": {"type": "string", "pattern": f"^{REQUEST_ID.pattern}$"},
            },
        },
        "headers": {"RequestId": {"description": "The request id: the client's own `x-request-id`, or one the "
                                                 "gateway made.", "schema": {"type": "string"}}},
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "description": "The admin token (GATEWAY_ADMIN_TOKEN)."}
        },
    }


@functools.cache
def _model_schemas(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    return component_schemas(models)


# -- our own routes ---------------------------------------------------------------------------


def _predict() -> dict[str, Any]:
    return {"post": operation(
        "predictions", "predict", "A prediction from the variant the bandit picks", {
            "200": ok(PredictResponse),
            "400": error("The body is not JSON (`invalid_json`) or not an object (`invalid_body`), or the "
                         "`x-request-id` is not a usable id (`invalid_request_id`)."),
            "404": error(NO_EXPERIMENT),
            "409": error("The `x-request-id` was already used (`request_id_in_use`)."),
            "413": error(TOO_LARGE),
            "422": error("`instances` missing or not matching the policy's features (`invalid_instances`), too "
                         "many rows (`too_many_instances`), or a bad `unit_id` (`invalid_unit_id`)."),
            "503": error("The picked variant failed or timed out (`variant_unavailable`), no variant is healthy "
                         "(`no_healthy_variant`), or the experiment is not loaded yet (`not_ready`). Retry."),
        },
        parameters=[EXPERIMENT, CLIENT_REQUEST_ID], requestBody=body(ref(PredictRequest)),
    )}


def _rewards(alias: bool) -> dict[str, Any]:
    return {"post": operation(
        "feedback", "rewardAlias" if alias else "rewards",
        "Alias of POST /v1/rewards" if alias else "Feedback for predictions: one item or a batch", {
            "200": answer("The item's result, or the batch's results", RewardResponse),
            "202": answer("A single item spooled while the state store is unreachable (`queued`); applied when it "
                          "is back", RewardResult),
            "400": error("The body is not JSON (`invalid_json`) or not an object (`invalid_body`)."),
            "403": error("The token is missing (`token_missing`), malformed, forged, or for another request or "
                         "variant (`token_invalid`)."),
            "404": error("Unknown request id (`request_not_found`), its reward window is over (`request_expired`), "
                         "or the token names an experiment no longer served (`experiment_not_found`)."),
            "413": error(TOO_LARGE),
            "503": error("The state store is unreachable and the item could not be spooled (`store_unavailable`). "
                         "Retry: feedback is applied once, however often it is sent."),
            "422": error("A bad field: `request_id`, `reward` (not a number, not finite, or outside the policy's "
                         "range), `label`, neither reward nor label (`invalid_feedback`); or a bad batch "
                         "(`invalid_rewards`, `too_many_rewards`)."),
            "429": error("The request's unit already sent the policy's `reward.max_per_unit` rewards within "
                         "`reward.window_s` (`reward_quota_exceeded`)."),
        },
        description="One item answers with its own status. A batch (`rewards`, up to "
        f"{MAX_REWARDS_PER_BATCH} items) answers 200 with a result per item; each item is applied once, a "
        "repeated one is answered `duplicate` and changes nothing. Feedback after the reward window, once the "
        "policy's default reward was applied, is answered `late`: kept for retraining, not learned.",
        requestBody=body({"anyOf": [ref(RewardItem), ref(RewardBatch)]}),
    )}


def _admin(operation_id: str, summary: str, request: type[BaseModel] | None, conflicts: str, *,
           variant: bool = False, method: str = "post",
           unprocessable: str | None = "A bad `reason` (`invalid_reason`).",
           answers: type[BaseModel] = ExperimentState, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """An operator verb; `request` None: a body that is ignored (may be empty)."""
    not_found = "No such experiment (`experiment_not_found`)"
    if variant or operation_id == "promote":
        not_found += " or variant (`variant_not_found`)"
    responses = {
        "200": ok(answers, "The experiment's state after the decision" if answers is ExperimentState else "The "
                  "run's outcome"),
        "400": error(NOT_JSON), "401": error(ADMIN_401), "403": error(ADMIN_403), "404": error(not_found + "."),
        "409": error(conflicts), "413": error(TOO_LARGE),
        **({"422": error(unprocessable)} if unprocessable else {}),
        **{status: error(text) for status, text in (extra or {}).items()},
    }
    request_body = (body(ref(request), required=request in (PromoteRequest, AddVariantRequest)) if request
                    else body({"type": "object"}, required=False, description="Ignored; may be empty."))
    return {method: operation("admin", operation_id, summary, responses, security=[{"bearerAuth": []}],
                              parameters=[EXPERIMENT, VARIANT] if variant else [EXPERIMENT],
                              requestBody=request_body)}


def _get(tag: str, operation_id: str, summary: str, responses: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"get": operation(tag, operation_id, summary, responses, **fields)}


def _text_get(operation_id: str, tag: str, summary: str, media_type: str, *, asset: bool = False) -> dict[str, Any]:
    op = operation(tag, operation_id, summary,
                   {"200": {"description": "OK", "content": {media_type: {"schema": {"type": "string"}}}}})
    if asset:
        op["parameters"] = [
            {"name": "v", "in": "query", "required": False,
             "description": "The content hash the page asks for: with it the answer is cached for a year.",
             "schema": {"type": "string"}},
            {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
        ]
        op["responses"]["304"] = {"description": "Not modified: the ETag matches."}
    return {"get": op}


def openapi_document(experiments: list[str] | None = None) -> dict[str, Any]:
    """The OpenAPI 3 document of every route; with `experiments`, the `experiment` path
    parameter is constrained to them."""
    since = {"name": "since", "in": "query", "required": False,
             "description": "Only points after this unix time, in seconds.", "schema": {"type": "number"}}
    target = {"name": "target", "in": "query", "required": False,
              "description": "`uniform` (the default), a variant's name (always serve it), or shares such as "
              "`a=0.3,b=0.7`.", "schema": {"type": "string"}}
    paths: dict[str, Any] = {
        "/v1/experiments/{experiment}/predict": _predict(),
        "/v1/rewards": _rewards(alias=False),
        "/reward": _rewards(alias=True),
        "/v1/experiments": _get("experiments", "listExperiments", "Every experiment's state",
                                {"200": ok(ExperimentList)}),
        "/v1/experiments/{experiment}": _get(
            "experiments", "getExperiment", "Status, champion, per-variant posteriors and traffic, decision history",
            {"200": ok(ExperimentState), "404": error(NO_EXPERIMENT)}, parameters=[EXPERIMENT]),
        "/v1/experiments/{experiment}/series": _get(
            "experiments", "getSeries", "The experiment's recorded time series (one point every 2 s) and history",
            {"200": ok(Series), "400": error("`since` is not a finite number (`invalid_since`)."),
             "404": error(NO_EXPERIMENT)},
            parameters=[EXPERIMENT, since]),
        "/v1/experiments/{experiment}/ope": _get(
            "experiments", "offPolicyEvaluation",
            "What a target policy would have earned on the logged traffic (IPS, self-normalised IPS, doubly robust)",
            {"200": ok(OffPolicyEvaluation), "404": error(NO_EXPERIMENT),
             "422": error("A target that is none of `uniform`, a variant or shares (`invalid_target`), or one the log "
                          "cannot support: no rewards yet, a variant never served, or an importance weight beyond "
                          "100 (`poor_overlap`).")},
            parameters=[EXPERIMENT, target]),
        "/v1/experiments/{experiment}/promote": _admin(
            "promote", "Make a variant the champion", PromoteRequest,
            "The variant is the holdout or retired (`variant_not_live`).",
            unprocessable="`variant` missing (`invalid_variant`) or a bad `reason` (`invalid_reason`)."),
        "/v1/experiments/{experiment}/rollback": _admin(
            "rollback", "Back to the previous champion (or to exploring)", AdminRequest,
            "Nothing is promoted (`not_promoted`)."),
        "/v1/experiments/{experiment}/pause": _admin(
            "pause", "Freeze the traffic split", AdminRequest, "Already paused (`already_paused`)."),
        "/v1/experiments/{experiment}/resume": _admin(
            "resume", "Undo a pause", AdminRequest, "Not paused (`not_paused`)."),
        "/v1/experiments/{experiment}/variants/{variant}": _admin(
            "retireVariant", "Take a variant out of rotation for good", AdminRequest,
            "The variant is the holdout or already retired (`variant_not_live`), the last live one "
            "(`last_variant`), or the champion (`variant_is_champion`).", variant=True, method="delete"),
        "/v1/experiments/{experiment}/retrain": _admin(
            "retrain", "Run a retraining now: a challenger may be added", None,
            "A retraining of the experiment is already running (`retrain_running`).", unprocessable=None,
            answers=RetrainResult, extra={"503": "The gateway runs without a retrainer (`no_retrainer`), or the "
                                                 "run failed (`retrain_failed`)."}),
        "/v1/experiments/{experiment}/variants/{variant}/shadow": _admin(
            "shadowVariant", "Put a variant in shadow: it answers copies of live requests and serves no one",
            AdminRequest, "The variant is the holdout (`variant_is_holdout`), retired (`variant_not_live`), already in "
            "shadow (`already_shadow`), the last live one (`last_variant`) or the champion (`variant_is_champion`); "
            "the experiment is paused (`experiment_paused`); or its role changed meanwhile (`role_changed`).",
            variant=True),
        "/v1/experiments/{experiment}/variants/{variant}/live": _admin(
            "liveVariant", "Take a variant out of shadow: it joins the bandit, and exploration reopens", AdminRequest,
            "The variant is the holdout (`variant_is_holdout`), retired (`variant_not_live`) or already live "
            "(`already_live`); the experiment is paused (`experiment_paused`); or its role changed meanwhile "
            "(`role_changed`).", variant=True),
        "/v1/experiments/{experiment}/variants": _admin(
            "addVariant", "Add a challenger from a model artifact; it is served at once", AddVariantRequest,
            "A variant of that name exists (`variant_exists`), or the gateway has no registry (`no_registry`).",
            unprocessable="A bad `name`, `model` or `sha256` (`invalid_variant`), or an artifact that cannot be "
                          "loaded safely: missing, tampered (sha256) or holding untrusted types (`invalid_artifact`)."),
        # ---- Open Inference Protocol (KServe V2, REST): the protocol's own, from openapi_oip.json
        **OIP["paths"],
        # ---- operations
        "/healthz": _get("operations", "healthz", "Liveness, and the experiments served", {"200": ok(Health)}),
        "/metrics": _text_get("metrics", "operations", "Prometheus metrics (text exposition format)", "text/plain"),
        "/dashboard": _text_get("dashboard", "operations", "The live dashboard (a web page)", "text/html"),
        f"/dashboard/{PLOTLY_JS}": _text_get(
            "dashboardPlotly", "operations", "plotly.js, for the dashboard", "text/javascript", asset=True),
        f"/dashboard/{DASHBOARD_JS}": _text_get(
            "dashboardScript", "operations", "The dashboard's script", "text/javascript", asset=True),
        OPENAPI_PATH: _get("operations", "openapi", "This document", {
            "200": {"description": "OK", "content": {JSON: {"schema": ref(OpenAPIDocument)}}}}),
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Model-serving gateway",
            "version": server_version(),
            "description": f"{SERVER_NAME}: predictions routed by a Thompson-sampling bandit, feedback applied "
            "exactly once, automatic promotion; the Open Inference Protocol (KServe V2) on the same "
            "experiments. Errors of the gateway's own API are `{\"error\": {\"code\", \"message\"}}`; those of "
            "the V2 routes `{\"error\": \"message\"}`, as the protocol has them.",
        },
        "tags": [
            {"name": "predictions"},
            {"name": "feedback"},
            {"name": "experiments"},
            {"name": "admin", "description": "Operator verbs: `Authorization: Bearer <GATEWAY_ADMIN_TOKEN>`."},
            {"name": "inference (V2)", "description": "The Open Inference Protocol, REST."},
            {"name": "operations"},
        ],
        "paths": json.loads(json.dumps(paths)),  # each document its own copy (callers may edit theirs)
        "components": json.loads(json.dumps(components(experiments))),
    }


@functools.lru_cache(maxsize=8)
def _rendered(experiments: tuple[str, ...]) -> bytes:
    return json.dumps(openapi_document(list(experiments)), separators=(",", ":")).encode()


def openapi_routes(experiment_names: Callable[[], list[str]]) -> list[Route]:
    """GET /openapi.json, the document with the served experiments' names."""

    async def openapi_endpoint(request: Request) -> Response:
        return Response(_rendered(tuple(experiment_names())), media_type=JSON)

    return [Route(OPENAPI_PATH, openapi_endpoint, methods=["GET"], name="openapi")]
