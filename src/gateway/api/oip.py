"""The Open Inference Protocol (KServe V2, REST) on top of the data plane.

Pure functions map V2 tensors to the data plane's rows (`decode_inputs`) and predictions back to
a V2 response (`encode_response`); `oip_routes` gives the routes in the same (path, handler,
methods) shape as create_app's own list. The protocol's error body is `{"error": "message"}`,
so every handler here answers its errors itself instead of letting `traced` format them.

Inputs are accepted in two layouts:
- one tensor per policy feature, named like the feature, of shape [n] or [n, 1] (a categorical
  feature as BYTES strings, a numeric one as FP32, FP64, INT32, INT64 or BOOL): rows become
  objects keyed by feature name;
- one 2-D tensor of shape [n, n_features] in the policy's feature order (any name that is not a
  feature name), for policies whose features the tensor's datatype can carry (numeric datatypes
  for numeric features, BYTES for categorical ones).
Tensor data is JSON (flat in row-major order, or nested) or, as tritonclient sends it by
default, binary after the JSON header (the `binary_tensor_data` extension:
`Inference-Header-Content-Length` header, `parameters.binary_data_size` per input). Responses
are always JSON, which every V2 client reads.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import struct
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import PurePath
from typing import Any

import numpy as np
from opentelemetry import trace
from starlette.requests import Request

from gateway.api.http import byte_count, parse_json, read_body, read_json
from gateway.dataplane import DataPlane
from gateway.errors import BadRequest, GatewayError, NotFound, Unavailable
from gateway.policy import Feature, Policy

log = logging.getLogger("gateway.api.oip")

# The shape of create_app's handlers: (request, request id) -> (status, JSON payload).
Handler = Callable[[Request, str], Awaitable[tuple[int, Any]]]

SERVER_NAME = "ab-auto-promotion"
PLATFORM = "ab-auto-promotion_bandit"
OUTPUT_NAME = "predict"
HEADER_LENGTH = "inference-header-content-length"

SUPPORTED_DATATYPES = ("FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES")
NUMERIC_DATATYPES = ("FP32", "FP64", "INT32", "INT64", "BOOL")
_INT_BOUNDS = {"INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1)}
_NUMPY_DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8", "BOOL": "?"}
_PLATFORMS = {".skops": "sklearn", ".ubj": "xgboost", ".json": "xgboost"}


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_inputs")


def server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:
        return "0.0.0"


# -- tensors -------------------------------------------------------------------------------


_END = object()


def _flatten(data: Any, where: str) -> list[Any]:
    """Row-major elements of flat or nested JSON data."""
    if not isinstance(data, list):
        raise _invalid(f"{where}.data: must be a list, got {type(data).__name__}")
    out: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            out.append(item)
    return out


def _check_values(values: list[Any], datatype: str, where: str) -> list[Any]:
    if datatype in ("FP32", "FP64"):
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _invalid(f"{where}.data: {datatype} elements must be numbers, got {type(v).__name__} {v!r}")
    elif datatype in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[datatype]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int):
                raise _invalid(f"{where}.data: {datatype} elements must be integers, got {type(v).__name__} {v!r}")
            if not lo <= v <= hi:
                raise _invalid(f"{where}.data: {v} does not fit in {datatype}")
    elif datatype == "BOOL":
        for v in values:
            if not isinstance(v, bool):
                raise _invalid(f"{where}.data: BOOL elements must be true or false, got {type(v).__name__} {v!r}")
    else:  # BYTES: JSON carries them as strings
        for v in values:
            if not isinstance(v, str):
                raise _invalid(f"{where}.data: BYTES elements must be strings, got {type(v).__name__} {v!r}")
    return values


def _from_binary(raw: bytes, datatype: str, where: str) -> list[Any]:
    if datatype == "BYTES":
        out, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise _invalid(f"{where}: truncated BYTES element length in the binary data")
            (size,) = struct.unpack_from("<I", raw, pos)
            pos += 4
            if pos + size > len(raw):
                raise _invalid(f"{where}: a BYTES element runs past the end of its binary data")
            try:
                out.append(raw[pos : pos + size].decode("utf-8"))
            except UnicodeDecodeError:
                raise _invalid(f"{where}: BYTES elements must be UTF-8 text") from None
            pos += size
        return out
    dtype = np.dtype(_NUMPY_DTYPES[datatype])
    if len(raw) % dtype.itemsize:
        raise _invalid(f"{where}: {len(raw)} bytes of binary data is not a whole number of {datatype} elements")
    if datatype == "BOOL" and any(b > 1 for b in raw):
        raise _invalid(f"{where}: BOOL binary data must hold bytes 0 or 1")
    return np.frombuffer(raw, dtype=dtype).tolist()


def decode_tensor(tensor: Any, index: int, binary: memoryview | None = None) -> tuple[str, list[int], str, list[Any], int]:
    """One request input as (name, shape, datatype, row-major values, binary bytes consumed)."""
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise _invalid(f"{where}: must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where}.name: a non-empty string is required")
    where = f"inputs[{index}] ({name!r})"
    shape = tensor.get("shape")
    if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise _invalid(f"{where}.shape: a list of non-negative integers is required, got {shape!r}")
    datatype = tensor.get("datatype")
    if datatype not in SUPPORTED_DATATYPES:
        raise _invalid(f"{where}.datatype: {datatype!r} is not supported; use one of {list(SUPPORTED_DATATYPES)}")
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise _invalid(f"{where}.parameters: must be an object")
    size = params.get("binary_data_size")
    used = 0
    if size is not None:
        if "data" in tensor:
            raise _invalid(f"{where}: give either data or parameters.binary_data_size, not both")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _invalid(f"{where}.parameters.binary_data_size: a non-negative integer is required")
        if binary is None:
            raise _invalid(
                f"{where}: binary_data_size given but the request has no binary data "
                "(the Inference-Header-Content-Length header is missing)"
            )
        if size > len(binary):
            raise _invalid(f"{where}: binary_data_size {size} runs past the end of the request body")
        values = _from_binary(bytes(binary[:size]), datatype, where)
        used = size
    elif "data" in tensor:
        values = _check_values(_flatten(tensor["data"], where), datatype, where)
    else:
        raise _invalid(f"{where}.data: this field is required")
    expected = math.prod(shape)
    if len(values) != expected:
        raise _invalid(f"{where}: shape {shape} holds {expected} elements, but the data has {len(values)}")
    return name, shape, datatype, values, used


def _feature_accepts(feature: Feature, datatype: str) -> bool:
    if feature.type == "categorical":
        return datatype == "BYTES"
    return datatype in NUMERIC_DATATYPES


def _feature_value(value: Any, datatype: str) -> Any:
    # The encoder refuses JSON booleans as numbers; a BOOL tensor means 0 or 1.
    return int(value) if datatype == "BOOL" else value


def _expected_datatypes(feature: Feature) -> str:
    return "BYTES" if feature.type == "categorical" else "FP32, FP64, INT32, INT64 or BOOL"


def decode_inputs(body: Any, policy: Policy, binary: bytes | memoryview | None = None) -> list[Any]:
    """The V2 request's `inputs` as data-plane `instances` (a list of rows); BadRequest (400)
    for anything that breaks the protocol or fits neither input layout. Values themselves
    (a category not declared, a non-finite number) are left to the data plane's encoder."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with 'inputs'", code="invalid_body")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _invalid("inputs: a non-empty list of tensors is required")
    view = memoryview(binary) if binary is not None else None
    tensors = []
    for i, tensor in enumerate(inputs):
        name, shape, datatype, values, used = decode_tensor(tensor, i, view)
        if view is not None:
            view = view[used:]
        tensors.append((name, shape, datatype, values))
    if view is not None and len(view):
        raise _invalid(f"the request body has {len(view)} bytes of binary data that no input claims")

    features = policy.features
    names = [f.name for f in features]
    given = [t[0] for t in tensors]
    if len(set(given)) != len(given):
        dup = next(n for n in given if given.count(n) > 1)
        raise _invalid(f"inputs: the tensor name {dup!r} appears more than once")
    if all(n in names for n in given):
        return _rows_per_feature(tensors, features)
    if len(tensors) == 1:
        return _rows_from_matrix(tensors[0], features)
    unknown = [n for n in given if n not in names]
    raise _invalid(
        f"inputs: unknown tensor names {unknown}; send one tensor per feature named {names}, "
        f"or a single [n, {len(names)}] tensor"
    )


def _rows_per_feature(tensors: list[tuple[str, list[int], str, list[Any]]], features: Sequence[Feature]) -> list[Any]:
    by_name = {t[0]: t for t in tensors}
    missing = [f.name for f in features if f.name not in by_name]
    if missing:
        raise _invalid(f"inputs: missing tensors for features {missing}; one tensor per feature is expected")
    columns: list[list[Any]] = []
    for f in features:
        name, shape, datatype, values = by_name[f.name]
        where = f"inputs ({name!r})"
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise _invalid(f"{where}.shape: a feature tensor has shape [n] or [n, 1], got {shape}")
        if not _feature_accepts(f, datatype):
            raise _invalid(f"{where}.datatype: feature {f.name!r} is {f.type}; send {_expected_datatypes(f)}, not {datatype}")
        columns.append([_feature_value(v, datatype) for v in values])
    counts = {f.name: len(col) for f, col in zip(features, columns)}
    if len(set(counts.values())) > 1:
        raise _invalid(f"inputs: the feature tensors must have the same number of rows, got {counts}")
    keys = [f.name for f in features]
    return [dict(zip(keys, row)) for row in zip(*columns)]


def _rows_from_matrix(tensor: tuple[str, list[int], str, list[Any]], features: Sequence[Feature]) -> list[Any]:
    name, shape, datatype, values = tensor
    width = len(features)
    where = f"inputs ({name!r})"
    names = [f.name for f in features]
    if len(shape) != 2 or shape[1] != width:
        raise _invalid(
            f"{where}.shape: a single input tensor must have shape [n, {width}] (features {names} in this order), "
            f"got {shape}; or send one tensor per feature named like it"
        )
    for f in features:
        if not _feature_accepts(f, datatype):
            raise _invalid(
                f"{where}.datatype: {datatype} cannot carry {f.type} feature {f.name!r}; "
                f"send one tensor per feature named {names} ({f.name!r} as {_expected_datatypes(f)})"
            )
    flat = [_feature_value(v, datatype) for v in values]
    return [flat[i : i + width] for i in range(0, len(flat), width)]


def requested_outputs(body: Any) -> None:
    """A request may name its outputs; only 'predict' exists."""
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if outputs is None:
        return
    if not isinstance(outputs, list):
        raise _invalid("outputs: must be a list of {name} objects")
    for i, out in enumerate(outputs):
        name = out.get("name") if isinstance(out, dict) else None
        if name != OUTPUT_NAME:
            raise _invalid(f"outputs[{i}].name: {name!r} is not an output of this model; the only output is {OUTPUT_NAME!r}")


def _datatype_of(values: Sequence[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL" if values else "INT64"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str,
    predictions: Sequence[Any],
    *,
    propensity: float | None = None,
    reward_token: str | None = None,
    client_id: str | None = None,
) -> dict[str, Any]:
    """A V2 inference response: one output tensor 'predict' with the labels (INT64 for integer
    labels), `model_version` the variant, `id` our request id, and the routing facts in
    `parameters` (propensity and reward_token only for a bandit-routed request)."""
    data = list(predictions)
    datatype = _datatype_of(data)
    if datatype == "BYTES":
        data = [v if isinstance(v, str) else json.dumps(v) for v in data]
    parameters: dict[str, Any] = {"variant": model_version}
    if propensity is not None:
        parameters["propensity"] = propensity
    if reward_token is not None:
        parameters["reward_token"] = reward_token
    if client_id is not None:
        parameters["client_id"] = client_id
    return {
        "model_name": model_name,
        "model_version": model_version,
        "id": request_id,
        "parameters": parameters,
        "outputs": [{"name": OUTPUT_NAME, "datatype": datatype, "shape": [len(data)], "data": data}],
    }


def model_metadata(policy: Policy, versions: Sequence[str], version: str | None = None) -> dict[str, Any]:
    """Model metadata: inputs are the per-feature tensors (the layout every policy accepts)."""
    platform = PLATFORM
    if version is not None:
        declared = next((v for v in policy.variants if v.name == version), None)
        suffix = PurePath(declared.model).suffix.lower() if declared else ""
        platform = _PLATFORMS.get(suffix, "ab-auto-promotion_variant")
    return {
        "name": policy.experiment,
        "versions": list(versions),
        "platform": platform,
        "inputs": [
            {"name": f.name, "datatype": "BYTES" if f.type == "categorical" else "FP64", "shape": [-1]}
            for f in policy.features
        ],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "INT64", "shape": [-1]}],
    }


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": server_version(), "extensions": []}


# -- handlers ------------------------------------------------------------------------------


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
            raise _invalid("id: must be a string")
        params = body.get("parameters") if isinstance(body, dict) else None
        if params is not None and not isinstance(params, dict):
            raise _invalid("parameters: must be an object")
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
