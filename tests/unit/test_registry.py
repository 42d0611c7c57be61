import hashlib
import json
import re
import types

import numpy as np
import pytest

from gateway.learning import artifacts as artifacts_mod
from gateway.learning import registry as registry_mod
from gateway.learning.artifacts import ArtifactError, predict, save_model, sha256_file, train
from gateway.learning.registry import ModelRegistry, RegistryError
from gateway.policy import NAME_PATTERN


class SimulatedCrash(BaseException):
    """Stands in for the process dying: not an Exception, so no cleanup handler runs."""


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    return X, y


@pytest.fixture(scope="module")
def logreg(data):
    return train("logistic_regression", *data)


@pytest.fixture(scope="module")
def xgb(data):
    return train("xgboost", *data)


@pytest.fixture
def reg(tmp_path):
    ticks = iter(range(1000, 2000))
    return ModelRegistry(tmp_path / "registry", clock=lambda: float(next(ticks)))


def test_register_then_list_get_and_load(reg, logreg, xgb, data):
    X, _ = data
    a = reg.register("churn", "logistic_regression-r1", logreg, {"metrics": {"accuracy": np.float64(0.9)}})
    b = reg.register(
        "churn", "xgboost-r1", xgb,
        {"data_window": {"from_t": 1.0, "to_t": 2.0, "rows": 200}, "parent": "baseline", "compared_against": "baseline"},
    )
    assert a.path.name == "logistic_regression-r1.skops" and b.path.name == "xgboost-r1.ubj"
    assert a.meta_path.name == "logistic_regression-r1.skops.meta.json"
    assert [e.name for e in reg.entries("churn")] == ["logistic_regression-r1", "xgboost-r1"]  # by created_at
    assert reg.latest("churn").name == "xgboost-r1"
    got = reg.get("churn", "xgboost-r1")
    assert got == b and got.sha256 == sha256_file(b.path)
    meta = json.loads(b.meta_path.read_text())
    assert meta["name"] == "xgboost-r1" and meta["experiment"] == "churn" and meta["algorithm"] == "xgboost"
    assert meta["sha256"] == b.sha256 and meta["artifact"] == "xgboost-r1.ubj"
    assert meta["data_window"] == {"from_t": 1.0, "to_t": 2.0, "rows": 200} and meta["parent"] == "baseline"
    assert json.loads(a.meta_path.read_text())["metrics"] == {"accuracy": 0.9}
    assert meta["created_at"] > json.loads(a.meta_path.read_text())["created_at"]
    for entry, model in ((a, logreg), (b, xgb)):
        labels, proba = predict(reg.load(entry), X)
        want_labels, want_proba = predict(model, X)
        np.testing.assert_array_equal(labels, want_labels)
        np.testing.assert_allclose(proba, want_proba, rtol=1e-6)
    ref = b.ref()
    assert (ref.experiment, ref.variant, ref.sha256) == ("churn", "xgboost-r1", b.sha256)
    assert reg.experiments() == ["churn"]
    with pytest.raises(KeyError):
        reg.get("churn", "nope")
    assert reg.entries("other") == []


def test_created_at_from_metadata_orders_entries(reg, logreg):
    reg.register("e", "m-2", logreg, {"created_at": 50.0})
    reg.register("e", "m-1", logreg, {"created_at": 10.0})
    assert [(e.name, e.created_at) for e in reg.entries("e")] == [("m-1", 10.0), ("m-2", 50.0)]


def test_next_name_is_unique_and_valid(reg, logreg, xgb):
    assert reg.next_name("churn", "xgboost") == "xgboost-r1"
    reg.register("churn", "xgboost-r1", xgb, {})
    reg.register("churn", "xgboost-r4", xgb, {})
    reg.register("churn", "logistic_regression-r1", logreg, {})
    assert reg.next_name("churn", "xgboost") == "xgboost-r5"
    assert reg.next_name("churn", "logistic_regression") == "logistic_regression-r2"
    assert reg.next_name("churn", "xgboost", taken=["xgboost-r9"]) == "xgboost-r10"
    assert reg.next_name("churn", "hist_gradient_boosting") == "hist_gradient_boosting-r1"
    assert re.fullmatch(NAME_PATTERN, reg.next_name("churn", "hist_gradient_boosting"))


def test_a_taken_name_is_refused_and_the_entry_kept(reg, logreg, xgb):
    first = reg.register("churn", "m1", xgb, {})
    with pytest.raises(RegistryError, match="already"):
        reg.register("churn", "m1", xgb, {})
    with pytest.raises(RegistryError, match="already"):
        reg.register("churn", "m1", logreg, {})  # another suffix, same name
    assert reg.entries("churn") == [first]
    assert sha256_file(first.path) == first.sha256


@pytest.mark.parametrize("bad", ["../x", "", "a/b", ".hidden", "x" * 64])
def test_names_that_could_escape_the_folder_are_refused(reg, logreg, bad):
    with pytest.raises(ValueError):
        reg.register("churn", bad, logreg, {})
    with pytest.raises(ValueError):
        reg.register(bad, "ok", logreg, {})


def test_algorithm_must_match_the_model(reg, xgb):
    with pytest.raises(ValueError, match="does not match"):
        reg.register("churn", "m1", xgb, {"algorithm": "logistic_regression"})


def test_crash_between_artifact_and_metadata_leaves_no_entry(reg, xgb, monkeypatch):
    def crash(path, data):
        raise SimulatedCrash()

    monkeypatch.setattr(registry_mod, "_write_json_atomic", crash)
    with pytest.raises(SimulatedCrash):
        reg.register("churn", "xgboost-r1", xgb, {})
    monkeypatch.undo()
    folder = reg.folder("churn")
    orphan = folder / "xgboost-r1.ubj"
    assert orphan.is_file() and orphan.stat().st_size > 0  # the artifact made it to disk
    assert reg.entries("churn") == []
    with pytest.raises(KeyError):
        reg.get("churn", "xgboost-r1")
    assert reg.next_name("churn", "xgboost") == "xgboost-r2"  # the orphan's name is not reused
    assert reg.gc("churn", min_age_s=3600) == []  # too fresh to be sure it is abandoned
    assert reg.gc() == [orphan]
    assert list(folder.iterdir()) == []
    entry = reg.register("churn", "xgboost-r1", xgb, {})  # the name is free again
    assert reg.entries("churn") == [entry]


def test_an_ordinary_metadata_failure_cleans_up_at_once(reg, xgb, monkeypatch):
    def fail(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry_mod, "_write_json_atomic", fail)
    with pytest.raises(OSError):
        reg.register("churn", "xgboost-r1", xgb, {})
    assert list(reg.folder("churn").iterdir()) == []


def test_crash_while_writing_metadata_leaves_a_temp_file_that_never_lists(reg, xgb, monkeypatch):
    def crash_on_replace(src, dst):
        raise SimulatedCrash()

    monkeypatch.setattr(registry_mod.os, "replace", crash_on_replace)
    with pytest.raises(SimulatedCrash):
        reg.register("churn", "xgboost-r1", xgb, {})
    monkeypatch.undo()
    folder = reg.folder("churn")
    # The metadata is not in place (its temp file may or may not survive a real crash).
    assert not (folder / "xgboost-r1.ubj.meta.json").exists()
    assert reg.entries("churn") == []
    (folder / ".xgboost-r1.ubj.meta.json.abc123.tmp").write_text('{"name": "xgb')  # a torn temp file
    assert reg.entries("churn") == []
    reg.gc("churn")
    assert list(folder.iterdir()) == []


def test_unusable_metadata_never_lists(reg, logreg):
    entry = reg.register("churn", "good", logreg, {})
    folder = reg.folder("churn")
    torn = reg.register("churn", "torn", logreg, {})
    torn.meta_path.write_text(torn.meta_path.read_text()[:40])  # truncated JSON
    lost = reg.register("churn", "lost", logreg, {})
    lost.path.unlink()  # metadata without its artifact
    moved = reg.register("churn", "moved", logreg, {})
    meta = json.loads(moved.meta_path.read_text())
    meta["artifact"] = "good.skops"  # metadata pointing at another entry's artifact
    moved.meta_path.write_text(json.dumps(meta))
    assert reg.entries("churn") == [entry]
    removed = {p.name for p in reg.gc("churn")}
    assert removed == {
        "torn.skops", "torn.skops.meta.json", "lost.skops.meta.json", "moved.skops", "moved.skops.meta.json"
    }
    assert sorted(p.name for p in folder.iterdir()) == ["good.skops", "good.skops.meta.json"]


@pytest.mark.parametrize("which", ["logreg", "xgb"])
def test_a_tampered_artifact_is_refused(reg, request, which):
    model = request.getfixturevalue(which)
    entry = reg.register("churn", "m1", model, {})
    reg.load(entry)  # fine before
    raw = bytearray(entry.path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    entry.path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        reg.load(reg.get("churn", "m1"))


def test_gc_leaves_unrelated_files_alone(reg, logreg):
    reg.register("churn", "m1", logreg, {})
    folder = reg.folder("churn")
    (folder / "README.txt").write_text("notes")
    assert reg.gc() == []
    assert (folder / "README.txt").exists()


def test_a_challenger_is_loaded_only_with_the_bytes_it_was_registered_with(reg, logreg, data):
    """What the router (placement `router`) and the challenger pool load a challenger with."""
    from gateway.serving.challengers import load_registered

    entry = reg.register("churn", "logreg-r1", logreg)
    loaded = load_registered(reg, "churn", "logreg-r1", entry.sha256)
    labels, _ = loaded.predict_rows(data[0])
    np.testing.assert_array_equal(labels, predict(logreg, data[0])[0])
    with pytest.raises(ArtifactError, match="not the expected"):
        load_registered(reg, "churn", "logreg-r1", "0" * 64)
    entry.path.write_bytes(entry.path.read_bytes() + b"tampered")
    with pytest.raises(ArtifactError):
        load_registered(reg, "churn", "logreg-r1", entry.sha256)


def _swap_after_hashing(monkeypatch, path, replacement: bytes) -> None:
    """Stand in for a writer racing the loader: as soon as the loader has a digest, the file on
    disk is replaced by other (valid) model bytes."""
    real = hashlib.sha256

    class Swapping:
        def __init__(self, data=b""):
            self._h = real(data)

        def update(self, data):
            self._h.update(data)

        def hexdigest(self):
            digest = self._h.hexdigest()
            path.write_bytes(replacement)
            return digest

    monkeypatch.setattr(artifacts_mod, "hashlib", types.SimpleNamespace(sha256=Swapping))


@pytest.mark.parametrize("which", ["logreg", "xgb"])
@pytest.mark.parametrize("via", ["registry", "challenger"])
def test_the_bytes_checked_are_the_bytes_loaded(reg, request, data, tmp_path, monkeypatch, which, via):
    from gateway.serving.challengers import load_registered

    X, y = data
    model = request.getfixturevalue(which)
    entry = reg.register("churn", "m1", model, {})
    # Another valid model of the same kind (labels flipped): loaded, it would serve silently.
    other = train("xgboost" if which == "xgb" else "logistic_regression", X, 1 - y)
    other_path = tmp_path / f"other{entry.path.suffix}"
    save_model(other, other_path)
    assert not np.array_equal(predict(other, X)[0], predict(model, X)[0])

    _swap_after_hashing(monkeypatch, entry.path, other_path.read_bytes())
    if via == "registry":
        loaded = reg.load(entry)
    else:
        loaded = load_registered(reg, "churn", "m1", entry.sha256).model
    np.testing.assert_array_equal(predict(loaded, X)[0], predict(model, X)[0])  # not the swapped-in model

    monkeypatch.undo()
    assert entry.path.read_bytes() == other_path.read_bytes()  # the swap did happen
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        reg.load(entry)  # and the swapped bytes are refused by digest
