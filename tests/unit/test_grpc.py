"""Unit tests for gateway.api.grpc: the protocol's messages to and from the REST V2 shapes (one
decode path for both), status codes, and stubs that load beside tritonclient's."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tritongrpc
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.utils import serialize_byte_tensor

from gateway.api.grpc import grpc_predict_v2_pb2 as pb
from gateway.api.grpc.convert import request_body, response_message
from gateway.api.grpc.status import status_of
from gateway.api.oip import decode_inputs, encode_response
from gateway.errors import BadRequest, NotFound, PayloadTooLarge, TooManyRequests, Unavailable, Unprocessable
from gateway.policy import parse_policy
from tests.unit.test_oip import CHURN  # the policy the REST decode is tested with

ROWS = [{"tenure": 12.0, "monthly_charges": 80.5, "plan": "pro"}, {"tenure": 1.0, "monthly_charges": 99.0, "plan": "basic"}]


def raw_request(tensors: list[tuple[str, str, np.ndarray]], **fields) -> pb.ModelInferRequest:
    """A request as tritonclient.grpc sends it: every tensor's data in raw_input_contents."""
    request = pb.ModelInferRequest(model_name="churn", **fields)
    for name, datatype, array in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        raw = serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes()
        request.raw_input_contents.append(raw)
    return request


def decoded(request: pb.ModelInferRequest) -> list:
    body, binary = request_body(request)
    return decode_inputs(body, CHURN, binary)


def invalid(request: pb.ModelInferRequest) -> str:
    with pytest.raises(BadRequest) as info:
        decoded(request)
    return info.value.message


def test_the_stubs_load_beside_tritonclients_own_and_speak_the_same_wire_format():
    # Both define `inference.*` messages; ours live in a pool of their own, so neither import fails.
    ours = raw_request([("tenure", "FP64", np.array([12.0]))], id="c-1")
    theirs = triton_pb.ModelInferRequest.FromString(ours.SerializeToString())
    assert (theirs.model_name, theirs.id, theirs.inputs[0].name) == ("churn", "c-1", "tenure")
    assert pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name == "inference.GRPCInferenceService"
    methods = set(pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name)
    assert methods == {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"}


@pytest.mark.parametrize(("datatype", "dtype"), [("FP32", np.float32), ("FP64", np.float64), ("INT64", np.int64)])
def test_raw_tensors_decode_to_the_same_rows_as_rest(datatype, dtype):
    request = raw_request(
        [
            ("tenure", datatype, np.array([12, 1], dtype=dtype)),
            ("monthly_charges", "FP64", np.array([80.5, 99.0])),
            ("plan", "BYTES", np.array([b"pro", b"basic"], dtype=np.object_)),
        ]
    )
    assert decoded(request) == ROWS


def test_typed_contents_decode_too():
    request = pb.ModelInferRequest(model_name="churn")
    request.inputs.add(name="tenure", datatype="FP32", shape=[2]).contents.fp32_contents.extend([12.0, 1.0])
    request.inputs.add(name="monthly_charges", datatype="FP64", shape=[2, 1]).contents.fp64_contents.extend([80.5, 99.0])
    request.inputs.add(name="plan", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"pro", b"basic"])
    assert decoded(request) == ROWS


def test_a_single_matrix_tensor_is_the_other_layout():
    numeric = parse_policy({"experiment": "n", "features": [{"name": "a"}, {"name": "b"}], "variants": [{"name": "v", "model": "v.skops"}]})
    body, binary = request_body(raw_request([("x", "INT64", np.array([[1, 2], [3, 4]], dtype=np.int64))]))
    assert decode_inputs(body, numeric, binary) == [[1, 2], [3, 4]]


def test_id_parameters_and_outputs_come_through_as_in_a_rest_body():
    request = raw_request(
        [("tenure", "FP64", np.array([1.0]))],
        id="client-7",
        parameters={"unit_id": pb.InferParameter(string_param="user-42"), "n": pb.InferParameter(int64_param=3)},
    )
    request.outputs.add(name="predict")
    body, _ = request_body(request)
    assert body["id"] == "client-7"
    assert body["parameters"] == {"unit_id": "user-42", "n": 3}
    assert body["outputs"] == [{"name": "predict"}]


def test_breaks_of_the_protocol_are_named_as_over_rest():
    bad_shape = raw_request([("tenure", "FP64", np.array([1.0, 2.0]))])
    bad_shape.inputs[0].shape[:] = [3]
    assert invalid(bad_shape) == "inputs[0] ('tenure'): shape [3] holds 3 elements, but the data has 2"
    unsupported = pb.ModelInferRequest(model_name="churn")
    unsupported.inputs.add(name="tenure", datatype="FP16", shape=[1])
    assert "'FP16' is not supported" in invalid(unsupported)


def test_breaks_only_grpc_can_make_have_messages_of_their_own():
    wrong_field = pb.ModelInferRequest(model_name="churn")
    wrong_field.inputs.add(name="tenure", datatype="FP32", shape=[1]).contents.fp64_contents.append(1.0)
    assert invalid(wrong_field) == "inputs[0] ('tenure').contents: FP32 data goes in fp32_contents, not fp64_contents"

    missing_raw = raw_request([("tenure", "FP64", np.array([1.0]))])
    missing_raw.inputs.add(name="plan", datatype="BYTES", shape=[1])
    assert invalid(missing_raw).startswith("raw_input_contents: 1 entries for 2 inputs")

    both = raw_request([("tenure", "FP64", np.array([1.0]))])
    both.inputs[0].contents.fp64_contents.append(1.0)
    assert invalid(both) == "inputs[0] ('tenure'): give either contents or raw_input_contents, not both"

    not_text = pb.ModelInferRequest(model_name="churn")
    not_text.inputs.add(name="plan", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"\xff")
    assert invalid(not_text) == "inputs[0] ('plan'): BYTES elements must be UTF-8 text"


def test_a_response_reads_in_tritonclient_like_the_rest_one():
    answer = encode_response("churn", "xgb", "01J-REQ", [1, 0], propensity=0.62, reward_token="tok.en", client_id="c-1")
    message = response_message(answer)
    result = tritongrpc.InferResult(triton_pb.ModelInferResponse.FromString(message.SerializeToString()))
    assert result.as_numpy("predict").tolist() == [1, 0]
    response = result.get_response(as_json=True)
    assert (response["model_name"], response["model_version"], response["id"]) == ("churn", "xgb", "01J-REQ")
    params = {k: v["string_param"] for k, v in response["parameters"].items()}
    assert params == {"variant": "xgb", "propensity": "0.62", "reward_token": "tok.en", "client_id": "c-1"}
    assert float(params["propensity"]) == answer["parameters"]["propensity"]  # the same number, exactly


@pytest.mark.parametrize(("predictions", "datatype"), [([0.25, 1.5], "FP64"), (["yes", "no"], "BYTES"), ([True, False], "BOOL")])
def test_every_output_datatype_reads_back(predictions, datatype):
    message = response_message(encode_response("churn", "xgb", "r", predictions))
    result = tritongrpc.InferResult(triton_pb.ModelInferResponse.FromString(message.SerializeToString()))
    assert message.outputs[0].datatype == datatype
    values = result.as_numpy("predict").tolist()
    assert [v.decode() if isinstance(v, bytes) else v for v in values] == predictions


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("no model named 'x'"), grpc.StatusCode.NOT_FOUND),
        (BadRequest("inputs: ..."), grpc.StatusCode.INVALID_ARGUMENT),
        (Unprocessable("instances: ..."), grpc.StatusCode.INVALID_ARGUMENT),
        (Unavailable("no variant is healthy"), grpc.StatusCode.UNAVAILABLE),
        (Unavailable("the variant is at capacity", code="overloaded"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (TooManyRequests("quota"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (PayloadTooLarge("too big"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_errors_map_to_grpc_status_codes(error, code):
    assert status_of(error) is code
