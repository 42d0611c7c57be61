"""Find each variant's model artifact, training it from the policy's seeded data set when it is
missing (first start of the default policy). Every artifact gets a sha256 that the variant
replica checks before it loads anything."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.learning import artifacts
from gateway.learning.views import FeatureView
from gateway.policy import Policy, PolicyError, Variant, is_mlflow_uri
from gateway.sim import churn


@dataclass(frozen=True)
class ArtifactRef:
    experiment: str
    variant: str
    path: str
    sha256: str


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def _dataset(policy: Policy):
    boot = policy.bootstrap
    assert boot is not None
    wanted = [f["name"] for f in churn.FEATURES]
    have = [f.name for f in policy.features]
    if have != wanted:
        raise PolicyError(f"bootstrap.dataset churn yields features {wanted}, but the policy declares {have}")
    return churn.make_churn(boot.rows, boot.seed)


def _train_missing(policy: Policy, variant: Variant, target: Path, cache: dict) -> None:
    if "data" not in cache:
        cache["data"] = _dataset(policy)
    rows, y = cache["data"]
    # The variant's own columns (its `features`, derived ones included; by default the policy's).
    # A bootstrap has no traffic: per-unit aggregates are missing (NaN) in it.
    X = FeatureView(policy, lenient=True).matrix(variant.features, rows)
    model = artifacts.train(variant.train, X, y, seed=policy.bootstrap.seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = artifacts.save_model(model, target)
    meta = {
        "experiment": policy.experiment,
        "variant": variant.name,
        "algorithm": variant.train,
        "sha256": digest,
        "trained_at": time.time(),
        "data": {"dataset": policy.bootstrap.dataset, "rows": policy.bootstrap.rows, "seed": policy.bootstrap.seed},
        # What it takes, so that it can also be added elsewhere with add-variant (variant_features).
        "features": list(variant.features) if variant.features else [f.name for f in policy.features],
    }
    tmp = _meta_path(target).with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(_meta_path(target))


def _recorded_sha(path: Path) -> str | None:
    meta = _meta_path(path)
    if not meta.exists():
        return None
    return json.loads(meta.read_text()).get("sha256")


def resolve_artifacts(policy: Policy, policy_file: Path, state_dir: Path) -> dict[str, ArtifactRef]:
    """A relative model path is looked up beside the policy file, then in the state dir; a
    missing one with a `train` recipe is trained into the state dir. An MLflow URI
    (models:/..., runs:/...) is copied from the tracking server into the state dir's registry."""
    out: dict[str, ArtifactRef] = {}
    cache: dict = {}
    for v in policy.variants:
        if is_mlflow_uri(v.model):
            from gateway.learning.mlflow_models import resolve_variant  # the optional extra

            out[v.name] = resolve_variant(policy.experiment, v.name, v.model, state_dir)
            continue
        model = Path(v.model)
        candidates = [model] if model.is_absolute() else [policy_file.parent / model, state_dir / model]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            if v.train is None or policy.bootstrap is None:
                looked = ", ".join(str(c) for c in candidates)
                raise PolicyError(f"variants.{v.name}.model: no artifact at {looked}, and no train recipe to build one")
            found = candidates[-1]
            _train_missing(policy, v, found, cache)
        actual = artifacts.sha256_file(found)
        recorded = _recorded_sha(found)
        if recorded is not None and recorded != actual:
            raise artifacts.ArtifactError(
                f"{found}: sha256 {actual} does not match the recorded {recorded}; the artifact was changed"
            )
        out[v.name] = ArtifactRef(policy.experiment, v.name, str(found.resolve()), actual)
    return out


def as_dict(ref: ArtifactRef) -> dict:
    return asdict(ref)
