"""The Open Inference Protocol (KServe V2, REST) on top of the data plane.

`oip_routes` gives the routes in the same (path, handler, methods) shape as create_app's own
list. The protocol's error body is `{"error": "message"}`, so every handler here answers its
errors itself instead of letting `traced` format them. The request tensors are read in
oip_tensors.py (both input layouts, JSON or binary data); the answers are built in
oip_responses.py; the operations REST and gRPC share are in oip_ops.py. Their public names are
re-exported here, where the rest of the gateway imports them from.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from starlette.requests import Request

from gateway.api.http import byte_count, parse_json, read_body, read_json
from gateway.api import oip_ops
from gateway.api.oip_ops import check_model_ready, check_server_ready, model_runtime, model_version
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
)
from gateway.dataplane import DataPlane
from gateway.errors import BadRequest, GatewayError

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
    """The V2 routes as (path, handler, methods), ready for create_app's route list. The
    operations themselves are oip_ops', shared with the gRPC service."""

    def runtime(request: Request):
        experiment = request.path_params["experiment"]
        return experiment, model_runtime(plane, experiment)

    async def metadata_server(request: Request, request_id: str) -> tuple[int, Any]:
        return 200, server_metadata()

    async def live(request: Request, request_id: str) -> tuple[int, Any]:
        return 200, {"live": True}

    async def ready(request: Request, request_id: str) -> tuple[int, Any]:
        check_server_ready(plane)
        return 200, {"ready": True}

    async def metadata_model(request: Request, request_id: str) -> tuple[int, Any]:
        _, rt = runtime(request)
        return 200, model_metadata(rt.policy, list(rt.variants))

    async def metadata_version(request: Request, request_id: str) -> tuple[int, Any]:
        _, rt = runtime(request)
        variant = model_version(rt, request.path_params["variant"])
        return 200, model_metadata(rt.policy, list(rt.variants), version=variant)

    async def ready_model(request: Request, request_id: str) -> tuple[int, Any]:
        name, rt = runtime(request)
        check_model_ready(name, rt)
        return 200, {"name": name, "ready": True}

    async def ready_version(request: Request, request_id: str) -> tuple[int, Any]:
        name, rt = runtime(request)
        model_version(rt, request.path_params["variant"])
        check_model_ready(name, rt)
        return 200, {"name": name, "ready": True}

    async def infer(request: Request, request_id: str) -> tuple[int, Any]:
        name, _ = runtime(request)  # an unknown model is 404 before its body is read
        body, binary = await read_infer_body(request, max_body_bytes)
        return 200, await oip_ops.infer(plane, name, body, binary, request_id)

    async def infer_version(request: Request, request_id: str) -> tuple[int, Any]:
        name, rt = runtime(request)
        variant = model_version(rt, request.path_params["variant"])
        body, binary = await read_infer_body(request, max_body_bytes)
        return 200, await oip_ops.infer(plane, name, body, binary, request_id, variant=variant)

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
