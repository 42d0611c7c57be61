"""A challenger that takes one more feature than the champion, added at run time and served beside
it, over real HTTP: a real DataPlane in this process with the gateway's own app (served by
uvicorn), the embedded redis-server, models really trained, a real registry, and challengers
loaded from the registry as a replica loads them."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from gateway.api.app import create_app
from gateway.dataplane import DataPlane
from gateway.dataplane.tokens import RewardTokens
from gateway.learning import artifacts
from gateway.learning.registry import ModelRegistry
from gateway.learning.views import FeatureView
from gateway.policy import load_policy_file
from gateway.serving.challengers import load_registered
from gateway.serving.variant import LoadedVariant
from gateway.sim.churn import FEATURES, make_churn
from gateway.store.embedded import EmbeddedRedis
from gateway.store.experiments import ExperimentStore
from tests.integration.inprocess_server import served_in_thread

pytestmark = pytest.mark.integration

TOKEN = "t" * 32
AUTH = {"authorization": f"Bearer {TOKEN}"}
BASE = [f["name"] for f in FEATURES]
POLICY = {
    "experiment": "feat",
    # The request schema: the churn features and `age`, which the champion does not use.
    "features": [*FEATURES, {"name": "age", "type": "numeric"}],
    "derived": [{"name": "charge_per_month", "op": "ratio", "of": ["monthly_charges", "tenure"]}],
    "variants": [{"name": "champ", "model": "models/champ.skops", "features": BASE}],
    "guardrails": {"max_error_rate": 0.5, "max_p99_latency_ms": 60000},
    "promotion": {"min_samples": 100000},
}


def rows_with_age(n: int, seed: int) -> tuple[list[dict], np.ndarray]:
    rows, y = make_churn(n, seed)
    ages = np.random.default_rng(seed + 1).uniform(18, 80, n)
    return [dict(zip(BASE, r)) | {"age": float(a)} for r, a in zip(rows, ages)], y


class Served:
    def __init__(self, url: str, tmp: Path, policy):
        self.url, self.tmp, self.policy = url, tmp, policy
        self.http = httpx.Client(base_url=url, timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("variant-features")
    path = tmp / "feat.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    policy = load_policy_file(path)
    rows, y = rows_with_age(800, 3)
    champ = artifacts.train("logistic_regression", FeatureView(policy).matrix(BASE, rows), y)
    digest = artifacts.save_model(champ, tmp / "models" / "champ.skops")
    redis = EmbeddedRedis(tmp / "state").start()
    registry = ModelRegistry(tmp / "registry")

    def challenger(e: str, name: str, sha: str):
        # The registered bytes, sha256 checked, loaded as a replica loads them (without Ray's batching).
        return load_registered(registry, e, name, sha)

    plane = DataPlane(
        {"feat": policy}, ExperimentStore.from_url(redis.url),
        {"feat": {"champ": LoadedVariant({"experiment": "feat", "variant": "champ",
                                          "path": str(tmp / "models" / "champ.skops"), "sha256": digest})}},
        RewardTokens("k" * 32), challenger_client=challenger,
    )
    app = create_app(plane, admin_token=TOKEN, registry_root=str(tmp / "registry"))
    try:
        with served_in_thread(app, "features-uvicorn") as port:
            yield Served(f"http://127.0.0.1:{port}", tmp, policy)
    finally:
        redis.stop()


def predict(served: Served, row: dict) -> httpx.Response:
    return served.http.post("/v1/experiments/feat/predict", json={"instances": [row]})


def add(served: Served, body: dict) -> httpx.Response:
    return served.http.post("/v1/experiments/feat/variants", json=body, headers=AUTH)


def test_a_challenger_with_one_more_feature_is_added_at_run_time_and_served_beside_the_champion(served):
    rows, y = rows_with_age(800, 3)
    without_age = {k: v for k, v in rows[0].items() if k != "age"}
    # No variant uses `age` yet: a request may leave it out.
    first = predict(served, without_age)
    assert first.status_code == 200 and first.json()["variant"] == "champ"

    # The challenger: an XGBoost model on the champion's features, `age` and a derived ratio.
    names = [*BASE, "age", "charge_per_month"]
    view = FeatureView(served.policy)
    model = artifacts.train("xgboost", view.matrix(names, rows), y)
    path = served.tmp / "challenger.ubj"
    artifacts.save_model(model, path)
    before = served.http.get("/v1/experiments/feat").json()

    # A feature the policy's schema lacks is refused, named, and nothing changes.
    bad = add(served, {"name": "chal", "model": str(path), "features": [*BASE, "income", "charge_per_month"]})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_features"
    assert "'income'" in bad.json()["error"]["message"]
    # So is a model whose width does not match the features it declares.
    narrow = add(served, {"name": "chal", "model": str(path), "features": BASE})
    assert narrow.status_code == 422 and "takes 8 input columns" in narrow.json()["error"]["message"]
    assert served.http.get("/v1/experiments/feat").json()["variants"] == before["variants"]

    # The features travel with the artifact: its metadata says which it takes.
    (served.tmp / "challenger.ubj.meta.json").write_text(json.dumps({"features": names}))
    added = add(served, {"name": "chal", "model": str(path)})
    assert added.status_code == 200, added.text
    assert added.json()["history"][-1]["features"] == names

    # Now a live variant needs `age`: a request without it is refused, naming it.
    refused = predict(served, without_age)
    assert refused.status_code == 422 and "age" in refused.json()["error"]["message"]

    # Served beside the champion, each variant with its own columns: the answers are the models'.
    champ = artifacts.load_model(served.tmp / "models" / "champ.skops")
    seen = set()
    for row in rows[:80]:
        r = predict(served, row)
        assert r.status_code == 200, r.text
        body = r.json()
        seen.add(body["variant"])
        own = (model, names) if body["variant"] == "chal" else (champ, BASE)
        assert body["predictions"] == artifacts.predict(own[0], view.matrix(own[1], [row]))[0].tolist()
    assert seen == {"champ", "chal"}

    # Retired, the challenger needs nothing any more: `age` is optional again.
    retired = served.http.delete("/v1/experiments/feat/variants/chal", headers=AUTH)
    assert retired.status_code == 200, retired.text
    again = predict(served, without_age)
    assert again.status_code == 200 and again.json()["variant"] == "champ"
