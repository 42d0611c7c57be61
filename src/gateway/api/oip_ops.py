"""The Open Inference Protocol's operations without their transport, shared by the REST routes
(oip.py) and the gRPC service (grpc/servicer.py): model and version lookup, readiness, and
infer (tensors decoded, the data plane called, the response built). Each raises the gateway's
own errors (gateway.errors), which each transport renders in its own form, so both answer the
same request with the same message."""
from __future__ import annotations

from typing import Any

from gateway.api.oip_responses import encode_response, requested_outputs
from gateway.api.oip_tensors import decode_inputs, invalid_inputs
from gateway.dataplane import DataPlane
from gateway.errors import NotFound, Unavailable


def model_runtime(plane: DataPlane, experiment: str) -> Any:
    """The experiment's runtime; 404 for a model this gateway does not serve."""
    rt = plane.experiments.get(experiment)
    if rt is None:
        raise NotFound(f"no model named {experiment!r}", code="experiment_not_found")
    return rt


def model_version(rt: Any, variant: str) -> str:
    if variant not in rt.variants:
        raise NotFound(
            f"model {rt.policy.experiment!r} has no version {variant!r}; versions: {list(rt.variants)}",
            code="variant_not_found",
        )
    return variant


def waiting_models(plane: DataPlane) -> list[str]:
    """Experiments whose state is not loaded yet (no allocation to route by)."""
    return [name for name, rt in plane.experiments.items() if rt.allocation is None]


def check_server_ready(plane: DataPlane) -> None:
    waiting = waiting_models(plane)
    if waiting:
        raise Unavailable(f"models not ready yet: {waiting}", code="not_ready")


def check_model_ready(name: str, rt: Any) -> None:
    if rt.allocation is None:
        raise Unavailable(f"model {name!r} is not ready yet", code="not_ready")


def client_id_and_unit(body: Any) -> tuple[str | None, str | None]:
    client_id = body.get("id") if isinstance(body, dict) else None
    if client_id is not None and not isinstance(client_id, str):
        raise invalid_inputs("id: must be a string")
    params = body.get("parameters") if isinstance(body, dict) else None
    if params is not None and not isinstance(params, dict):
        raise invalid_inputs("parameters: must be an object")
    unit_id = (params or {}).get("unit_id")
    return client_id, unit_id


async def infer(
    plane: DataPlane,
    experiment: str,
    body: Any,
    binary: bytes | None,
    request_id: str,
    variant: str | None = None,
) -> dict[str, Any]:
    """A V2 inference request (the JSON-shaped body and the binary tensor data that follows it)
    answered as a V2 response dict. Without `variant` the bandit routes it (it counts toward
    learning, and the answer carries propensity and reward_token); with one, that named variant
    answers, outside the experiment."""
    rt = model_runtime(plane, experiment)
    if variant is not None:
        model_version(rt, variant)
    instances = decode_inputs(body, rt.policy, binary)
    requested_outputs(body)
    client_id, unit_id = client_id_and_unit(body)
    if variant is not None:
        matrix = plane.encode(rt, instances)
        result = await plane.predict_variant(experiment, variant, matrix)
        return encode_response(experiment, variant, request_id, result["predictions"], client_id=client_id)
    payload: dict[str, Any] = {"instances": instances}
    if unit_id is not None:
        payload["unit_id"] = unit_id
    result = await plane.predict(experiment, payload, request_id)
    return encode_response(
        experiment,
        result["variant"],
        result["request_id"],
        result["predictions"],
        propensity=result["propensity"],
        reward_token=result["reward_token"],
        client_id=client_id,
    )
