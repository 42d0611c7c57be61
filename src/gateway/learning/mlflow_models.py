"""Policy variants whose `model` is an MLflow URI: `models:/<name>/<version>`,
`models:/<name>@<alias>` or `runs:/<run_id>/<path>`, from the tracking server in
MLFLOW_TRACKING_URI (the optional extra `mlflow`).

Safety: a model from a tracking server is untrusted input. The MLmodel file (YAML, read with
safe_load) is fetched first and decides, before any model byte is downloaded, whether the model
can be loaded without unpickling:

- flavor `sklearn` with `serialization_format: skops` (MLflow 3's default outside Databricks):
  loaded by artifacts.load_model against the gateway's own skops allowlist. The
  `skops_trusted_types` the MLmodel file lists are ignored: the file is as untrusted as the
  model, so that list would let a crafted model trust anything (mlflow.sklearn.load_model honours
  it, which is why it is not used here);
- flavor `xgboost` with `model_format: ubj` or `json` and model class XGBClassifier: XGBoost's
  own format, which holds trees and numbers, no code;
- everything else is refused, a scikit-learn model in `pickle` or `cloudpickle` (the default
  before MLflow 3) with a message that says how to log it safely.

The accepted model is copied into the gateway's registry (re-serialised as the registry does:
skops or UBJSON) with its sha256 and the MLflow URI in its metadata; a restart reuses that copy
(for a pinned version or run without asking MLflow; an alias is resolved again, since it may have
moved).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import urllib.parse
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from gateway.learning import artifacts

if TYPE_CHECKING:
    from gateway.learning.bootstrap import ArtifactRef
    from gateway.learning.registry import ModelRegistry, RegistryEntry

TRACKING_ENV = "MLFLOW_TRACKING_URI"
INSTALL_HINT = "pip install 'ab-auto-promotion[mlflow]'"
SAFE_LOGGING_HINT = (
    "log it with mlflow.sklearn.log_model(model, name='model', serialization_format='skops') "
    "(an XGBoost model with mlflow.xgboost.log_model(model, name='model', model_format='ubj'))"
)
SAFE_XGBOOST_FORMATS = ("ubj", "json")
XGBOOST_CLASSES = ("xgboost.sklearn.XGBClassifier",)

# Registered model names: anything but '/' and '@' (they delimit the URI); versions are numbers
# (a stage such as 'Production' or 'latest' is not a pinned model, use an alias instead).
_MODELS_VERSION = re.compile(r"^models:/([^/@]+)/(\d+)$")
_MODELS_ALIAS = re.compile(r"^models:/([^/@]+)@([A-Za-z0-9_-]+)$")
_RUNS = re.compile(r"^runs:/([A-Za-z0-9_-]+)/(.+)$")


class MlflowModelError(artifacts.ArtifactError):
    """An MLflow model the gateway cannot use: bad URI, unreachable server, unsafe format."""


class MlflowUnavailable(MlflowModelError):
    """MLflow cannot be asked (no client, no tracking URI, no answer): the gateway's side, not
    the model's (an operator's add-variant answers 503, not 422)."""


@dataclass(frozen=True)
class MlflowUri:
    uri: str
    kind: str  # "version", "alias" or "run"
    name: str | None = None  # registered model name
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    path: str | None = None  # the model's artifact path within the run

    @property
    def pinned(self) -> bool:
        """The URI names one fixed model (an alias may move)."""
        return self.kind != "alias"


def parse_mlflow_uri(value: str) -> MlflowUri:
    """Parse one of the three accepted forms, or raise MlflowModelError naming them."""
    if m := _MODELS_VERSION.match(value):
        return MlflowUri(value, "version", name=m.group(1), version=str(int(m.group(2))))
    if m := _MODELS_ALIAS.match(value):
        return MlflowUri(value, "alias", name=m.group(1), alias=m.group(2))
    if m := _RUNS.match(value):
        path = _safe_relative(m.group(2).strip("/"), value)
        return MlflowUri(value, "run", run_id=m.group(1), path=path)
    raise MlflowModelError(
        f"{value!r} is not an MLflow model URI the gateway accepts: use models:/<name>/<version>, "
        "models:/<name>@<alias> or runs:/<run_id>/<path>"
    )


def _safe_relative(path: str, where: str) -> str:
    """A relative artifact path that cannot climb out of the folder it is downloaded into."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")):
        raise MlflowModelError(f"{where}: {path!r} is not a plain relative artifact path")
    return str(p)


# -- deciding from the MLmodel file, before anything is loaded -----------------------------------


@dataclass(frozen=True)
class FlavorChoice:
    flavor: str  # "sklearn" or "xgboost"
    data: str  # the model file's path inside the MLflow model folder
    format: str  # "skops", "ubj" or "json"


def choose_flavor(mlmodel: Any, uri: str) -> FlavorChoice:
    """Which file to load and how, from the MLmodel file alone; MlflowModelError for anything
    that would need unpickling or that the gateway cannot serve."""
    flavors = mlmodel.get("flavors") if isinstance(mlmodel, Mapping) else None
    if not isinstance(flavors, Mapping) or not flavors:
        raise MlflowModelError(f"{uri}: the MLmodel file lists no flavors; is this an MLflow model?")
    if isinstance(conf := flavors.get("sklearn"), Mapping):
        # MLflow before 3.0 wrote no serialization_format and always pickled.
        fmt = str(conf.get("serialization_format") or "pickle")
        if fmt != "skops":
            raise MlflowModelError(
                f"{uri}: a scikit-learn model serialised with {fmt}; loading it would unpickle a file "
                "from the tracking server, which can run any code, so the gateway refuses it. "
                f"To serve it, {SAFE_LOGGING_HINT}"
            )
        data = _safe_relative(str(conf.get("pickled_model") or ""), uri)
        if not data.endswith(artifacts.SKOPS_SUFFIXES):
            raise MlflowModelError(f"{uri}: the sklearn flavor's skops file {data!r} does not end in .skops")
        return FlavorChoice("sklearn", data, "skops")
    if isinstance(conf := flavors.get("xgboost"), Mapping):
        fmt = str(conf.get("model_format") or "xgb")
        if fmt not in SAFE_XGBOOST_FORMATS:
            raise MlflowModelError(
                f"{uri}: an XGBoost model in format {fmt!r}; the gateway loads XGBoost's own "
                f"{' or '.join(SAFE_XGBOOST_FORMATS)} formats only: log it with "
                "mlflow.xgboost.log_model(model, name='model', model_format='ubj')"
            )
        # Older MLflow wrote no model_class: the model was then a raw Booster.
        cls = str(conf.get("model_class") or "xgboost.core.Booster")
        if cls not in XGBOOST_CLASSES:
            raise MlflowModelError(
                f"{uri}: an XGBoost {cls}; the gateway serves classifiers with predict_proba, log an "
                "xgboost.XGBClassifier"
            )
        data = _safe_relative(str(conf.get("data") or ""), uri)
        if not data.endswith(f".{fmt}"):
            raise MlflowModelError(f"{uri}: the xgboost flavor's file {data!r} does not end in .{fmt}")
        return FlavorChoice("xgboost", data, fmt)
    raise MlflowModelError(
        f"{uri}: flavors {sorted(flavors)}; the gateway loads MLflow's sklearn flavor (skops) and "
        f"xgboost flavor (ubj/json) only, never a pickle. To serve it, {SAFE_LOGGING_HINT}"
    )


# -- talking to MLflow -------------------------------------------------------------------------


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise MlflowUnavailable(f"MLflow model URIs need the mlflow extra: {INSTALL_HINT}") from None
    return mlflow


def tracking_uri() -> str:
    uri = os.environ.get(TRACKING_ENV, "").strip()
    if not uri:
        raise MlflowUnavailable(f"MLflow model URIs need {TRACKING_ENV} (the tracking server, e.g. http://127.0.0.1:5000)")
    return uri


def shown_uri(uri: str) -> str:
    """The tracking URI as it may be logged or stored: without the user and password a URI can
    carry (https://user:token@host), which would otherwise reach logs and the history."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def redact(text: str, uri: str) -> str:
    """`text` (an error message) with the tracking URI's credentials taken out."""
    text = text.replace(uri, shown_uri(uri))
    password = urllib.parse.urlsplit(uri).password
    return text.replace(password, "***") if password else text


_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
# The limits live in os.environ, which the router's request threads share: they are set by the
# first user and removed by the last, so an overlapping call never runs on MLflow's defaults.
_retries_lock = threading.Lock()
_retries_users = 0
_retries_added: list[str] = []


@contextlib.contextmanager
def bounded_retries() -> Iterator[None]:
    """MLflow retries a failed request 7 times with exponential backoff (minutes in all) by
    default; a gateway start or a retraining should fail or move on sooner. The user's own
    MLFLOW_HTTP_REQUEST_* settings win."""
    global _retries_users, _retries_added
    with _retries_lock:
        if _retries_users == 0:
            _retries_added = [k for k in _RETRY_DEFAULTS if k not in os.environ]
            for k in _retries_added:
                os.environ[k] = _RETRY_DEFAULTS[k]
        _retries_users += 1
    try:
        yield
    finally:
        with _retries_lock:
            _retries_users -= 1
            if _retries_users == 0:
                for k in _retries_added:
                    os.environ.pop(k, None)


@dataclass(frozen=True)
class Resolved:
    """What a URI named when it was read: enough to find the same copy again."""

    uri: MlflowUri
    base: str  # the URI the files are downloaded from (an alias pinned to its version)
    version: str | None = None
    run_id: str | None = None

    def identity(self) -> dict[str, Any]:
        if self.uri.kind == "run":
            return {"run_id": self.uri.run_id, "path": self.uri.path}
        return {"registered_model": self.uri.name, "version": self.version}


# MLflow's answers that the request itself is wrong: asking again cannot help (422). Anything
# else, connection failures included (MLflow wraps them, after its retries, as INTERNAL_ERROR,
# also when one file of a download fails), is an MLflow that cannot answer now (503).
# UNAUTHENTICATED is not among them: the gateway's own credentials, not the request, are wrong.
_REQUEST_ERRORS = frozenset({
    "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "BAD_REQUEST", "PERMISSION_DENIED",
    "INVALID_STATE", "NOT_FOUND",
})
# The artifact proxy's answer for a missing file reaches us as requests' HTTPError text inside
# an INTERNAL_ERROR (download_artifacts wraps every failed file so).
_MISSING_FILE = re.compile(r"\b40[04] Client Error")


def _classified(err: Any, what: str, where: str) -> MlflowModelError:
    message = redact(err.message, tracking_uri())
    if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or _MISSING_FILE.search(err.message or ""):
        return MlflowModelError(f"{what}: not found on {where}: {message}")
    if err.error_code in _REQUEST_ERRORS:
        return MlflowModelError(f"{what}: refused by {where} ({err.error_code}): {message}")
    return MlflowUnavailable(f"{what}: cannot read it from {where} ({err.error_code}): {message}")


def resolve(uri: MlflowUri) -> Resolved:
    """Ask the tracking server which model version an alias points at (a pinned URI needs no
    question, but is checked to exist)."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    try:
        if uri.kind == "run":
            run = client.get_run(uri.run_id)
            return Resolved(uri, f"runs:/{uri.run_id}/{uri.path}", run_id=run.info.run_id)
        if uri.kind == "alias":
            mv = client.get_model_version_by_alias(uri.name, uri.alias)
        else:
            mv = client.get_model_version(uri.name, uri.version)
    except mlflow.exceptions.MlflowException as err:
        raise _classified(err, uri.uri, f"the tracking server {shown_uri(tracking_uri())}") from err
    except OSError as err:  # requests' connection errors are OSErrors
        raise MlflowUnavailable(f"{uri.uri}: cannot reach the tracking server {shown_uri(tracking_uri())}: "
                             f"{redact(str(err), tracking_uri())}") from err
    return Resolved(uri, f"models:/{mv.name}/{mv.version}", version=str(mv.version), run_id=mv.run_id)


def _download(base: str, relative: str, dst: Path) -> Path:
    mlflow = _mlflow()
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{base}/{relative}", dst_path=str(dst), tracking_uri=tracking_uri()
        )
    except mlflow.exceptions.MlflowException as err:
        raise _classified(err, f"{base}/{relative}", "MLflow's artifact store") from err
    except OSError as err:
        raise MlflowUnavailable(f"{base}: cannot download {relative}: {err}") from err
    path = Path(local)
    if not path.is_file():
        raise MlflowModelError(f"{base}: {relative} is not a file")
    return path


@dataclass
class Fetched:
    resolved: Resolved
    choice: FlavorChoice
    model: Any
    source_sha256: str  # of the file as MLflow stored it


def fetch(resolved: Resolved) -> Fetched:
    """The MLmodel file first, decided on; then the one model file, loaded by artifacts'
    allowlisting loaders (never MLflow's own loaders)."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="gateway-mlflow-") as tmp:
        mlmodel_path = _download(resolved.base, "MLmodel", Path(tmp) / "meta")
        try:
            mlmodel = yaml.safe_load(mlmodel_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise MlflowModelError(f"{resolved.uri.uri}: unreadable MLmodel file: {err}") from err
        choice = choose_flavor(mlmodel, resolved.uri.uri)
        data_path = _download(resolved.base, choice.data, Path(tmp) / "data")
        digest = hashlib.sha256(data_path.read_bytes()).hexdigest()
        try:
            model = artifacts.load_model(data_path)
        except artifacts.ArtifactError as err:
            raise MlflowModelError(f"{resolved.uri.uri}: {err}") from err
    return Fetched(resolved, choice, model, digest)


# -- into the gateway's registry ----------------------------------------------------------------


def _copy_of(registry: ModelRegistry, experiment: str, variant: str, identity: Mapping[str, Any]) -> RegistryEntry | None:
    """The copy of that model version (or run artifact) from this tracking server: another
    server's `churn/1` is another model."""
    server = shown_uri(tracking_uri())
    for entry in reversed(registry.entries(experiment)):
        meta = entry.metadata.get("mlflow")
        if (
            isinstance(meta, Mapping) and meta.get("variant") == variant
            and meta.get("tracking_uri") == server and meta.get("identity") == dict(identity)
        ):
            return entry
    return None


def import_model(registry: ModelRegistry, experiment: str, variant: str, uri_text: str) -> RegistryEntry:
    """The registry entry holding the model `uri_text` names, copying it from MLflow if the
    registry has no copy of that exact version (or run artifact) yet."""
    uri = parse_mlflow_uri(uri_text)
    if uri.pinned:
        # A pinned URI names the same bytes forever: the copy serves a restart without MLflow.
        offline = Resolved(uri, "", version=uri.version)
        if (entry := _copy_of(registry, experiment, variant, offline.identity())) is not None:
            return entry
    with bounded_retries():
        resolved = resolve(uri)
        if (entry := _copy_of(registry, experiment, variant, resolved.identity())) is not None:
            return entry
        fetched = fetch(resolved)
    # Entry names are the variant's (shortened to fit the name pattern) plus a revision.
    name = registry.next_name(experiment, f"{variant[:40]}.mlflow")
    return registry.register(experiment, name, fetched.model, _registry_metadata(fetched, variant))


def fetch_model(variant: str, uri_text: str) -> tuple[Any, dict[str, Any]]:
    """The model `uri_text` names, fetched and loaded as import_model does, and the metadata its
    registry copy records, for a caller that checks the model before registering it (an
    operator's add-variant: a model that does not fit the experiment leaves no copy)."""
    uri = parse_mlflow_uri(uri_text)
    with bounded_retries():
        fetched = fetch(resolve(uri))
    return fetched.model, _registry_metadata(fetched, variant)


def _registry_metadata(fetched: Fetched, variant: str) -> dict[str, Any]:
    """What a registry copy of an MLflow model records: where it came from, to find it again."""
    from gateway.learning.registry import infer_algorithm

    model, resolved = fetched.model, fetched.resolved
    return {
        "algorithm": infer_algorithm(model) or f"{type(model).__module__}.{type(model).__name__}",
        "mlflow": {
            "uri": resolved.uri.uri,
            "resolved_uri": resolved.base,
            "tracking_uri": shown_uri(tracking_uri()),
            "variant": variant,
            "identity": resolved.identity(),
            "run_id": resolved.run_id,
            "flavor": fetched.choice.flavor,
            "format": fetched.choice.format,
            "source_sha256": fetched.source_sha256,
        },
    }


def resolve_variant(experiment: str, variant: str, uri_text: str, state_dir: Path) -> ArtifactRef:
    """bootstrap.resolve_artifacts' answer for a variant whose model is an MLflow URI."""
    from gateway.learning.bootstrap import ArtifactRef
    from gateway.learning.registry import ModelRegistry

    entry = import_model(ModelRegistry.in_state_dir(state_dir), experiment, variant, uri_text)
    return ArtifactRef(experiment, variant, str(entry.path.resolve()), entry.sha256)
