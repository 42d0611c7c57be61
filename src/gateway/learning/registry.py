"""A file-system model registry: one folder per experiment under `<state_dir>/registry/`.

Each entry is two files side by side, named as bootstrap.py names its artifacts:

    <root>/<experiment>/<name>.ubj            (XGBoost) or <name>.skops (scikit-learn)
    <root>/<experiment>/<name>.ubj.meta.json  name, experiment, algorithm, sha256, created_at,
                                              data window, metrics, parent, ...

`register` writes the artifact first (atomically, via artifacts.save_model) and the metadata
last (a temp file, fsync, os.replace), so an entry only *lists* once both are complete. A crash
in between leaves an artifact without metadata: `entries()` ignores it, `next_name()` still
skips its name, and `gc()` removes it. `load()` checks the recorded sha256 before a single byte
is deserialised, so a tampered artifact is refused with ArtifactError.

Because the metadata sits where bootstrap.resolve_artifacts looks for it (`<artifact>.meta.json`),
a policy variant whose `model:` points at a registry artifact gets the same digest check.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.learning.bootstrap import ArtifactRef
from gateway.learning import artifacts
from gateway.policy import NAME_PATTERN

META_SUFFIX = ".meta.json"
FORMAT_VERSION = 1
_NAME = re.compile(NAME_PATTERN)
_ARTIFACT_SUFFIXES = (".ubj", ".skops")


class RegistryError(Exception):
    """A registry operation that cannot be done (e.g. the name is already taken)."""


@dataclass(frozen=True)
class RegistryEntry:
    """One complete registry entry: an artifact with its metadata."""

    experiment: str
    name: str
    algorithm: str
    path: Path  # the artifact
    sha256: str
    created_at: float
    metadata: dict[str, Any] = field(repr=False, compare=False)

    @property
    def meta_path(self) -> Path:
        return self.path.with_name(self.path.name + META_SUFFIX)

    def ref(self) -> ArtifactRef:
        """The artifact reference a variant replica loads (path + digest it must match)."""
        return ArtifactRef(self.experiment, self.name, str(self.path.resolve()), self.sha256)


def _check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{what}: {value!r} does not match {NAME_PATTERN}")
    return value


def infer_algorithm(model: Any) -> str | None:
    """The artifacts.ALGORITHMS name of a fitted model, or None when it is none of them."""
    if artifacts._is_xgboost(model):
        return "xgboost"
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    last = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if isinstance(last, LogisticRegression):
        return "logistic_regression"
    if isinstance(last, HistGradientBoostingClassifier):
        return "hist_gradient_boosting"
    return None


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays converted, NaN and infinities as None."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        x = float(value)
        return x if math.isfinite(x) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON serialisable: {value!r}")




def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON to a temp file in the same folder, fsync it, then os.replace it into place."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    artifacts.fsync_dir(path.parent)


def _entry_name(filename: str) -> str | None:
    """The entry name a (non-hidden) registry file belongs to, or None if it is not ours."""
    if filename.startswith("."):
        return None
    base = filename.removesuffix(META_SUFFIX)
    for suffix in _ARTIFACT_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return None


class ModelRegistry:
    """Model artifacts and their metadata under `root/<experiment>/` (root: `<state_dir>/registry`).

    One process should write an experiment's entries at a time (the retrainer); concurrent
    `register` calls with the same name are still refused safely (the name is reserved with an
    exclusive create), but `gc()` cannot tell an in-flight write from a crashed one unless it is
    given `min_age_s`.
    """

    def __init__(self, root: str | os.PathLike[str], clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.clock = clock

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike[str], **kwargs: Any) -> ModelRegistry:
        return cls(Path(state_dir) / "registry", **kwargs)

    def folder(self, experiment: str) -> Path:
        return self.root / _check_name("experiment", experiment)

    # -- writing ---------------------------------------------------------------------------

    def register(self, experiment: str, name: str, model: Any, metadata: Mapping[str, Any] | None = None) -> RegistryEntry:
        """Save `model` as entry `name` of `experiment` with `metadata` (JSON-able; numpy values
        are converted). The registry sets name, experiment, algorithm, sha256, artifact, format
        and (unless given) created_at. Raises RegistryError if the name is already used."""
        _check_name("name", name)
        meta_in = dict(metadata or {})
        inferred = infer_algorithm(model)
        given = meta_in.get("algorithm")
        if inferred and given and given != inferred:
            raise ValueError(f"metadata algorithm {given!r} does not match the model, which is {inferred!r}")
        algorithm = inferred or given
        if not algorithm:
            raise ValueError(f"cannot tell the algorithm of a {type(model).__name__}; pass metadata['algorithm']")
        suffix = ".ubj" if artifacts._is_xgboost(model) else ".skops"
        folder = self.folder(experiment)
        folder.mkdir(parents=True, exist_ok=True)
        if name in self._names_present(experiment):
            raise RegistryError(f"{experiment}/{name}: the name is already in the registry")
        path = folder / f"{name}{suffix}"
        meta_path = path.with_name(path.name + META_SUFFIX)
        # Reserve the name: an exclusive create fails if another writer got there first.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise RegistryError(f"{experiment}/{name}: the name is already in the registry") from None
        try:
            digest = artifacts.save_model(model, path)
            created_at = meta_in.get("created_at")
            meta = to_jsonable(
                {
                    **meta_in,
                    "format": FORMAT_VERSION,
                    "name": name,
                    "experiment": experiment,
                    "algorithm": algorithm,
                    "artifact": path.name,
                    "sha256": digest,
                    "created_at": float(created_at) if created_at is not None else float(self.clock()),
                }
            )
            _write_json_atomic(meta_path, meta)
        except Exception:
            # An ordinary failure cleans up; a crash (nothing after this point runs) leaves an
            # orphan artifact, which never lists and which gc() removes.
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            raise
        return self._entry_from_meta(experiment, meta_path, meta)

    def gc(self, experiment: str | None = None, *, min_age_s: float = 0.0) -> list[Path]:
        """Remove what no complete entry owns: artifacts without metadata (a crash between the
        two writes), metadata without its artifact, and leftover temp files. Only files older
        than `min_age_s` are touched (give a margin when another process may be writing).
        Returns the removed paths."""
        experiments = [experiment] if experiment is not None else self.experiments()
        removed: list[Path] = []
        now = time.time()
        for exp in experiments:
            folder = self.folder(exp)
            if not folder.is_dir():
                continue
            keep: set[Path] = set()
            for entry in self._scan(exp):
                keep.update((entry.path, entry.meta_path))
            for f in folder.iterdir():
                if f in keep or not f.is_file():
                    continue
                ours = (f.name.startswith(".") and ".tmp" in f.name) or _entry_name(f.name) is not None
                if not ours:
                    continue
                try:
                    if now - f.stat().st_mtime < min_age_s:
                        continue
                    f.unlink()
                except FileNotFoundError:
                    continue
                removed.append(f)
            if removed:
                artifacts.fsync_dir(folder)
        return removed

    # -- reading ---------------------------------------------------------------------------

    def experiments(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))

    def entries(self, experiment: str) -> list[RegistryEntry]:
        """Complete entries (artifact and metadata both present), oldest first."""
        return sorted(self._scan(experiment), key=lambda e: (e.created_at, e.name))

    def get(self, experiment: str, name: str) -> RegistryEntry:
        _check_name("name", name)
        for entry in self._scan(experiment):
            if entry.name == name:
                return entry
        raise KeyError(f"{experiment}/{name}: no complete entry in the registry")

    def latest(self, experiment: str) -> RegistryEntry | None:
        found = self.entries(experiment)
        return found[-1] if found else None

    def load(self, entry: RegistryEntry) -> Any:
        """The model, after checking the artifact's sha256 against the metadata (ArtifactError
        if it was changed); load_model builds it from the same bytes it checked."""
        return artifacts.load_model(entry.path, expected_sha256=entry.sha256)

    def next_name(self, experiment: str, algorithm: str, taken: Iterable[str] = ()) -> str:
        """A fresh name '<algorithm>-r<k>': k is one more than any revision of that algorithm
        present in the folder (complete or not) or in `taken` (e.g. the policy's variants)."""
        _check_name("algorithm", algorithm)
        pattern = re.compile(rf"^{re.escape(algorithm)}-r(\d+)$")
        used = self._names_present(experiment) | set(taken)
        revisions = [int(m.group(1)) for n in used if (m := pattern.match(n))]
        name = f"{algorithm}-r{max(revisions, default=0) + 1}"
        return _check_name("name", name)

    # -- internals -------------------------------------------------------------------------

    def _names_present(self, experiment: str) -> set[str]:
        folder = self.folder(experiment)
        if not folder.is_dir():
            return set()
        return {n for f in folder.iterdir() if (n := _entry_name(f.name)) is not None}

    def _scan(self, experiment: str) -> list[RegistryEntry]:
        folder = self.folder(experiment)
        if not folder.is_dir():
            return []
        out = []
        for meta_path in folder.glob(f"*{META_SUFFIX}"):
            if meta_path.name.startswith("."):
                continue
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                entry = self._entry_from_meta(experiment, meta_path, meta)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable or incomplete metadata: not an entry
            if entry.path.is_file():
                out.append(entry)
        return out

    def _entry_from_meta(self, experiment: str, meta_path: Path, meta: Any) -> RegistryEntry:
        if not isinstance(meta, dict):
            raise TypeError("metadata is not an object")
        artifact = meta["artifact"]
        if not isinstance(artifact, str):
            raise TypeError("metadata 'artifact' is not a file name")
        if meta_path.name != f"{artifact}{META_SUFFIX}" or _entry_name(artifact) != meta["name"]:
            raise ValueError("metadata does not describe the artifact beside it")
        if meta["experiment"] != experiment:
            raise ValueError("metadata belongs to another experiment")
        sha = meta["sha256"]
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ValueError("bad sha256")
        return RegistryEntry(
            experiment=experiment,
            name=_check_name("name", meta["name"]),
            algorithm=str(meta["algorithm"]),
            path=meta_path.with_name(artifact),
            sha256=sha,
            created_at=float(meta["created_at"]),
            metadata=meta,
        )
