"""Which features a model artifact takes, and whether an experiment can serve it: checked when a
challenger is added (by an operator or the retrainer), before anything is registered."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.learning.derived import as_specs, spec_json
from gateway.learning.views import FeatureView, check_names, raw_inputs
from gateway.policy import Policy

META_SUFFIX = ".meta.json"


def _metadata(artifact: str | Path) -> dict[str, Any] | None:
    meta = Path(str(artifact) + META_SUFFIX)
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{meta}: unreadable metadata: {err}") from None
    return data if isinstance(data, dict) else None


def check_derived(policy: Policy, artifact: str | Path) -> None:
    """A derived feature the artifact was trained with (its metadata's `derived`) must be the
    policy's, defined the same way: the same name computed otherwise would feed the model other
    numbers than it learned from (ValueError naming it)."""
    data = _metadata(artifact) or {}
    mine = {d.name: spec_json(d) for d in policy.derived}
    for spec in data.get("derived") or []:
        name = spec.get("name") if isinstance(spec, dict) else None
        if name is None:
            raise ValueError(f"{artifact}{META_SUFFIX}: 'derived' must be a list of derived feature specs")
        if name not in mine:
            raise ValueError(f"derived feature {name!r} (from the artifact's metadata) is not declared in experiment "
                             f"{policy.experiment!r}'s policy: add {spec} to its `derived`")
        if as_specs([spec])[0] != as_specs([mine[name]])[0]:
            raise ValueError(f"derived feature {name!r}: the artifact was trained with {spec}, "
                             f"but the policy computes {mine[name]}")


def declared_features(artifact: str | Path, given: Sequence[str] | None) -> list[str] | None:
    """The features the caller gave, else those the artifact's metadata (`<artifact>.meta.json`,
    as the registry and bootstrap write it) records, else None (all the policy's features)."""
    if given is not None:
        return list(given)
    meta = Path(str(artifact) + META_SUFFIX)
    data = _metadata(artifact)
    features = data.get("features") if data is not None else None
    if features is None:
        return None
    if isinstance(features, list) and features and all(isinstance(f, dict) and "name" in f for f in features):
        # Older registry entries record the schema they were trained under: all its features.
        features = [f["name"] for f in features]
    if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
        raise ValueError(f"{meta}: 'features' must be a non-empty list of names")
    return features


def model_width(model: Any) -> int | None:
    """How many input columns a fitted model takes (None when it does not say)."""
    n = getattr(model, "n_features_in_", None)
    return int(n) if n is not None else None


def feature_record(policy: Policy, features: Sequence[str] | None, model: Any = None) -> dict[str, Any]:
    """What a variant taking `features` records (its metadata, its run-time entry, the history):
    the names, the columns they make and the derived features' specs; ValueError naming the first
    name the policy's schema lacks, or the mismatch with the model's width."""
    if features is not None:
        check_names(policy, features)
    view = FeatureView(policy)
    columns = view.column_names(features)
    width = model_width(model) if model is not None else None
    if width is not None and width != len(columns):
        used = "the policy's features" if features is None else f"features {list(features)}"
        raise ValueError(f"the model takes {width} input columns, but {used} make {len(columns)}: {columns}")
    names = [f.name for f in policy.features] if features is None else list(features)
    uses = set(names)
    derived = [spec_json(d) for d in policy.derived if d.name in uses or _feeds(policy, d.name, uses)]
    return {"features": names, "columns": columns, "derived": derived,
            "inputs": sorted(raw_inputs(policy, names))}


def _feeds(policy: Policy, name: str, uses: set[str]) -> bool:
    """Whether derived feature `name` is an input (at any depth) of a derived feature in `uses`."""
    by_name = {d.name: d for d in policy.derived}
    todo = [u for u in uses if u in by_name]
    while todo:
        d = by_name[todo.pop()]
        if name in d.of:
            return True
        todo.extend(c for c in d.of if c in by_name)
    return False
