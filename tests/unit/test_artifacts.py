import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from gateway.learning.artifacts import (
    ALGORITHMS,
    TRUSTED_SKOPS_TYPES,
    ArtifactError,
    load_model,
    predict,
    save_model,
    sha256_file,
    train,
)
from gateway.learning.features import FeatureEncoder
from gateway.policy import Feature
from gateway.sim.churn import FEATURES, make_churn

SUFFIX = {"logistic_regression": ".skops", "hist_gradient_boosting": ".skops", "xgboost": ".ubj"}


@pytest.fixture(scope="module")
def data():
    enc = FeatureEncoder([Feature(**f) for f in FEATURES])
    rows, y = make_churn(600, seed=11)
    test_rows, _ = make_churn(200, seed=12)
    return enc.encode(rows), y, enc.encode(test_rows)


@pytest.fixture(scope="module")
def models(data):
    X, y, _ = data
    return {algo: train(algo, X, y, seed=0) for algo in ALGORITHMS}


def _custom_double(x):
    return x * 2


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip_gives_identical_predictions(tmp_path, data, models, algorithm):
    _, _, X_test = data
    model = models[algorithm]
    path = tmp_path / f"model{SUFFIX[algorithm]}"
    digest = save_model(model, path)
    assert digest == sha256_file(path)
    assert len(digest) == 64
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    loaded = load_model(path, expected_sha256=digest)
    labels, proba = predict(model, X_test)
    labels2, proba2 = predict(loaded, X_test)
    assert labels.dtype == np.int64 and set(np.unique(labels)) <= {0, 1}
    assert proba is not None and proba.shape == (len(X_test),)
    np.testing.assert_array_equal(labels, labels2)
    np.testing.assert_array_equal(proba, proba2)
    np.testing.assert_array_equal(labels, (proba > 0.5).astype(np.int64))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_labels_are_what_the_models_own_predict_returns(tmp_path, data, models, algorithm):
    """predict() takes one pass (predict_proba) and derives the label: it must be the label
    the model's own predict() gives, loaded from its file, on every row."""
    X, _, X_test = data
    path = tmp_path / f"model{SUFFIX[algorithm]}"
    loaded = load_model(path, expected_sha256=save_model(models[algorithm], path))
    rows = np.vstack([X, X_test])
    labels, _ = predict(loaded, rows)
    np.testing.assert_array_equal(labels, np.asarray(loaded.predict(rows)).astype(np.int64))


def test_xgboost_json_format_and_single_thread(tmp_path, data, models):
    _, _, X_test = data
    path = tmp_path / "model.json"
    save_model(models["xgboost"], path)
    loaded = load_model(path)
    assert loaded.get_params()["n_jobs"] == 1
    np.testing.assert_array_equal(predict(loaded, X_test)[1], predict(models["xgboost"], X_test)[1])


def test_save_overwrites_atomically(tmp_path, models):
    path = tmp_path / "sub" / "m.skops"
    first = save_model(models["logistic_regression"], path)
    second = save_model(models["hist_gradient_boosting"], path)
    assert first != second
    assert sha256_file(path) == second
    assert [p.name for p in path.parent.iterdir()] == ["m.skops"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_tampered_file_is_refused(tmp_path, models, algorithm):
    path = tmp_path / f"model{SUFFIX[algorithm]}"
    digest = save_model(models[algorithm], path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as info:
        load_model(path, expected_sha256=digest)
    msg = str(info.value)
    assert str(path) in msg and digest in msg and sha256_file(path) in msg


def test_untrusted_skops_type_is_refused(tmp_path, data):
    X, y, _ = data
    path = tmp_path / "tree.skops"
    skops.io.dump(DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y), path)
    assert "sklearn.tree._tree.Tree" not in TRUSTED_SKOPS_TYPES
    with pytest.raises(ArtifactError, match=r"sklearn\.tree\._tree\.Tree"):
        load_model(path, expected_sha256=sha256_file(path))  # a matching digest is not enough


def test_custom_function_in_skops_file_is_refused(tmp_path, data):
    X, y, _ = data
    model = Pipeline([("f", FunctionTransformer(_custom_double)), ("s", StandardScaler())]).fit(X, y)
    path = tmp_path / "func.skops"
    skops.io.dump(model, path)
    with pytest.raises(ArtifactError, match="_custom_double"):
        load_model(path)


def test_wrong_suffix_on_save(tmp_path, models):
    with pytest.raises(ValueError, match="skops"):
        save_model(models["logistic_regression"], tmp_path / "m.ubj")
    with pytest.raises(ValueError, match="ubj"):
        save_model(models["xgboost"], tmp_path / "m.skops")
    with pytest.raises(ValueError):
        save_model(models["hist_gradient_boosting"], tmp_path / "m.pkl")
    assert list(tmp_path.iterdir()) == []


def test_unknown_suffix_on_load(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ArtifactError, match="unknown artifact type"):
        load_model(path)


@pytest.mark.parametrize("name", ["model.skops", "model.ubj", "model.json"])
def test_corrupt_file_raises_artifact_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not a model \x00\x01\x02")
    with pytest.raises(ArtifactError, match="model"):
        load_model(path)


def test_truncated_skops_file(tmp_path, models):
    path = tmp_path / "m.skops"
    save_model(models["hist_gradient_boosting"], path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ArtifactError):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError):
        load_model(tmp_path / "nope.skops")
    with pytest.raises(ArtifactError):
        load_model(tmp_path / "nope.ubj", expected_sha256="0" * 64)


def test_train_rejects_bad_input(data):
    X, y, _ = data
    with pytest.raises(ValueError, match="unknown algorithm"):
        train("random_forest", X, y)
    with pytest.raises(ValueError):
        train("xgboost", X, y[:-1])
    with pytest.raises(ValueError, match="both classes"):
        train("logistic_regression", X, np.zeros(len(y), dtype=int))


def test_training_is_seeded(data):
    X, y, X_test = data
    a = train("xgboost", X, y, seed=3)
    b = train("xgboost", X, y, seed=3)
    np.testing.assert_array_equal(predict(a, X_test)[1], predict(b, X_test)[1])
    assert a.get_params()["n_jobs"] == 1


@pytest.mark.parametrize("algorithm", ["logistic_regression", "xgboost", "hist_gradient_boosting"])
def test_models_trained_with_missing_values_predict_rows_with_missing_values(tmp_path, algorithm):
    # Features declared `missing: impute` arrive as NaN: every model's pipeline must fill them in,
    # and survive a save / load round trip (skops trusts the imputer).
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    X[rng.random(X.shape) < 0.1] = np.nan
    model = train(algorithm, X, y, seed=0)
    path = tmp_path / ("m.ubj" if algorithm == "xgboost" else "m.skops")
    digest = save_model(model, path)
    loaded = load_model(path, expected_sha256=digest)
    rows = np.array([[np.nan, 1.0, 0.0], [2.0, np.nan, np.nan]])
    labels, _ = predict(loaded, rows)
    assert labels.shape == (2,) and set(labels.tolist()) <= {0, 1}


def test_a_model_that_refuses_missing_values_still_refuses_them():
    # predict() skips scikit-learn's scan for NaN only when it found none itself: a model
    # without an imputer must still refuse a NaN, not answer a label computed from it.
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    model = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(X, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="NaN"):
        predict(model, np.array([[np.nan, 1.0]]))
    assert predict(model, np.array([[1.0, 0.0]]))[0].tolist() == model.predict([[1.0, 0.0]]).tolist()


def test_a_pipeline_step_that_makes_the_input_non_finite_is_refused():
    # The input is finite; a step (exp overflowing) makes it infinite, which only the next
    # step's own scan refuses: the answer must not be a label.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    model = make_pipeline(FunctionTransformer(np.exp), LogisticRegression()).fit(X, (X[:, 0] > 0).astype(int))
    assert predict(model, X[:3])[1] is not None
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="infinity"):
        predict(model, np.array([[1e4, 0.0]]))
