"""The bodies the V2 routes answer with: an inference response, model and server metadata;
and the one output every model has. Responses are always JSON, which every V2 client reads."""
from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import metadata
from pathlib import PurePath
from typing import Any

from gateway.api.oip_tensors import datatype_of, invalid_inputs
from gateway.policy import Policy

SERVER_NAME = "ab-auto-promotion"
PLATFORM = "ab-auto-promotion_bandit"
OUTPUT_NAME = "predict"
_PLATFORMS = {".skops": "sklearn", ".ubj": "xgboost", ".json": "xgboost"}


def server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:
        return "0.0.0"


def requested_outputs(body: Any) -> None:
    """A request may name its outputs; only 'predict' exists."""
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if outputs is None:
        return
    if not isinstance(outputs, list):
        raise invalid_inputs("outputs: must be a list of {name} objects")
    for i, out in enumerate(outputs):
        name = out.get("name") if isinstance(out, dict) else None
        if name != OUTPUT_NAME:
            raise invalid_inputs(f"outputs[{i}].name: {name!r} is not an output of this model; the only output is {OUTPUT_NAME!r}")


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
    datatype = datatype_of(data)
    if datatype == "BYTES":
        data = [v if isinstance(v, str) else json.dumps(v) for v in data]
    optional = {"propensity": propensity, "reward_token": reward_token, "client_id": client_id}
    parameters: dict[str, Any] = {"variant": model_version, **{k: v for k, v in optional.items() if v is not None}}
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
