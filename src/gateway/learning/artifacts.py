"""Training and safe model artifacts: skops for scikit-learn, XGBoost's own format for XGBoost.

Nothing here ever unpickles. A load can be pinned to a sha256 digest, checked on the bytes read
(once) before any of them is deserialised; skops files are only loaded when every type that skops
does not trust by default is in the explicit allowlist TRUSTED_SKOPS_TYPES.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ALGORITHMS = ("logistic_regression", "xgboost", "hist_gradient_boosting")

SKOPS_SUFFIXES = (".skops",)
XGBOOST_SUFFIXES = (".ubj", ".json")

# Types outside skops' default trust set that our three algorithms need. skops already trusts
# scikit-learn estimators (Pipeline, StandardScaler, LogisticRegression,
# HistGradientBoostingClassifier, ...) and plain numpy containers; the HistGradientBoosting
# model additionally stores its fitted trees as TreePredictor objects. Anything else in a file
# (another estimator's internals, a custom function, ...) makes the load fail.
TRUSTED_SKOPS_TYPES: frozenset[str] = frozenset(
    {
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        # SimpleImputer keeps the dtype it was fitted on; a dtype is plain data, no code.
        "numpy.dtype",
    }
)

_CHUNK = 1 << 20


class ArtifactError(ValueError):
    """A model artifact that cannot be used: wrong digest, untrusted content, corrupt or unknown."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_xgboost(model: Any) -> bool:
    try:
        import xgboost
    except ImportError:  # pragma: no cover - xgboost is a dependency
        return False
    return isinstance(model, xgboost.XGBModel)


def train(algorithm: str, X: np.ndarray, y: np.ndarray, seed: int = 0) -> Any:
    """Fit one of ALGORITHMS on an encoded float matrix X and 0/1 labels y."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {list(ALGORITHMS)}")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X must be (n, width) and y (n,), got X{X.shape} and y{y.shape}")
    if np.unique(y).size < 2:
        raise ValueError("training needs labels from both classes")
    y = y.astype(np.int64)
    if algorithm == "logistic_regression":
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        # Missing numeric inputs (features declared `missing: impute`) arrive as NaN; tree models
        # route NaN themselves, a linear model needs them filled.
        model: Any = Pipeline([
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=1000)),
        ])
    elif algorithm == "hist_gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(random_state=seed)
    else:
        import xgboost

        model = xgboost.XGBClassifier(
            n_estimators=200,
            max_depth=4,
            learning_rate=0.1,
            random_state=seed,
            n_jobs=1,
            tree_method="hist",
        )
    model.fit(X, y)
    return model


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_model(model: Any, path: str | os.PathLike[str]) -> str:
    """Write `model` atomically to `path` and return the sha256 hex of the written file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if _is_xgboost(model):
        if suffix not in XGBOOST_SUFFIXES:
            raise ValueError(f"{path}: an XGBoost model is saved as {' or '.join(XGBOOST_SUFFIXES)}, not {path.suffix!r}")
    elif suffix not in SKOPS_SUFFIXES:
        raise ValueError(f"{path}: a scikit-learn model is saved as .skops, not {path.suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix on the temp file: XGBoost picks its format from it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if _is_xgboost(model):
            model.save_model(tmp)
        else:
            import skops.io

            skops.io.dump(model, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return digest


def load_model(path: str | os.PathLike[str], expected_sha256: str | None = None) -> Any:
    """Load an artifact written by save_model, refusing tampered, untrusted or corrupt files.

    The file is read once and the model is built from the very bytes whose digest was checked: a
    file swapped between a check and a second read would otherwise load unchecked."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SKOPS_SUFFIXES + XGBOOST_SUFFIXES:
        raise ArtifactError(
            f"{path}: unknown artifact type {path.suffix!r}; expected one of {list(SKOPS_SUFFIXES + XGBOOST_SUFFIXES)}"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such artifact file") from None
    except OSError as err:
        raise ArtifactError(f"{path}: cannot read artifact: {err.strerror or err}") from err
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256.lower():
            raise ArtifactError(f"{path}: sha256 mismatch: expected {expected_sha256}, got {actual}")
    if suffix in SKOPS_SUFFIXES:
        return _load_skops(path, data)
    return _load_xgboost(path, data)


def _load_skops(path: Path, data: bytes) -> Any:
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as err:
        raise ArtifactError(f"{path}: not a readable skops file: {type(err).__name__}: {err}") from err
    unexpected = sorted(set(untrusted) - TRUSTED_SKOPS_TYPES)
    if unexpected:
        raise ArtifactError(f"{path}: refusing to load, the file contains types outside the allowlist: {unexpected}")
    try:
        model = skops.io.loads(data, trusted=list(untrusted))
    except Exception as err:
        raise ArtifactError(f"{path}: cannot load skops file: {type(err).__name__}: {err}") from err
    if not hasattr(model, "predict"):
        raise ArtifactError(f"{path}: the skops file holds a {type(model).__name__}, not a model with predict()")
    return model


def _load_xgboost(path: Path, data: bytes) -> Any:
    import xgboost

    model = xgboost.XGBClassifier()
    try:
        # A bytearray is read as a model buffer (JSON or UBJSON, told apart by its content).
        model.load_model(bytearray(data))
    except Exception as err:
        raise ArtifactError(f"{path}: not a readable XGBoost model: {type(err).__name__}: {err}") from err
    # The machine is shared by many processes: never let a loaded model use every core.
    model.set_params(n_jobs=1)
    return model


def _fast_checks() -> contextlib.AbstractContextManager:
    """scikit-learn without the validation of its own methods' parameters (ours are fixed),
    ~10% of a one-row call. Its scan for NaN and infinities stays: a pipeline step can make a
    finite input infinite, and only the next step's scan refuses it."""
    import sklearn

    return sklearn.config_context(skip_parameter_validation=True)


def predict(model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Predicted labels as int64, and the probability of class 1 when the model has predict_proba."""
    if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
        with _fast_checks():
            return np.asarray(model.predict(X)).astype(np.int64, copy=False), None
    # One pass through the model, not two: the label is the most probable class, which is what
    # predict() returns for these classifiers (scikit-learn's and XGBoost's).
    with _fast_checks():
        proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    classes = list(model.classes_)
    labels = np.asarray(classes, dtype=np.int64)[np.argmax(proba, axis=1)]
    if 1 in classes:
        p1 = proba[:, classes.index(1)]
    elif proba.shape[1] == 2:
        p1 = proba[:, 1]
    else:  # a model that only ever saw class 0
        p1 = np.zeros(proba.shape[0], dtype=np.float64)
    return labels, np.ascontiguousarray(p1)
