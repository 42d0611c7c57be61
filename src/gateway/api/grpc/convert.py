"""gRPC messages to and from the shapes the REST V2 path works with, so that both share one
decode path (oip_tensors.decode_inputs) and one response builder (oip_responses).

A request's tensors become the REST body's `inputs`: typed `contents` become `data`, and
`raw_input_contents` become REST's binary tensor data (each input's `binary_data_size`, the
bytes concatenated in input order), which is the same little-endian layout. The response's
output goes back as `raw_output_contents`, as Triton answers (tritonclient reads numeric outputs
only from there)."""
from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from gateway.api.grpc import grpc_predict_v2_pb2 as pb
from gateway.api.oip_tensors import encode_binary, invalid_inputs

# The `contents` field that carries each supported datatype.
CONTENTS_FIELD = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "BOOL": "bool_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = (*CONTENTS_FIELD.values(), "uint_contents", "uint64_contents")


def parameter_value(param: pb.InferParameter) -> Any:
    choice = param.WhichOneof("parameter_choice")
    return getattr(param, choice) if choice else None


def parameter_message(value: Any) -> pb.InferParameter:
    """Booleans, integers and strings as themselves; anything else (a float such as the
    propensity) as its shortest exact text, the digits REST's JSON shows."""
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    return pb.InferParameter(string_param=value if isinstance(value, str) else repr(value))


def _contents_data(tensor: pb.ModelInferRequest.InferInputTensor, where: str) -> list[Any] | None:
    """The tensor's typed contents as REST's `data`; None for a datatype the protocol's
    decoder will refuse with its own message."""
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        return None
    others = [f for f in _ALL_FIELDS if f != field and len(getattr(tensor.contents, f))]
    if others:
        raise invalid_inputs(f"{where}.contents: {tensor.datatype} data goes in {field}, not {others[0]}")
    values = list(getattr(tensor.contents, field))
    if tensor.datatype == "BYTES":
        try:
            return [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise invalid_inputs(f"{where}: BYTES elements must be UTF-8 text") from None
    return values


def request_body(request: pb.ModelInferRequest) -> tuple[dict[str, Any], bytes | None]:
    """The request as REST's V2 body and binary tensor data (None when it has none)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid_inputs(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs; give one per input, in their order"
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        where = f"inputs[{i}] ({tensor.name!r})"
        entry: dict[str, Any] = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype}
        if raw:
            if tensor.HasField("contents"):
                raise invalid_inputs(f"{where}: give either contents or raw_input_contents, not both")
            entry["parameters"] = {"binary_data_size": len(raw[i])}
        else:
            data = _contents_data(tensor, where)
            entry["data"] = [] if data is None else data
        inputs.append(entry)
    body: dict[str, Any] = {"inputs": inputs}
    if request.id:
        body["id"] = request.id
    if request.parameters:
        body["parameters"] = {k: parameter_value(v) for k, v in request.parameters.items()}
    if request.outputs:
        body["outputs"] = [{"name": out.name} for out in request.outputs]
    return body, (b"".join(raw) if raw else None)


def response_message(answer: dict[str, Any]) -> pb.ModelInferResponse:
    """A V2 response dict (oip_responses.encode_response) as the protocol's message."""
    response = pb.ModelInferResponse(model_name=answer["model_name"], model_version=answer["model_version"], id=answer["id"])
    for key, value in answer["parameters"].items():
        response.parameters[key].CopyFrom(parameter_message(value))
    for output in answer["outputs"]:
        response.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
        response.raw_output_contents.append(encode_binary(output["data"], output["datatype"]))
    return response


def model_metadata_message(metadata: dict[str, Any]) -> pb.ModelMetadataResponse:
    """oip_responses.model_metadata's dict: its keys are the message's own field names."""
    return json_format.ParseDict(metadata, pb.ModelMetadataResponse())


def server_metadata_message(metadata: dict[str, Any]) -> pb.ServerMetadataResponse:
    return json_format.ParseDict(metadata, pb.ServerMetadataResponse())
