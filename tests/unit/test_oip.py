"""Unit tests for gateway.api.oip: V2 tensors to data-plane rows, and predictions to V2 responses."""
from __future__ import annotations

import asyncio
import json
import struct

import numpy as np
import pytest

from gateway.api.oip import (
    decode_inputs,
    encode_response,
    model_metadata,
    protocol_errors,
    requested_outputs,
    server_metadata,
)
from gateway.errors import BadRequest, GatewayError, NotFound
from gateway.learning.features import FeatureEncoder
from gateway.policy import parse_policy

NUMERIC = parse_policy(
    {
        "experiment": "iris",
        "features": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
        "variants": [{"name": "lr", "model": "m/lr.skops"}, {"name": "xgb", "model": "m/xgb.ubj"}],
    }
)
CHURN = parse_policy(
    {
        "experiment": "churn",
        "features": [
            {"name": "tenure"},
            {"name": "monthly_charges"},
            {"name": "plan", "type": "categorical", "values": ["basic", "pro", "enterprise"]},
        ],
        "variants": [{"name": "logreg", "model": "m/lr.skops"}, {"name": "xgb", "model": "m/xgb.ubj"}],
    }
)
CATEGORICAL = parse_policy(
    {
        "experiment": "cats",
        "features": [
            {"name": "color", "type": "categorical", "values": ["red", "blue"]},
            {"name": "size", "type": "categorical", "values": ["s", "m", "l"]},
        ],
        "variants": [{"name": "a", "model": "a.skops"}],
    }
)


def tensor(name, shape, datatype, data, **extra):
    return {"name": name, "shape": shape, "datatype": datatype, "data": data, **extra}


def bad_request(body, policy=NUMERIC, binary=None) -> str:
    with pytest.raises(BadRequest) as info:
        decode_inputs(body, policy, binary)
    assert info.value.status == 400
    return info.value.message


# -- one 2-D tensor in feature order ---------------------------------------------------------


@pytest.mark.parametrize(
    "datatype,data,rows",
    [
        ("FP32", [1.5, 2.0, 3.25, 4.0, 5.0, 6.5], [[1.5, 2.0, 3.25], [4.0, 5.0, 6.5]]),
        ("FP64", [0.1, 0.2, 0.3, 1e300, -2.5, 0], [[0.1, 0.2, 0.3], [1e300, -2.5, 0]]),
        ("INT32", [1, -2, 3, 2**31 - 1, 0, -(2**31)], [[1, -2, 3], [2**31 - 1, 0, -(2**31)]]),
        ("INT64", [1, 2, 3, 2**63 - 1, 0, -(2**63)], [[1, 2, 3], [2**63 - 1, 0, -(2**63)]]),
        ("BOOL", [True, False, True, False, False, True], [[1, 0, 1], [0, 0, 1]]),
    ],
)
def test_matrix_of_each_numeric_datatype(datatype, data, rows):
    body = {"inputs": [tensor("input-0", [2, 3], datatype, data)]}
    assert decode_inputs(body, NUMERIC) == rows
    # The rows are what the data plane's encoder takes.
    assert FeatureEncoder(NUMERIC.features).encode(rows).shape == (2, 3)


def test_nested_data_equals_flat_data():
    flat = {"inputs": [tensor("x", [2, 3], "FP64", [1, 2, 3, 4, 5, 6])]}
    nested = {"inputs": [tensor("x", [2, 3], "FP64", [[1, 2, 3], [4, 5, 6]])]}
    deep = {"inputs": [tensor("x", [2, 3], "FP64", [[[1], [2, 3]], [4, [5, [6]]]])]}
    assert decode_inputs(flat, NUMERIC) == decode_inputs(nested, NUMERIC) == decode_inputs(deep, NUMERIC)
    assert decode_inputs(flat, NUMERIC) == [[1, 2, 3], [4, 5, 6]]


def test_bytes_matrix_for_a_policy_of_categorical_features():
    body = {"inputs": [tensor("input-0", [2, 2], "BYTES", [["red", "s"], ["blue", "l"]])]}
    rows = decode_inputs(body, CATEGORICAL)
    assert rows == [["red", "s"], ["blue", "l"]]
    assert FeatureEncoder(CATEGORICAL.features).encode(rows).tolist() == [[1, 0, 1, 0, 0], [0, 1, 0, 0, 1]]


def test_matrix_shape_errors():
    assert "shape [2, 3] holds 6 elements, but the data has 5" in bad_request(
        {"inputs": [tensor("x", [2, 3], "FP32", [1, 2, 3, 4, 5])]}
    )
    assert "holds 6 elements, but the data has 8" in bad_request(
        {"inputs": [tensor("x", [2, 3], "FP32", [[1, 2, 3, 4], [5, 6, 7, 8]])]}
    )
    msg = bad_request({"inputs": [tensor("x", [3, 2], "FP32", [1, 2, 3, 4, 5, 6])]})
    assert "[n, 3]" in msg and "['a', 'b', 'c']" in msg
    assert "[n, 3]" in bad_request({"inputs": [tensor("x", [6], "FP32", [1, 2, 3, 4, 5, 6])]})
    assert "[n, 3]" in bad_request({"inputs": [tensor("x", [1, 2, 3], "FP32", [1, 2, 3, 4, 5, 6])]})
    assert "non-negative integers" in bad_request({"inputs": [tensor("x", [2, -3], "FP32", [1])]})
    assert "non-negative integers" in bad_request({"inputs": [tensor("x", "2x3", "FP32", [1])]})
    assert "non-negative integers" in bad_request({"inputs": [tensor("x", [2.0, 3], "FP32", [1])]})


def test_a_matrix_cannot_carry_categorical_features():
    msg = bad_request({"inputs": [tensor("x", [1, 3], "FP64", [1, 2, 3])]}, CHURN)
    assert "one tensor per feature" in msg and "'plan'" in msg
    msg = bad_request({"inputs": [tensor("x", [1, 3], "BYTES", ["1", "2", "pro"])]}, CHURN)
    assert "BYTES cannot carry numeric feature 'tenure'" in msg


def test_zero_rows_decode_to_no_instances():
    # The data plane's encoder answers an empty request (422), as for /v1 predict.
    assert decode_inputs({"inputs": [tensor("x", [0, 3], "FP32", [])]}, NUMERIC) == []


# -- one tensor per feature ------------------------------------------------------------------


def test_per_feature_tensors_with_a_categorical_bytes_tensor():
    body = {
        "inputs": [
            tensor("plan", [2], "BYTES", ["pro", "basic"]),
            tensor("tenure", [2, 1], "INT64", [[12], [3]]),
            tensor("monthly_charges", [2, 1], "FP32", [80.5, 20.0]),
        ]
    }
    rows = decode_inputs(body, CHURN)
    assert rows == [
        {"tenure": 12, "monthly_charges": 80.5, "plan": "pro"},
        {"tenure": 3, "monthly_charges": 20.0, "plan": "basic"},
    ]
    X = FeatureEncoder(CHURN.features).encode(rows)
    np.testing.assert_array_equal(X, [[12, 80.5, 0, 1, 0], [3, 20.0, 1, 0, 0]])


def test_per_feature_tensors_for_a_numeric_policy_and_bool_as_number():
    body = {
        "inputs": [
            tensor("a", [2], "FP64", [1.0, 2.0]),
            tensor("b", [2], "INT32", [5, 6]),
            tensor("c", [2, 1], "BOOL", [[True], [False]]),
        ]
    }
    assert decode_inputs(body, NUMERIC) == [{"a": 1.0, "b": 5, "c": 1}, {"a": 2.0, "b": 6, "c": 0}]


def test_per_feature_values_are_left_to_the_encoder():
    # An undeclared category passes decoding; the encoder names it (422 from the data plane).
    body = {
        "inputs": [
            tensor("tenure", [1], "FP64", [1]),
            tensor("monthly_charges", [1], "FP64", [2]),
            tensor("plan", [1], "BYTES", ["gold"]),
        ]
    }
    rows = decode_inputs(body, CHURN)
    assert rows == [{"tenure": 1, "monthly_charges": 2, "plan": "gold"}]


def test_per_feature_errors():
    ok = {
        "tenure": tensor("tenure", [2], "FP64", [1, 2]),
        "monthly_charges": tensor("monthly_charges", [2], "FP64", [3, 4]),
        "plan": tensor("plan", [2], "BYTES", ["pro", "basic"]),
    }

    def body(**changes):
        inputs = {**ok, **changes}
        return {"inputs": [t for t in inputs.values() if t is not None]}

    assert "missing tensors for features ['plan']" in bad_request(body(plan=None), CHURN)
    msg = bad_request(body(plan=tensor("plan", [1], "BYTES", ["pro"])), CHURN)
    assert "same number of rows, got {'tenure': 2, 'monthly_charges': 2, 'plan': 1}" in msg
    msg = bad_request(body(plan=tensor("plan", [1, 2], "BYTES", ["pro", "basic"])), CHURN)
    assert "[n] or [n, 1]" in msg
    msg = bad_request(body(plan=tensor("plan", [2], "INT64", [0, 1])), CHURN)
    assert "feature 'plan' is categorical; send BYTES" in msg
    msg = bad_request(body(tenure=tensor("tenure", [2], "BYTES", ["1", "2"])), CHURN)
    assert "feature 'tenure' is numeric" in msg
    msg = bad_request(body(extra=tensor("extra", [2], "FP64", [1, 2])), CHURN)
    assert "unknown tensor names ['extra']" in msg
    dup = {"inputs": [*body()["inputs"], tensor("plan", [2], "BYTES", ["pro", "pro"])]}
    assert "'plan' appears more than once" in bad_request(dup, CHURN)


def test_wrong_names():
    two = {"inputs": [tensor("x", [1], "FP64", [1]), tensor("y", [1], "FP64", [2])]}
    msg = bad_request(two, NUMERIC)
    assert "unknown tensor names ['x', 'y']" in msg and "['a', 'b', 'c']" in msg
    # A name that is a feature puts the request in per-feature mode.
    assert "missing tensors for features ['b', 'c']" in bad_request(
        {"inputs": [tensor("a", [1, 3], "FP64", [1, 2, 3])]}, NUMERIC
    )
    assert "name: a non-empty string" in bad_request({"inputs": [tensor("", [1, 3], "FP64", [1, 2, 3])]})
    assert "name: a non-empty string" in bad_request({"inputs": [{"shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]})


# -- datatypes and data ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "datatype,data,expect",
    [
        ("FP32", [1, 2, "3"], "FP32 elements must be numbers, got str '3'"),
        ("FP64", [1, True, 3], "FP64 elements must be numbers, got bool True"),
        ("FP64", [1, None, 3], "FP64 elements must be numbers, got NoneType None"),
        ("INT32", [1, 2.0, 3], "INT32 elements must be integers, got float 2.0"),
        ("INT32", [1, 2**31, 3], "does not fit in INT32"),
        ("INT64", [1, 2**63, 3], "does not fit in INT64"),
        ("INT64", [1, False, 3], "INT64 elements must be integers, got bool False"),
        ("BOOL", [True, 1, False], "BOOL elements must be true or false, got int 1"),
        ("BYTES", ["a", 2, "c"], "BYTES elements must be strings, got int 2"),
        ("UINT8", [1, 2, 3], "'UINT8' is not supported"),
        ("fp32", [1, 2, 3], "'fp32' is not supported"),
    ],
)
def test_element_type_errors(datatype, data, expect):
    assert expect in bad_request({"inputs": [tensor("x", [1, 3], datatype, data)]})


def test_body_errors():
    assert "JSON object" in bad_request([1, 2])
    assert "inputs: a non-empty list" in bad_request({})
    assert "inputs: a non-empty list" in bad_request({"inputs": []})
    assert "inputs[0]: must be an object" in bad_request({"inputs": ["x"]})
    assert "data: this field is required" in bad_request({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32"}]})
    assert "data: must be a list" in bad_request({"inputs": [tensor("x", [1, 3], "FP32", 5)]})
    assert "parameters: must be an object" in bad_request({"inputs": [tensor("x", [1, 3], "FP32", [1, 2, 3], parameters=3)]})


# -- binary tensor data (what tritonclient sends by default) ----------------------------------


def _bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def test_binary_tensors_of_each_datatype():
    blobs = {
        "tenure": np.array([12, 3], dtype=np.int32).tobytes(),
        "monthly_charges": np.array([80.5, 20.25], dtype=np.float32).tobytes(),
        "plan": _bytes_tensor(["pro", "enterprise"]),
    }
    dtypes = {"tenure": "INT32", "monthly_charges": "FP32", "plan": "BYTES"}
    body = {
        "inputs": [
            {"name": n, "shape": [2, 1], "datatype": dtypes[n], "parameters": {"binary_data_size": len(b)}}
            for n, b in blobs.items()
        ]
    }
    rows = decode_inputs(body, CHURN, b"".join(blobs.values()))
    assert rows == [
        {"tenure": 12, "monthly_charges": 80.5, "plan": "pro"},
        {"tenure": 3, "monthly_charges": 20.25, "plan": "enterprise"},
    ]
    for datatype, array in [
        ("FP64", np.array([[1.5, 2, 3]], dtype=np.float64)),
        ("INT64", np.array([[1, 2, 3]], dtype=np.int64)),
        ("BOOL", np.array([[True, False, True]])),
    ]:
        raw = array.tobytes()
        body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}]}
        assert decode_inputs(body, NUMERIC, raw) == [[int(v) if datatype == "BOOL" else v for v in array[0].tolist()]]


def test_binary_mixed_with_json_tensors():
    raw = np.array([1.0, 2.0], dtype=np.float64).tobytes()
    body = {
        "inputs": [
            tensor("plan", [2], "BYTES", ["pro", "basic"]),
            {"name": "tenure", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": len(raw)}},
            tensor("monthly_charges", [2], "FP64", [5, 6]),
        ]
    }
    assert decode_inputs(body, CHURN, raw) == [
        {"tenure": 1.0, "monthly_charges": 5, "plan": "pro"},
        {"tenure": 2.0, "monthly_charges": 6, "plan": "basic"},
    ]


def test_binary_errors():
    raw = np.array([1, 2, 3], dtype=np.float32).tobytes()

    def body(size, datatype="FP32", shape=(1, 3), **extra):
        return {"inputs": [{"name": "x", "shape": list(shape), "datatype": datatype, "parameters": {"binary_data_size": size}, **extra}]}

    assert "no binary data" in bad_request(body(12), binary=None)
    assert "runs past the end" in bad_request(body(16), binary=raw)
    assert "4 bytes of binary data that no input claims" in bad_request(body(12), binary=raw + b"\0\0\0\0")
    assert "not a whole number of FP32" in bad_request(body(10), binary=raw[:10])
    assert "holds 3 elements, but the data has 2" in bad_request(body(8), binary=raw[:8])
    assert "either data or" in bad_request(body(12, data=[1, 2, 3]), binary=raw)
    assert "BOOL binary data must hold bytes 0 or 1" in bad_request(body(3, "BOOL"), binary=b"\x01\x02\x00")
    assert "truncated" in bad_request(body(2, "BYTES", (1, 3)), binary=b"\x01\x00", policy=CATEGORICAL)
    assert "UTF-8" in bad_request(
        body(5, "BYTES", (1, 1)), binary=struct.pack("<I", 1) + b"\xff", policy=CATEGORICAL
    )


# -- responses and metadata ------------------------------------------------------------------


def test_encode_response_for_a_routed_request():
    out = encode_response("churn", "xgb", "01JREQ", [1, 0, 1], propensity=0.62, reward_token="tok", client_id="42")
    assert out == {
        "model_name": "churn",
        "model_version": "xgb",
        "id": "01JREQ",
        "parameters": {"variant": "xgb", "propensity": 0.62, "reward_token": "tok", "client_id": "42"},
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [3], "data": [1, 0, 1]}],
    }
    json.dumps(out, allow_nan=False)


def test_encode_response_for_a_named_variant_has_no_bandit_parameters():
    out = encode_response("churn", "logreg", "rid", [0])
    assert out["parameters"] == {"variant": "logreg"}
    assert out["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [0]}]


@pytest.mark.parametrize(
    "predictions,datatype,data",
    [
        ([True, False], "BOOL", [True, False]),
        ([0.5, 1], "FP64", [0.5, 1]),
        (["yes", "no"], "BYTES", ["yes", "no"]),
        ([], "INT64", []),
    ],
)
def test_encode_response_datatype_follows_the_labels(predictions, datatype, data):
    (output,) = encode_response("e", "v", "r", predictions)["outputs"]
    assert output == {"name": "predict", "datatype": datatype, "shape": [len(data)], "data": data}


def test_requested_outputs():
    requested_outputs({"inputs": []})
    requested_outputs({"outputs": [{"name": "predict", "parameters": {"binary_data": True}}]})
    with pytest.raises(BadRequest, match="'proba' is not an output"):
        requested_outputs({"outputs": [{"name": "proba"}]})
    with pytest.raises(BadRequest, match="must be a list"):
        requested_outputs({"outputs": "predict"})


def test_model_and_server_metadata():
    meta = model_metadata(CHURN, ["logreg", "xgb"])
    assert meta == {
        "name": "churn",
        "versions": ["logreg", "xgb"],
        "platform": "ab-auto-promotion_bandit",
        "inputs": [
            {"name": "tenure", "datatype": "FP64", "shape": [-1]},
            {"name": "monthly_charges", "datatype": "FP64", "shape": [-1]},
            {"name": "plan", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
    }
    assert model_metadata(CHURN, ["logreg", "xgb"], version="xgb")["platform"] == "xgboost"
    assert model_metadata(CHURN, ["logreg", "xgb"], version="logreg")["platform"] == "sklearn"
    server = server_metadata()
    assert server["name"] == "ab-auto-promotion" and isinstance(server["version"], str)
    assert server["extensions"] == []


def test_protocol_errors_answer_in_the_protocol_format():
    async def not_found(request, request_id):
        raise NotFound("no model named 'x'", code="experiment_not_found")

    async def boom(request, request_id):
        raise RuntimeError("secret detail")

    async def ok(request, request_id):
        return 200, {"fine": True}

    class FakeRequest:
        method, url = "GET", type("U", (), {"path": "/v2/models/x"})()

    assert asyncio.run(protocol_errors(not_found)(FakeRequest(), "rid")) == (404, {"error": "no model named 'x'"})
    assert asyncio.run(protocol_errors(ok)(FakeRequest(), "rid")) == (200, {"fine": True})
    status, body = asyncio.run(protocol_errors(boom)(FakeRequest(), "rid"))
    assert status == 500 and "secret" not in body["error"]
    assert isinstance(GatewayError("x"), Exception)
