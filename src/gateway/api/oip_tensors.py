"""V2 (Open Inference Protocol) request tensors to the data plane's rows, and the protocol's
datatypes. Pure functions; any break of the protocol is a BadRequest (400).

Inputs are accepted in two layouts:
- one tensor per policy feature, named like the feature, of shape [n] or [n, 1] (a categorical
  feature as BYTES strings, a numeric one as FP32, FP64, INT32, INT64 or BOOL): rows become
  objects keyed by feature name;
- one 2-D tensor of shape [n, n_features] in the policy's feature order (any name that is not a
  feature name), for policies whose features the tensor's datatype can carry (numeric datatypes
  for numeric features, BYTES for categorical ones).
Tensor data is JSON (flat in row-major order, or nested) or, as tritonclient sends it by
default, binary after the JSON header (the `binary_tensor_data` extension:
`Inference-Header-Content-Length` header, `parameters.binary_data_size` per input).
"""
from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from gateway.errors import BadRequest
from gateway.policy import Feature, Policy

SUPPORTED_DATATYPES = ("FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES")
NUMERIC_DATATYPES = ("FP32", "FP64", "INT32", "INT64", "BOOL")
_INT_BOUNDS = {"INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1)}
_NUMPY_DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8", "BOOL": "?"}


def invalid_inputs(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_inputs")


_END = object()


def _flatten(data: Any, where: str) -> list[Any]:
    """Row-major elements of flat or nested JSON data."""
    if not isinstance(data, list):
        raise invalid_inputs(f"{where}.data: must be a list, got {type(data).__name__}")
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
                raise invalid_inputs(f"{where}.data: {datatype} elements must be numbers, got {type(v).__name__} {v!r}")
    elif datatype in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[datatype]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int):
                raise invalid_inputs(f"{where}.data: {datatype} elements must be integers, got {type(v).__name__} {v!r}")
            if not lo <= v <= hi:
                raise invalid_inputs(f"{where}.data: {v} does not fit in {datatype}")
    elif datatype == "BOOL":
        for v in values:
            if not isinstance(v, bool):
                raise invalid_inputs(f"{where}.data: BOOL elements must be true or false, got {type(v).__name__} {v!r}")
    else:  # BYTES: JSON carries them as strings
        for v in values:
            if not isinstance(v, str):
                raise invalid_inputs(f"{where}.data: BYTES elements must be strings, got {type(v).__name__} {v!r}")
    return values


def _from_binary(raw: bytes, datatype: str, where: str) -> list[Any]:
    if datatype == "BYTES":
        out, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise invalid_inputs(f"{where}: truncated BYTES element length in the binary data")
            (size,) = struct.unpack_from("<I", raw, pos)
            pos += 4
            if pos + size > len(raw):
                raise invalid_inputs(f"{where}: a BYTES element runs past the end of its binary data")
            try:
                out.append(raw[pos : pos + size].decode("utf-8"))
            except UnicodeDecodeError:
                raise invalid_inputs(f"{where}: BYTES elements must be UTF-8 text") from None
            pos += size
        return out
    dtype = np.dtype(_NUMPY_DTYPES[datatype])
    if len(raw) % dtype.itemsize:
        raise invalid_inputs(f"{where}: {len(raw)} bytes of binary data is not a whole number of {datatype} elements")
    if datatype == "BOOL" and any(b > 1 for b in raw):
        raise invalid_inputs(f"{where}: BOOL binary data must hold bytes 0 or 1")
    return np.frombuffer(raw, dtype=dtype).tolist()


def encode_binary(values: Sequence[Any], datatype: str) -> bytes:
    """`values` in the protocol's binary layout, the inverse of the decoding above: little-endian
    elements, and each BYTES element as a 4-byte length and its UTF-8 text (what gRPC's
    raw_output_contents holds, and what tritonclient reads)."""
    if datatype == "BYTES":
        parts = []
        for v in values:
            raw = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(parts)
    return np.asarray(values, dtype=np.dtype(_NUMPY_DTYPES[datatype])).tobytes()


def decode_tensor(tensor: Any, index: int, binary: memoryview | None = None) -> tuple[str, list[int], str, list[Any], int]:
    """One request input as (name, shape, datatype, row-major values, binary bytes consumed)."""
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise invalid_inputs(f"{where}: must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise invalid_inputs(f"{where}.name: a non-empty string is required")
    where = f"inputs[{index}] ({name!r})"
    shape = tensor.get("shape")
    if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise invalid_inputs(f"{where}.shape: a list of non-negative integers is required, got {shape!r}")
    datatype = tensor.get("datatype")
    if datatype not in SUPPORTED_DATATYPES:
        raise invalid_inputs(f"{where}.datatype: {datatype!r} is not supported; use one of {list(SUPPORTED_DATATYPES)}")
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise invalid_inputs(f"{where}.parameters: must be an object")
    size = params.get("binary_data_size")
    used = 0
    if size is not None:
        if "data" in tensor:
            raise invalid_inputs(f"{where}: give either data or parameters.binary_data_size, not both")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise invalid_inputs(f"{where}.parameters.binary_data_size: a non-negative integer is required")
        if binary is None:
            raise invalid_inputs(
                f"{where}: binary_data_size given but the request has no binary data "
                "(the Inference-Header-Content-Length header is missing)"
            )
        if size > len(binary):
            raise invalid_inputs(f"{where}: binary_data_size {size} runs past the end of the request body")
        values = _from_binary(bytes(binary[:size]), datatype, where)
        used = size
    elif "data" in tensor:
        values = _check_values(_flatten(tensor["data"], where), datatype, where)
    else:
        raise invalid_inputs(f"{where}.data: this field is required")
    expected = math.prod(shape)
    if len(values) != expected:
        raise invalid_inputs(f"{where}: shape {shape} holds {expected} elements, but the data has {len(values)}")
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
        raise invalid_inputs("inputs: a non-empty list of tensors is required")
    view = memoryview(binary) if binary is not None else None
    tensors = []
    for i, tensor in enumerate(inputs):
        name, shape, datatype, values, used = decode_tensor(tensor, i, view)
        if view is not None:
            view = view[used:]
        tensors.append((name, shape, datatype, values))
    if view is not None and len(view):
        raise invalid_inputs(f"the request body has {len(view)} bytes of binary data that no input claims")

    features = policy.features
    names = [f.name for f in features]
    given = [t[0] for t in tensors]
    if len(set(given)) != len(given):
        dup = next(n for n in given if given.count(n) > 1)
        raise invalid_inputs(f"inputs: the tensor name {dup!r} appears more than once")
    if all(n in names for n in given):
        return _rows_per_feature(tensors, features)
    if len(tensors) == 1:
        return _rows_from_matrix(tensors[0], features)
    unknown = [n for n in given if n not in names]
    raise invalid_inputs(
        f"inputs: unknown tensor names {unknown}; send one tensor per feature named {names}, "
        f"or a single [n, {len(names)}] tensor"
    )


def _rows_per_feature(tensors: list[tuple[str, list[int], str, list[Any]]], features: Sequence[Feature]) -> list[Any]:
    by_name = {t[0]: t for t in tensors}
    missing = [f.name for f in features if f.name not in by_name]
    if missing:
        raise invalid_inputs(f"inputs: missing tensors for features {missing}; one tensor per feature is expected")
    columns: list[list[Any]] = []
    for f in features:
        name, shape, datatype, values = by_name[f.name]
        where = f"inputs ({name!r})"
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise invalid_inputs(f"{where}.shape: a feature tensor has shape [n] or [n, 1], got {shape}")
        if not _feature_accepts(f, datatype):
            raise invalid_inputs(f"{where}.datatype: feature {f.name!r} is {f.type}; send {_expected_datatypes(f)}, not {datatype}")
        columns.append([_feature_value(v, datatype) for v in values])
    counts = {f.name: len(col) for f, col in zip(features, columns)}
    if len(set(counts.values())) > 1:
        raise invalid_inputs(f"inputs: the feature tensors must have the same number of rows, got {counts}")
    keys = [f.name for f in features]
    return [dict(zip(keys, row)) for row in zip(*columns)]


def _rows_from_matrix(tensor: tuple[str, list[int], str, list[Any]], features: Sequence[Feature]) -> list[Any]:
    name, shape, datatype, values = tensor
    width = len(features)
    where = f"inputs ({name!r})"
    names = [f.name for f in features]
    if len(shape) != 2 or shape[1] != width:
        raise invalid_inputs(
            f"{where}.shape: a single input tensor must have shape [n, {width}] (features {names} in this order), "
            f"got {shape}; or send one tensor per feature named like it"
        )
    for f in features:
        if not _feature_accepts(f, datatype):
            raise invalid_inputs(
                f"{where}.datatype: {datatype} cannot carry {f.type} feature {f.name!r}; "
                f"send one tensor per feature named {names} ({f.name!r} as {_expected_datatypes(f)})"
            )
    flat = [_feature_value(v, datatype) for v in values]
    return [flat[i : i + width] for i in range(0, len(flat), width)]


def datatype_of(values: Sequence[Any]) -> str:
    """The V2 datatype of a response's values; BYTES for anything neither boolean nor numeric."""
    if all(isinstance(v, bool) for v in values):
        return "BOOL" if values else "INT64"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"
