"""The Open Inference Protocol (KServe V2, REST) on top of the data plane.

`oip_routes` gives the routes in the same (path, handler, methods) shape as create_app's own
list. The protocol's error body is `{"error": "message"}`, so every handler here answers its
errors itself instead of letting `traced` format them. The request tensors are read in
oip_tensors.py (both input layouts, JSON or binary data); the answers are built in
oip_responses.py. Their public names are re-exported here, where the rest of the gateway
imports them from.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from starlette.requests import Request

from gateway.api.http import byte_count, parse_json, read_body, read_json
from gateway.api.oip_responses import (
    OUTPUT_NAME,
    PLATFORM,
    SERVER_NAME,
    encode_response,
    model_metadata,
    requested_outputs,
    server_metadata,
    server_version,
)
from gateway.api.oip_tensors import (
    NUMERIC_DATATYPES,
    SUPPORTED_DATATYPES,
    decode_inputs,
    decode_tensor,
    invalid_inputs,
)
from gateway.dataplane import DataPlane
from gateway.errors import BadRequest, GatewayError, NotFound, Unavailable

__all__ = [
    "HEADER_LENGTH",
    "NUMERIC_DATATYPES",
    "OUTPUT_NAME",
    "PLATFORM",
    "SERVER_NAME",
    "SUPPORTED_DATATYPES",
    "Handler",
    "decode_inputs",
    "decode_tensor",
    "encode_response",
    "model_metadata",
    "oip_routes",
    "protocol_errors",
    "read_infer_body",
    "requested_outputs",
    "server_metadata",
    "server_version",
]

log = logging.getLogger("gateway.api.oip")

# The shape of create_app's handlers: (request, request id) -> (status, JSON payload).
Handler = Callable[[Request, str], Awaitable[tuple[int, Any]]]

HEADER_LENGTH = "inference-header-content-length"


def protocol_errors(handler: Handler) -> Handler:
    """Answer errors in the protocol's format, `{"error": "message"}`, with the error's status,
    instead of raising them to `traced` (which would use the gateway's own format)."""

    @functools.wraps(handler)
    async def wrapped(request: Request, request_id: str) -> tuple[int, Any]:
        try:
            return await handler(request, request_id)
        except GatewayError as err:
            trace.get_current_span().set_attribute("gateway.error_code", err.code)
            return err.status, {"error": err.message}
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return 500, {"error": "internal error; it has been logged"}

    return wrapped


async def read_infer_body(request: Request, max_bytes: int) -> tuple[Any, bytes | None]:
    """The JSON request (via read_json), or with the binary extension the JSON header and the
    binary tensor data that follows it."""
    declared = request.headers.get(HEADER_LENGTH)
    if declared is None:
        return await read_json(request, max_bytes), None
    split = byte_count(declared, HEADER_LENGTH, "invalid_json")
    raw = await read_body(request, max_bytes)
    if split > len(raw):
        raise BadRequest(f"{HEADER_LENGTH} is {split}, but the body has only {len(raw)} bytes", code="invalid_json")
    return parse_json(raw[:split], "the inference header"), raw[split:]


def oip_routes(plane: DataPlane, max_body_bytes: int) -> list[tuple[str, Handler, list[str]]]:
    """The V2 routes as (path, handler, methods), ready for create_app's route list."""

    def runtime(request: Request):
        experiment = request.path_params["experiment"]
        rt = plane.experiments.get(experiment)
        if rt is None:
            raise NotFound(f"no model named {experiment!r}", code="experiment_not_found")
        return experiment, rt

    def version(request: Request, rt: Any) -> str:
        variant = request.path_params["variant"]
        if variant not in rt.variants:
            raise NotFound(
                f"model {rt.policy.experiment!r} has no version {variant!r}; versions: {list(rt.variants)}",
                code="variant_not_found",
            )
        return variant

    async def metadata_server(request: Request, request_id: str) -> tuple[int, Any]:
        return 200, server_metadata()

    async def live(request: Request, request_id: str) -> tuple[int, Any]:
        return 200, {"live": True}

    async def ready(request: Request, request_id: str) -> tuple[int, Any]:
        waiting = [name for name, rt in plane.experiments.items() if rt.allocation is None]
        if waiting:
            raise Unavailable(f"models not ready yet: {waiting}", code="not_ready")
        return 200, {"ready": True}

    async def metadata_model(request: Request, request_id: str) -> tuple[int, Any]:
        _, rt = runtime(request)
        return 200, model_metadata(rt.policy, list(rt.variants))

    async def metadata_version(request: Request, request_id: str) -> tuple[int, Any]:
        _, rt = runtime(request)
        variant = version(request, rt)
        return 200, model_metadata(rt.policy, list(rt.variants), version=variant)

    async def ready_model(request: Request, request_id: str) -> tuple[int, Any]:
        name, rt = runtime(request)
        if rt.allocation is None:
            raise Unavailable(f"model {name!r} is not ready yet", code="not_ready")
        return 200, {"name": name, "ready": True}

    async def ready_version(request: Request, request_id: str) -> tuple[int, Any]:
        name, rt = runtime(request)
        version(request, rt)
        if rt.allocation is None:
            raise Unavailable(f"model {name!r} is not ready yet", code="not_ready")
        return 200, {"name": name, "ready": True}

    def client_id_and_unit(body: Any) -> tuple[str | None, str | None]:
        client_id = body.get("id") if isinstance(body, dict) else None
        if client_id is not None and not isinstance(client_id, str):
            raise invalid_inputs("id: must be a string")
        params = body.get("parameters") if isinstance(body, dict) else None
        if params is not None and not isinstance(params, dict):
            raise invalid_inputs("parameters: must be an object")
        unit_id = (params or {}).get("unit_id")
        return client_id, unit_id

    async def infer(request: Request, request_id: str) -> tuple[int, Any]:
        name, rt = runtime(request)
        body, binary = await read_infer_body(request, max_body_bytes)
        instances = decode_inputs(body, rt.policy, binary)
        requested_outputs(body)
        client_id, unit_id = client_id_and_unit(body)
        payload: dict[str, Any] = {"instances": instances}
        if unit_id is not None:
            payload["unit_id"] = unit_id
        result = await plane.predict(name, payload, request_id)
        return 200, encode_response(
            name,
            result["variant"],
            result["request_id"],
            result["predictions"],
            propensity=result["propensity"],
            reward_token=result["reward_token"],
            client_id=client_id,
        )

    async def infer_version(request: Request, request_id: str) -> tuple[int, Any]:
        name, rt = runtime(request)
        variant = version(request, rt)
        body, binary = await read_infer_body(request, max_body_bytes)
        instances = decode_inputs(body, rt.policy, binary)
        requested_outputs(body)
        client_id, _ = client_id_and_unit(body)
        matrix = plane.encode(rt, instances)
        result = await plane.predict_variant(name, variant, matrix)
        return 200, encode_response(name, variant, request_id, result["predictions"], client_id=client_id)

    routes: list[tuple[str, Handler, list[str]]] = [
        ("/v2", metadata_server, ["GET"]),
        ("/v2/health/live", live, ["GET"]),
        ("/v2/health/ready", ready, ["GET"]),
        ("/v2/models/{experiment}", metadata_model, ["GET"]),
        ("/v2/models/{experiment}/ready", ready_model, ["GET"]),
        ("/v2/models/{experiment}/infer", infer, ["POST"]),
        ("/v2/models/{experiment}/versions/{variant}", metadata_version, ["GET"]),
        ("/v2/models/{experiment}/versions/{variant}/ready", ready_version, ["GET"]),
        ("/v2/models/{experiment}/versions/{variant}/infer", infer_version, ["POST"]),
    ]
    return [(path, protocol_errors(fn), methods) for path, fn, methods in routes]
