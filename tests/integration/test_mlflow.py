"""MLflow models against a real MLflow tracking server (sqlite backend, local artifact folder),
started once for this module on a free loopback port and stopped at the end.

The server comes from its own venv (the full `mlflow` package would downgrade packages the
gateway's venv holds): `.ci/mlflow.sh` installs it and sets GATEWAY_TEST_MLFLOW_SERVER; a
`.venv-mlflow/` at the repository root is also found. Without either, or without the `mlflow`
extra, every test here is skipped, saying so.

These tests go through the gateway's own code paths without Ray: bootstrap.resolve_artifacts
(what `gateway serve` calls on start), the router's LoadedVariant, and retrain_against_live
(what the retrainer's Ray task runs).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from gateway.learning import artifacts
from gateway.learning.bootstrap import resolve_artifacts
from gateway.learning.features import FeatureEncoder
from gateway.learning.mlflow_models import MlflowModelError
from gateway.learning.registry import ModelRegistry
from gateway.learning.retrain import LabelledData, retrain_against_live
from gateway.policy import load_policy_file, parse_policy
from gateway.sim.churn import FEATURES, make_churn
from tests.integration.conftest import free_port
from tests.models import loaded_variants

pytestmark = [
    pytest.mark.integration,
    # MLflow's own notice while it logs a model (its signature inference), not ours to fix.
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
SKIP_REASON = "MLflow tier: needs the mlflow extra and an MLflow server venv; run it with `bash .ci/mlflow.sh`"


def _server_binary() -> Path | None:
    given = os.environ.get("GATEWAY_TEST_MLFLOW_SERVER", "").strip()
    if given:
        # The tier was asked for: anything missing is a failure, not a skip.
        if not Path(given).is_file():
            pytest.fail(f"GATEWAY_TEST_MLFLOW_SERVER={given}: no such mlflow executable")
        try:
            import mlflow  # noqa: F401
        except ImportError:
            pytest.fail("GATEWAY_TEST_MLFLOW_SERVER is set but the mlflow extra is not installed: pip install -e '.[mlflow]'")
        return Path(given)
    local = ROOT / ".venv-mlflow" / "bin" / "mlflow"
    return local if local.is_file() else None


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server stopped (SIGSTOP) and resumed after: any request would hang meanwhile."""
        os.killpg(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.process.pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    binary = _server_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    pytest.importorskip("mlflow", reason=SKIP_REASON)
    work = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = work / "server.log"
    # One worker and no job runners (seven huey consumers for GenAI jobs, not needed to track
    # runs or register models): the machine is shared. Its own session, so that stopping it stops
    # everything it started.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [str(binary), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}", "--artifacts-destination", str(work / "artifacts")],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, cwd=work, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not answering after 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = url
        try:
            yield MlflowServer(url, proc)
        finally:
            if previous is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def tracking_uri(mlflow_server) -> str:
    return mlflow_server.url


@pytest.fixture(scope="module")
def policy_features():
    return parse_policy({"experiment": "churn", "features": FEATURES, "variants": [{"name": "a", "model": "a.skops"}]}).features


@pytest.fixture(scope="module")
def data(policy_features):
    rows, y = make_churn(1500, seed=11)
    X = FeatureEncoder(policy_features).encode(rows)
    return X[:1200], y[:1200], X[1200:]


class _Touch:
    """A 'model' whose unpickling creates a file: what an attacker's pickle would do instead."""

    def __init__(self, marker: str):
        self.marker = marker

    def fit(self, X, y):
        return self

    def predict(self, X):
        return np.zeros(len(X), dtype=np.int64)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope="module")
def logged(tracking_uri, data, tmp_path_factory):
    """Real models trained here and logged to the server as a user would: a scikit-learn
    pipeline (skops) as models:/churn-logreg/1, an XGBoost classifier (UBJSON) as
    models:/churn-xgb/1 with alias `champion`, a HistGradientBoosting (skops) reached by its run
    (runs:/<id>/hgb), and two pickled models: a real one and one that runs code when unpickled."""
    import mlflow
    import mlflow.sklearn
    import mlflow.xgboost

    X, y, _ = data
    models = {a: artifacts.train(a, X, y, seed=0) for a in artifacts.ALGORITHMS}
    marker = tmp_path_factory.mktemp("pickle") / "unpickled"
    mlflow.set_experiment("gateway-tests")
    with mlflow.start_run() as run:
        # The pipeline's SimpleImputer keeps a numpy dtype, outside skops' default trust.
        mlflow.sklearn.log_model(models["logistic_regression"], name="logreg", serialization_format="skops",
                                 skops_trusted_types=["numpy.dtype"], registered_model_name="churn-logreg")
        mlflow.xgboost.log_model(models["xgboost"], name="xgb", model_format="ubj", registered_model_name="churn-xgb")
        mlflow.sklearn.log_model(models["hist_gradient_boosting"], name="hgb", serialization_format="skops",
                                 skops_trusted_types=sorted(artifacts.TRUSTED_SKOPS_TYPES))
        mlflow.sklearn.log_model(models["logistic_regression"], name="pickled", serialization_format="pickle",
                                 registered_model_name="churn-pickled")
        mlflow.sklearn.log_model(_Touch(str(marker)), name="evil", serialization_format="cloudpickle")
    # MLflow's log_model loads a model back once it has written it (on the logging machine, the
    # attacker's own here): clear the marker so that only the gateway could make it again.
    marker.unlink(missing_ok=True)
    mlflow.MlflowClient().set_registered_model_alias("churn-xgb", "champion", "1")
    return {"models": models, "run_id": run.info.run_id, "marker": marker}


def _write_policy(folder: Path, variants: dict[str, str], **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"experiment": "churn", "features": FEATURES,
           "variants": [{"name": n, "model": m} for n, m in variants.items()], **extra}
    path = folder / "policy.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def _assert_same_predictions(loaded, original, X):
    labels, p1 = artifacts.predict(loaded, X)
    want_labels, want_p1 = artifacts.predict(original, X)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(p1, want_p1)  # the same model, so the very same numbers


def test_a_policy_naming_mlflow_models_loads_them_into_the_registry(logged, data, tmp_path, tracking_uri):
    _, _, X_test = data
    run_id = logged["run_id"]
    uris = {"logreg": "models:/churn-logreg/1", "xgb": "models:/churn-xgb@champion", "hgb": f"runs:/{run_id}/hgb"}
    policy_path = _write_policy(tmp_path / "policies", uris)
    policy = load_policy_file(policy_path)
    state_dir = tmp_path / "state"

    refs = resolve_artifacts(policy, policy_path, state_dir)

    registry = ModelRegistry.in_state_dir(state_dir)
    entries = {e.metadata["mlflow"]["variant"]: e for e in registry.entries("churn")}
    assert set(entries) == set(uris)
    originals = {"logreg": "logistic_regression", "xgb": "xgboost", "hgb": "hist_gradient_boosting"}
    for variant, uri in uris.items():
        entry, ref = entries[variant], refs[variant]
        meta = entry.metadata
        assert meta["mlflow"]["uri"] == uri and meta["mlflow"]["tracking_uri"] == tracking_uri
        assert meta["sha256"] == artifacts.sha256_file(entry.path) == ref.sha256
        assert Path(ref.path) == entry.path.resolve() and entry.path.parent == registry.folder("churn")
        assert meta["algorithm"] == originals[variant]
    assert entries["xgb"].metadata["mlflow"]["identity"] == {"registered_model": "churn-xgb", "version": "1"}
    assert entries["xgb"].metadata["mlflow"]["format"] == "ubj"
    assert entries["logreg"].metadata["mlflow"]["format"] == "skops"
    assert entries["hgb"].metadata["mlflow"]["identity"] == {"run_id": run_id, "path": "hgb"}

    # Served as the router serves them (sha256 checked, then loaded) they predict exactly as the
    # models that were logged.
    served = loaded_variants(policy, policy_path, state_dir)
    for variant, algorithm in originals.items():
        _assert_same_predictions(served[variant].model, logged["models"][algorithm], X_test)
    assert len(registry.entries("churn")) == 3  # loading them again copied nothing new


def test_a_restart_reuses_pinned_copies_without_mlflow_and_follows_a_moved_alias(logged, data, tmp_path, mlflow_server):
    import mlflow
    import mlflow.xgboost

    X, y, X_test = data
    pinned = _write_policy(tmp_path / "pinned", {"logreg": "models:/churn-logreg/1", "hgb": f"runs:/{logged['run_id']}/hgb"})
    state_dir = tmp_path / "state"
    first = resolve_artifacts(load_policy_file(pinned), pinned, state_dir)

    # The tracking server does not answer: a pinned version or run needs no question (a request
    # would hang for MLFLOW_HTTP_REQUEST_TIMEOUT, 30 s, and then fail).
    with mlflow_server.frozen():
        started = time.monotonic()
        again = resolve_artifacts(load_policy_file(pinned), pinned, state_dir)
        took = time.monotonic() - started
    assert again == first and took < 10

    # An alias is asked again: moved to a new version, it gets that version.
    aliased = _write_policy(tmp_path / "aliased", {"xgb": "models:/churn-xgb@champion"})
    before = resolve_artifacts(load_policy_file(aliased), aliased, state_dir)["xgb"]
    retrained = artifacts.train("xgboost", X[:600], y[:600], seed=5)  # other data: another model
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(retrained, name="xgb", model_format="ubj", registered_model_name="churn-xgb")
    mlflow.MlflowClient().set_registered_model_alias("churn-xgb", "champion", str(info.registered_model_version))
    try:
        after = resolve_artifacts(load_policy_file(aliased), aliased, state_dir)["xgb"]
    finally:
        mlflow.MlflowClient().set_registered_model_alias("churn-xgb", "champion", "1")
    assert after.sha256 != before.sha256 and after.path != before.path
    entry = next(e for e in ModelRegistry.in_state_dir(state_dir).entries("churn") if str(e.path.resolve()) == after.path)
    assert entry.metadata["mlflow"]["identity"]["version"] == str(info.registered_model_version)
    _assert_same_predictions(artifacts.load_model(after.path, after.sha256), retrained, X_test)


@pytest.mark.parametrize(("uri", "fmt"), [("models:/churn-pickled/1", "pickle"), ("runs:/{run_id}/evil", "cloudpickle")])
def test_a_pickled_sklearn_model_is_refused_before_it_is_loaded(logged, tmp_path, uri, fmt):
    uri = uri.format(run_id=logged["run_id"])
    policy_path = _write_policy(tmp_path / "policies", {"bad": uri})
    state_dir = tmp_path / "state"
    with pytest.raises(MlflowModelError) as err:
        resolve_artifacts(load_policy_file(policy_path), policy_path, state_dir)
    message = str(err.value)
    assert uri in message and f"serialised with {fmt}" in message and "can run any code" in message
    assert "serialization_format='skops'" in message  # how to log it so that it can be served
    assert not logged["marker"].exists()  # the malicious pickle never ran
    assert ModelRegistry.in_state_dir(state_dir).entries("churn") == []


def test_an_unknown_model_or_an_unreachable_server_is_a_clear_error(logged, tmp_path, tracking_uri):
    policy_path = _write_policy(tmp_path / "policies", {"a": "models:/churn-logreg/99"})
    with pytest.raises(MlflowModelError, match=rf"models:/churn-logreg/99: not found on the tracking server {tracking_uri}"):
        resolve_artifacts(load_policy_file(policy_path), policy_path, tmp_path / "state")
    # An alias must be asked; nothing listens on that port.
    policy_path = _write_policy(tmp_path / "aliased", {"a": "models:/churn-xgb@champion"})
    away = f"http://127.0.0.1:{free_port()}"
    os.environ["MLFLOW_TRACKING_URI"] = away
    try:
        with pytest.raises(MlflowModelError, match=rf"models:/churn-xgb@champion: cannot (read it from|reach) the tracking server {away}"):
            resolve_artifacts(load_policy_file(policy_path), policy_path, tmp_path / "state")
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri


# -- retrain.mlflow -----------------------------------------------------------------------------


def _retrain_setup(tmp_path: Path, mlflow_on: bool, candidates=("xgboost", "logistic_regression")):
    """A stale champion (concept 0) and labelled traffic after a drift (concept 1): the retrainer
    admits a challenger (tests/unit/test_retrain.py measures this setting)."""
    policy = parse_policy({
        "experiment": "churn", "features": FEATURES,
        "variants": [{"name": "xgb", "model": "xgb.ubj"}],
        "retrain": {"enabled": True, "mlflow": mlflow_on, "candidates": list(candidates)},
    })
    rows, y = make_churn(1000, seed=1)
    champion = artifacts.train("xgboost", FeatureEncoder(policy.features).encode(rows), y, seed=0)
    path = tmp_path / "champion" / "xgb.ubj"
    sha = artifacts.save_model(champion, path)
    rows, y = make_churn(1600, seed=3, concept=1)
    data = LabelledData(rows, y, 1_000.0 + np.arange(len(y), dtype=np.float64))
    live = [{"experiment": "churn", "variant": "xgb", "path": str(path), "sha256": sha}]
    return policy, data, live, ModelRegistry(tmp_path / "registry")


@pytest.mark.parametrize("algorithm", ["xgboost", "hist_gradient_boosting"])  # UBJSON and skops
def test_retrain_mlflow_logs_the_admitted_challenger(logged, tmp_path, tracking_uri, algorithm):
    import mlflow

    policy, data, live, registry = _retrain_setup(tmp_path, mlflow_on=True, candidates=[algorithm])
    out = retrain_against_live(policy, data, live, registry, seed=0)

    assert out["admitted"], out["result"]["reason"]
    assert out["entry"]["algorithm"] == algorithm
    logged_to = out["mlflow"]
    assert "error" not in logged_to, logged_to
    client = mlflow.MlflowClient()
    run = client.get_run(logged_to["run_id"])
    entry = registry.get("churn", out["entry"]["name"])
    assert run.info.status == "FINISHED" and run.info.run_name == entry.name
    assert client.get_experiment(run.info.experiment_id).name == "gateway-churn"
    challenger = entry.metadata["metrics"]["challenger"]
    assert run.data.metrics["holdout_accuracy"] == pytest.approx(challenger["accuracy"])
    assert run.data.metrics["champion_holdout_accuracy"] == pytest.approx(entry.metadata["metrics"]["champion"]["accuracy"])
    assert run.data.params["window_rows"] == str(data.window()["rows"]) == "1600"
    assert run.data.params["compared_against"] == "xgb" and run.data.params["gateway_sha256"] == entry.sha256
    window = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/data_window.json")
    assert window["window"] == data.window() and window["holdout"] == entry.metadata["data_window"]["holdout"]

    version = client.get_model_version("gateway-churn", logged_to["version"])
    assert version.run_id == run.info.run_id and logged_to["registered_model"] == "gateway-churn"
    flavors = yaml.safe_load(Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/gateway-churn/{version.version}/MLmodel", dst_path=str(tmp_path / "mlmodel")
    )).read_text())["flavors"]
    if algorithm == "xgboost":
        assert flavors["xgboost"]["model_format"] == "ubj"
    else:
        assert flavors["sklearn"]["serialization_format"] == "skops"

    # The logged version is in a format the gateway itself accepts, and is the same model.
    policy_path = _write_policy(tmp_path / "back", {"challenger": f"models:/gateway-churn/{version.version}"})
    ref = resolve_artifacts(load_policy_file(policy_path), policy_path, tmp_path / "state")["challenger"]
    X = FeatureEncoder(policy.features).encode(data.X)
    _assert_same_predictions(artifacts.load_model(ref.path, ref.sha256), registry.load(entry), X)


def test_a_failure_to_log_keeps_the_challenger(logged, tmp_path, tracking_uri):
    policy, data, live, registry = _retrain_setup(tmp_path, mlflow_on=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    try:
        started = time.monotonic()
        out = retrain_against_live(policy, data, live, registry, seed=0)
        took = time.monotonic() - started
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    assert out["admitted"]
    assert "error" in out["mlflow"] and "127.0.0.1" in out["mlflow"]["error"]
    assert registry.get("churn", out["entry"]["name"]).sha256 == out["entry"]["sha256"]
    assert took < 120  # bounded retries, not MLflow's minutes of backoff


def test_retrain_without_mlflow_logs_nothing(logged, tmp_path):
    policy, data, live, registry = _retrain_setup(tmp_path, mlflow_on=False)
    out = retrain_against_live(policy, data, live, registry, seed=0)
    assert out["admitted"] and "mlflow" not in out


# -- an operator's add-variant ------------------------------------------------------------------


ADMIN_TOKEN = "a" * 32


@pytest.fixture()
def gateway_app(logged, tmp_path):
    """The churn experiment with one variant from a file, served over real HTTP by the gateway's
    own app around an in-process DataPlane (no Ray), with a registry for added variants."""
    from gateway.api.app import create_app
    from gateway.dataplane import DataPlane
    from gateway.dataplane.tokens import RewardTokens
    from gateway.serving.challengers import load_registered
    from gateway.serving.variant import LoadedVariant
    from gateway.store.embedded import EmbeddedRedis
    from gateway.store.experiments import ExperimentStore
    from tests.integration.inprocess_server import served_in_thread

    policy_path = _write_policy(tmp_path / "policies", {"champ": str(tmp_path / "champ.skops")},
                                promotion={"min_samples": 100000})
    policy = load_policy_file(policy_path)
    digest = artifacts.save_model(logged["models"]["logistic_regression"], tmp_path / "champ.skops")
    registry = ModelRegistry(tmp_path / "registry")
    redis = EmbeddedRedis(tmp_path / "state").start()
    plane = DataPlane(
        {"churn": policy}, ExperimentStore.from_url(redis.url),
        {"churn": {"champ": LoadedVariant({"experiment": "churn", "variant": "champ",
                                           "path": str(tmp_path / "champ.skops"), "sha256": digest})}},
        RewardTokens("k" * 32), challenger_client=lambda e, name, sha: load_registered(registry, e, name, sha),
    )
    app = create_app(plane, admin_token=ADMIN_TOKEN, registry_root=str(registry.root))
    try:
        with served_in_thread(app, "mlflow-admin-uvicorn") as port:
            yield f"http://127.0.0.1:{port}", registry
    finally:
        redis.stop()


def test_add_variant_takes_an_mlflow_uri_as_a_policy_does(logged, data, gateway_app, tracking_uri):
    from tests.integration.conftest import gateway_command

    url, registry = gateway_app
    _, _, X_test = data
    uris = {"xgb_alias": "models:/churn-xgb@champion", "logreg_v1": "models:/churn-logreg/1",
            "hgb_run": f"runs:/{logged['run_id']}/hgb"}
    originals = {"xgb_alias": "xgboost", "logreg_v1": "logistic_regression", "hgb_run": "hist_gradient_boosting"}
    env = {**os.environ, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, "COLUMNS": "200"}
    for name, uri in uris.items():
        # As an operator runs it; the URI reaches the gateway as written (not as a local path).
        out = subprocess.run([*gateway_command(), "add-variant", "churn", name, uri, "--url", url],
                             capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr

    with httpx.Client(base_url=url, timeout=60) as http:
        state = http.get("/v1/experiments/churn").json()
        assert {v["name"] for v in state["variants"]} == {"champ", *uris}
        added = {h["variant"]: h for h in state["history"] if h["action"] == "challenger_added"}
        assert {n: h["reason"] for n, h in added.items()} == {n: f"added from {u}" for n, u in uris.items()}

        # Copied into the registry as a policy's MLflow variant is (its URI and what it resolved
        # to in the metadata), and the copy predicts exactly as the logged model.
        for name, uri in uris.items():
            entry = registry.get("churn", name)
            assert entry.metadata["mlflow"]["uri"] == uri and entry.metadata["mlflow"]["tracking_uri"] == tracking_uri
            assert entry.metadata["source"] == uri and entry.sha256 == added[name]["sha256"]
            _assert_same_predictions(registry.load(entry), logged["models"][originals[name]], X_test)
        assert registry.get("churn", "xgb_alias").metadata["mlflow"]["identity"] == {
            "registered_model": "churn-xgb", "version": "1"}

        # Refused, with nothing added: a pickle (never loaded), a sha256 with a URI, an unknown
        # version, and (503: the gateway's side) a tracking server that does not answer.
        entries = registry.entries("churn")

        def add(body):
            return http.post("/v1/experiments/churn/variants", json=body,
                             headers={"authorization": f"Bearer {ADMIN_TOKEN}"})

        pickled = add({"name": "bad", "model": f"runs:/{logged['run_id']}/evil"})
        assert pickled.status_code == 422 and pickled.json()["error"]["code"] == "invalid_artifact"
        assert "can run any code" in pickled.json()["error"]["message"] and not logged["marker"].exists()
        with_sha = add({"name": "bad", "model": "models:/churn-logreg/1", "sha256": "0" * 64})
        assert with_sha.status_code == 422 and "sha256" in with_sha.json()["error"]["message"]
        unknown = add({"name": "bad", "model": "models:/churn-logreg/99"})
        assert unknown.status_code == 422 and "not found on the tracking server" in unknown.json()["error"]["message"]
        os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        try:
            away = add({"name": "bad", "model": "models:/churn-xgb@champion"})
        finally:
            os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        assert away.status_code == 503 and away.json()["error"]["code"] == "mlflow_unavailable", away.text
        assert registry.entries("churn") == entries
        assert {v["name"] for v in http.get("/v1/experiments/churn").json()["variants"]} == {"champ", *uris}
