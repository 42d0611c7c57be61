"""The Open Inference Protocol routes driven by a real V2 client (tritonclient), without Ray: a
real DataPlane in this process, the embedded redis-server, model artifacts trained from
tests/policies/churn.yaml and loaded as in a variant replica, served by uvicorn on 127.0.0.1."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from gateway.api.app import create_app
from gateway.dataplane import DataPlane
from gateway.learning.features import FeatureEncoder
from gateway.policy import load_policy_file
from gateway.serving.variant import LoadedVariant
from gateway.store.embedded import EmbeddedRedis
from gateway.store.experiments import ExperimentStore
from gateway.dataplane.tokens import RewardTokens
from tests.integration.inprocess_server import served_in_thread
from tests.models import loaded_variants

pytestmark = pytest.mark.integration

tritonhttp = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

POLICY = Path(__file__).resolve().parents[1] / "policies" / "churn.yaml"
ROWS = [
    {"tenure": 12.0, "monthly_charges": 80.5, "support_calls": 2, "plan": "pro"},
    {"tenure": 1.0, "monthly_charges": 99.0, "support_calls": 7, "plan": "basic"},
    {"tenure": 60.0, "monthly_charges": 20.0, "support_calls": 0, "plan": "enterprise"},
]


@dataclass
class Served:
    url: str
    host: str
    variants: dict[str, LoadedVariant]
    encoder: FeatureEncoder


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    state_dir = tmp_path_factory.mktemp("oip-state")
    redis = EmbeddedRedis(state_dir).start()
    try:
        policy = load_policy_file(POLICY)
        variants = loaded_variants(policy, POLICY, state_dir)
        store = ExperimentStore.from_url(redis.url)
        plane = DataPlane(
            {policy.experiment: policy}, store, {policy.experiment: variants}, RewardTokens("x" * 32)
        )

        # The gateway's own app (V2 routes included); its lifespan starts and stops the plane.
        app = create_app(plane)

        with served_in_thread(app, "oip-uvicorn") as port:
            yield Served(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", variants, FeatureEncoder(policy.features))
    finally:
        redis.stop()


@pytest.fixture()
def triton(served) -> Iterator:
    client = tritonhttp.InferenceServerClient(url=served.host, network_timeout=30.0, connection_timeout=30.0)
    try:
        yield client
    finally:
        client.close()


def feature_inputs(binary: bool, rows=ROWS) -> list:
    """One tensor per feature, with four datatypes: FP32, FP64, INT64 and BYTES."""
    columns = [
        ("tenure", "FP32", np.array([r["tenure"] for r in rows], dtype=np.float32)),
        ("monthly_charges", "FP64", np.array([r["monthly_charges"] for r in rows], dtype=np.float64)),
        ("support_calls", "INT64", np.array([[r["support_calls"]] for r in rows], dtype=np.int64)),
        ("plan", "BYTES", np.array([r["plan"].encode() for r in rows], dtype=np.object_)),
    ]
    inputs = []
    for name, datatype, array in columns:
        tensor = tritonhttp.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def expected_labels(served: Served, variant: str, rows=ROWS) -> list[int]:
    labels, _ = served.variants[variant].predict_rows(served.encoder.encode(rows))
    return labels.tolist()


def test_server_health_and_metadata(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "ab-auto-promotion"
    assert isinstance(meta["version"], str) and isinstance(meta["extensions"], list)


def test_model_readiness_and_metadata(triton):
    assert triton.is_model_ready("churn")
    assert triton.is_model_ready("churn", "xgb")
    assert triton.is_model_ready("churn", "logreg")
    assert not triton.is_model_ready("nope")
    assert not triton.is_model_ready("churn", "nope")
    meta = triton.get_model_metadata("churn")
    assert meta["name"] == "churn"
    assert sorted(meta["versions"]) == ["logreg", "xgb"]
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [
        ("tenure", "FP64"),
        ("monthly_charges", "FP64"),
        ("support_calls", "FP64"),
        ("plan", "BYTES"),
    ]
    assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert triton.get_model_metadata("churn", "xgb")["platform"] == "xgboost"
    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata("nope")
    assert info.value.status() == "404"
    assert "no model named 'nope'" in info.value.message()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_routed_by_the_bandit(served, triton, binary):
    result = triton.infer("churn", feature_inputs(binary), request_id="client-7")
    response = result.get_response()
    variant = response["model_version"]
    assert variant in ("logreg", "xgb")
    assert response["model_name"] == "churn"
    params = response["parameters"]
    assert params["variant"] == variant
    assert 0 < params["propensity"] <= 1
    assert params["reward_token"]
    assert params["client_id"] == "client-7"
    assert response["id"] != "client-7"  # our request id, the one feedback refers to
    labels = result.as_numpy("predict")
    assert labels.dtype == np.int64 and labels.shape == (len(ROWS),)
    assert labels.tolist() == expected_labels(served, variant)

    # The V2 answer carries what feedback needs.
    with httpx.Client(base_url=served.url, timeout=30) as http:
        body = {"request_id": response["id"], "token": params["reward_token"], "reward": 1.0}
        first = http.post("/v1/rewards", json=body)
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "accepted"
        assert http.post("/v1/rewards", json=body).json()["status"] == "duplicate"


def test_infer_a_named_variant(served, triton):
    requested = [tritonhttp.InferRequestedOutput("predict", binary_data=False)]
    for variant in ("logreg", "xgb"):
        result = triton.infer("churn", feature_inputs(True), model_version=variant, outputs=requested)
        response = result.get_response()
        assert response["model_version"] == variant
        assert response["parameters"] == {"variant": variant}  # outside the experiment: no token
        assert result.as_numpy("predict").tolist() == expected_labels(served, variant)


def test_sticky_unit_id_through_parameters(triton):
    variants = {
        triton.infer("churn", feature_inputs(False), parameters={"unit_id": "user-42"}).get_response()["model_version"]
        for _ in range(5)
    }
    assert len(variants) == 1


def test_errors_in_the_protocol_format(served, triton):
    # A shape that does not match the data, through the real client.
    bad = tritonhttp.InferInput("tenure", [2], "FP32")
    bad.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32), binary_data=False)
    with pytest.raises(InferenceServerException) as info:
        triton.infer("churn", [bad, *feature_inputs(False)[1:]])
    assert info.value.status() == "400"
    assert "same number of rows, got {'tenure': 2, 'monthly_charges': 3" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        triton.infer("nope", feature_inputs(True))
    assert info.value.status() == "404"
    with pytest.raises(InferenceServerException) as info:
        triton.infer("churn", feature_inputs(True), model_version="nope")
    assert info.value.status() == "404" and "no version 'nope'" in info.value.message()

    with httpx.Client(base_url=served.url, timeout=30) as http:
        gold = {
            "inputs": [
                {"name": "tenure", "shape": [1], "datatype": "FP64", "data": [1]},
                {"name": "monthly_charges", "shape": [1], "datatype": "FP64", "data": [2]},
                {"name": "support_calls", "shape": [1], "datatype": "INT64", "data": [3]},
                {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["gold"]},
            ]
        }
        r = http.post("/v2/models/churn/infer", json=gold)
        assert r.status_code == 422
        assert isinstance(r.json()["error"], str) and "'gold' is not one of" in r.json()["error"]
        assert r.headers["x-request-id"]
        r = http.post("/v2/models/churn/infer", content=b"{not json")
        assert r.status_code == 400 and isinstance(r.json()["error"], str)
        matrix = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
        r = http.post("/v2/models/churn/infer", json=matrix)
        assert r.status_code == 400 and "one tensor per feature" in r.json()["error"]
        r = http.get("/v2/models/nope/ready")
        assert r.status_code == 404 and r.json() == {"error": "no model named 'nope'"}
        # A request id is used once; a reused one is refused in the protocol's format too.
        pro = {"inputs": [*gold["inputs"][:3], {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]}]}
        rid = {"x-request-id": "oip-fixed-id-1"}
        assert http.post("/v2/models/churn/infer", json=pro, headers=rid).status_code == 200
        again = http.post("/v2/models/churn/infer", json=pro, headers=rid)
        assert again.status_code == 409 and isinstance(again.json()["error"], str)
