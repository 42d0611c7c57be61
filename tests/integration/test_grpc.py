"""The Open Inference Protocol over gRPC, driven by a real V2 client (tritonclient.grpc) against
the session's real gateway (`gateway serve` with GATEWAY_GRPC_PORT: Ray Serve, the embedded
redis-server), side by side with the same calls over REST."""
from __future__ import annotations

import secrets
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as tritongrpc
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import ROW

pytestmark = pytest.mark.integration

MODEL = "churn"
VARIANTS = {"logreg", "xgb"}
INFER_SPAN = "inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def triton(gateway) -> Iterator[tritongrpc.InferenceServerClient]:
    assert gateway.grpc_address, "the session gateway serves gRPC (GATEWAY_GRPC_PORT in conftest.py)"
    client = tritongrpc.InferenceServerClient(gateway.grpc_address)
    yield client
    client.close()


def churn_inputs(rows: list[list], tenure_type: str = "FP32") -> list:
    """One tensor per feature, each of another datatype: FP32 (or as asked), FP64, INT64, BYTES."""
    dtypes = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64}
    columns = [
        ("tenure", tenure_type, np.array([r[0] for r in rows], dtype=dtypes[tenure_type])),
        ("monthly_charges", "FP64", np.array([r[1] for r in rows], dtype=np.float64)),
        ("support_calls", "INT64", np.array([int(r[2]) for r in rows], dtype=np.int64)),
        ("plan", "BYTES", np.array([r[3].encode() for r in rows], dtype=np.object_)),
    ]
    inputs = []
    for name, datatype, array in columns:
        tensor = tritongrpc.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def params(result) -> dict:
    return {k: v["string_param"] for k, v in result.get_response(as_json=True).get("parameters", {}).items()}


def grpc_error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def test_the_server_is_live_and_ready(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(MODEL)
    assert triton.is_model_ready(MODEL, "xgb")


def test_metadata_matches_the_rest_routes(triton, client):
    server = triton.get_server_metadata(as_json=True)
    assert server == {"name": "ab-auto-promotion", "version": client.get("/v2").json()["version"]}
    model = triton.get_model_metadata(MODEL, as_json=True)
    rest = client.get(f"/v2/models/{MODEL}").json()
    assert (model["name"], set(model["versions"]), model["platform"]) == (MODEL, VARIANTS, rest["platform"])
    assert [(t["name"], t["datatype"]) for t in model["inputs"]] == [(t["name"], t["datatype"]) for t in rest["inputs"]]
    assert model["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": ["-1"]}]
    version = triton.get_model_metadata(MODEL, "xgb", as_json=True)
    assert version["platform"] == "xgboost"


@pytest.mark.parametrize("tenure_type", ["FP32", "FP64", "INT64"])
def test_an_infer_is_routed_by_the_bandit_with_every_input_datatype(triton, tenure_type):
    rows = [ROW, [1.0, 99.0, 7.0, "basic"], [60.0, 20.0, 0.0, "enterprise"]]
    result = triton.infer(MODEL, churn_inputs(rows, tenure_type))
    predictions = result.as_numpy("predict")
    assert predictions.dtype == np.int64 and predictions.shape == (3,)
    assert set(predictions.tolist()) <= {0, 1}
    response = result.get_response(as_json=True)
    p = params(result)
    assert response["model_name"] == MODEL
    assert response["model_version"] == p["variant"] and p["variant"] in VARIANTS
    assert 0 < float(p["propensity"]) <= 1
    assert p["reward_token"]
    assert response["id"]  # the gateway's request id, which a reward names


def test_a_reward_over_rest_takes_the_token_of_a_grpc_answer(triton, client):
    result = triton.infer(MODEL, churn_inputs([ROW]))
    response, p = result.get_response(as_json=True), params(result)
    feedback = {"request_id": response["id"], "reward": 1.0, "token": p["reward_token"]}
    r = client.post("/v1/rewards", json=feedback)
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    assert client.post("/v1/rewards", json=feedback).json()["status"] == "duplicate"


def test_a_named_version_answers_outside_the_experiment(triton):
    result = triton.infer(MODEL, churn_inputs([ROW]), model_version="logreg")
    assert result.get_response(as_json=True)["model_version"] == "logreg"
    assert params(result) == {"variant": "logreg"}  # no propensity, no token: it does not count
    assert result.as_numpy("predict").shape == (1,)


def test_the_callers_request_id_and_client_id_come_back(triton):
    rid = f"grpc-{secrets.token_hex(6)}"
    result = triton.infer(MODEL, churn_inputs([ROW]), request_id="client-1", headers={"x-request-id": rid})
    assert result.get_response(as_json=True)["id"] == rid
    assert params(result)["client_id"] == "client-1"


def test_unknown_models_and_versions_are_not_found_with_rests_message(triton, client):
    err = grpc_error(lambda: triton.infer("nope", churn_inputs([ROW])))
    assert err.status() == "StatusCode.NOT_FOUND"
    assert err.message() == client.post("/v2/models/nope/infer", json={"inputs": []}).json()["error"]
    err = grpc_error(lambda: triton.infer(MODEL, churn_inputs([ROW]), model_version="v9"))
    assert err.status() == "StatusCode.NOT_FOUND"
    assert err.message() == client.post(f"/v2/models/{MODEL}/versions/v9/infer", json={"inputs": []}).json()["error"]
    assert grpc_error(lambda: triton.get_model_metadata("nope")).status() == "StatusCode.NOT_FOUND"


def test_a_bad_shape_is_invalid_argument_with_rests_message(triton, client):
    inputs = churn_inputs([ROW, ROW])
    inputs[0] = tritongrpc.InferInput("tenure", [2, 2], "FP32")  # 4 elements declared, a [2] column is meant
    inputs[0].set_data_from_numpy(np.array([[1, 2], [3, 4]], dtype=np.float32))
    err = grpc_error(lambda: triton.infer(MODEL, inputs))
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    body = {"inputs": [{"name": "tenure", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
                       {"name": "monthly_charges", "shape": [2], "datatype": "FP64", "data": [80.5, 80.5]},
                       {"name": "support_calls", "shape": [2], "datatype": "INT64", "data": [2, 2]},
                       {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["pro", "pro"]}]}
    rest = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert rest.status_code == 400
    assert err.message() == rest.json()["error"] == "inputs ('tenure').shape: a feature tensor has shape [n] or [n, 1], got [2, 2]"


def test_an_infer_continues_the_callers_trace(triton, collector):
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    result = triton.infer(MODEL, churn_inputs([ROW]), headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    expected = {INFER_SPAN, "bandit.select", "redis.record_prediction"}
    trace = collector.wait_for_trace(trace_id, expected)
    assert expected <= set(trace), f"spans that arrived: {sorted(trace)}"
    server = trace[INFER_SPAN]
    assert server["parent_span_id"] == parent_id
    assert server["attributes"]["rpc.system"] == "grpc"
    assert server["attributes"]["gateway.request_id"] == result.get_response(as_json=True)["id"]
    assert trace["bandit.select"]["attributes"]["gateway.variant"] == params(result)["variant"]
