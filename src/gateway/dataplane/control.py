"""Operator decisions on an experiment: promote, roll back, pause, resume, retire a variant.
Each is one atomic Redis step that also records who decided and why in the history."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from gateway.decisions import allocation, shadow_first
from gateway.dataplane import DataPlane
from gateway.dataplane.runtime import ExperimentRuntime
from gateway.dataplane.transitions import rollback_champion
from gateway.errors import Conflict, NotFound, Unavailable, Unprocessable
from gateway.policy import is_mlflow_uri
from gateway.schemas import AddVariantRequest, AdminRequest, PromoteRequest


class _BadFeatures(ValueError):
    """A model whose width does not match the features it declares."""


class Control:
    def __init__(self, plane: DataPlane, registry_root: str | None = None):
        self.plane = plane
        self.registry_root = registry_root

    async def _meta(self, experiment: str) -> dict[str, str]:
        self.plane.runtime(experiment)  # 404 for an unknown experiment
        return (await self.plane.store.snapshots([experiment]))[experiment].meta

    def _entry(self, action: str, reason: str | None, **extra: Any) -> dict[str, Any]:
        return {"action": action, "at": self.plane.clock(), "by": "admin", "reason": reason or f"{action} by an operator", **extra}

    async def _done(self, experiment: str) -> dict[str, Any]:
        await self.plane.refresh()
        return await self.plane.state(experiment)

    def _live_variant(self, experiment: str, meta: dict[str, str], variant: Any) -> str:
        policy = self.plane.runtime(experiment).policy
        if not isinstance(variant, str) or variant not in policy.variant_names:
            raise NotFound(f"experiment {experiment!r} has no variant {variant!r}", code="variant_not_found")
        if variant not in allocation.live_arms(policy, meta):
            raise Conflict(f"variant {variant!r} is the holdout or retired; it cannot be champion", code="variant_not_live")
        return variant

    async def promote(self, experiment: str, request: PromoteRequest) -> dict[str, Any]:
        meta = await self._meta(experiment)
        variant = self._live_variant(experiment, meta, request.variant)
        entry = self._entry("promote", request.reason, variant=variant, previous=meta.get("champion"))
        await self.plane.store.transition(
            experiment, expected_status="*", new_status="promoted", champion=variant, entry=entry, now=entry["at"]
        )
        blocked = allocation.guardrail_blocked(meta)
        if variant in blocked:  # an operator's promotion lifts a guardrail's block
            await self.plane.store.set_meta(experiment, "guardrail_blocked", json.dumps(sorted(blocked - {variant})))

        return await self._done(experiment)

    async def rollback(self, experiment: str, request: AdminRequest) -> dict[str, Any]:
        """Back to the previous champion if there is a live one, else back to exploring."""
        meta = await self._meta(experiment)
        if meta.get("status") != "promoted":
            raise Conflict(f"experiment {experiment!r} has no promoted champion to roll back", code="not_promoted")
        policy = self.plane.runtime(experiment).policy
        await rollback_champion(self.plane.store, policy, experiment, meta, self._entry("rollback", request.reason))
        return await self._done(experiment)

    async def pause(self, experiment: str, request: AdminRequest) -> dict[str, Any]:
        """Freeze the traffic split as it stands; rewards still count, nothing is decided."""
        meta = await self._meta(experiment)
        if meta.get("status") == "paused":
            raise Conflict(f"experiment {experiment!r} is already paused", code="already_paused")
        rt = self.plane.runtime(experiment)
        snap = (await self.plane.store.snapshots([experiment]))[experiment]
        shares = allocation.allocate(rt.policy, snap.arms, snap.meta, rt.discount).shares
        frozen = {v: shares.get(v, 0.0) for v in rt.policy.variant_names}
        entry = self._entry("pause", request.reason, weights=frozen, resume_to=meta.get("status", "exploring"))
        await self.plane.store.transition(
            experiment, expected_status=meta.get("status", "exploring"), new_status="paused", champion="",
            entry=entry, now=entry["at"], frozen_weights=frozen,
        )
        return await self._done(experiment)

    async def resume(self, experiment: str, request: AdminRequest) -> dict[str, Any]:
        meta = await self._meta(experiment)
        if meta.get("status") != "paused":
            raise Conflict(f"experiment {experiment!r} is not paused", code="not_paused")
        status = "promoted" if meta.get("champion") else "exploring"
        entry = self._entry("resume", request.reason, resume_to=status)
        await self.plane.store.transition(
            experiment, expected_status="paused", new_status=status, champion="", entry=entry, now=entry["at"]
        )
        return await self._done(experiment)

    async def set_role(self, experiment: str, variant: str, role: str, request: AdminRequest) -> dict[str, Any]:
        """Put a variant in shadow (it answers copies of live requests, takes no traffic) or take
        it out (it joins the bandit as a new challenger does)."""
        meta = await self._meta(experiment)
        policy = self.plane.runtime(experiment).policy
        if variant not in policy.variant_names:
            raise NotFound(f"experiment {experiment!r} has no variant {variant!r}", code="variant_not_found")
        if policy.holdout is not None and variant == policy.holdout.variant:
            raise Conflict(f"variant {variant!r} is the holdout; its role is fixed by the policy", code="variant_is_holdout")
        if variant in allocation.retired(meta):
            raise Conflict(f"variant {variant!r} is retired", code="variant_not_live")
        if meta.get("status") == "paused":
            raise Conflict(f"experiment {experiment!r} is paused: resume it first", code="experiment_paused")
        current = "shadow" if variant in allocation.shadow_arms(policy, meta) else "live"
        if current == role:
            raise Conflict(f"variant {variant!r} is already {role}", code=f"already_{role}")
        if role == "shadow":
            if len(allocation.live_arms(policy, meta)) <= 1:
                raise Conflict("the last live variant cannot go into shadow", code="last_variant")
            if meta.get("champion") == variant and meta.get("status") == "promoted":
                raise Conflict(f"{variant!r} is the champion: promote another or roll back first", code="variant_is_champion")
        policy_role = next(v.role for v in policy.variants if v.name == variant)
        entry = self._entry(role, request.reason, variant=variant)
        if not await self.plane.store.set_role(
            experiment, variant, role, expected=current, policy_role=policy_role, entry=entry, now=entry["at"],
            credit=shadow_first.credits_shadow_rewards(policy),
        ):
            raise Conflict(f"the role of {variant!r} changed meanwhile; read the state and retry", code="role_changed")
        return await self._done(experiment)

    def can_add_variants(self, experiment: str) -> ExperimentRuntime:
        """What adding a variant is judged by before its body: the experiment (404) and a registry
        to keep the artifact in (409)."""
        rt = self.plane.runtime(experiment)
        if self.registry_root is None or self.plane.challenger_client is None:
            raise Conflict("this gateway cannot add variants at run time (no registry)", code="no_registry")
        return rt

    async def add_variant(self, experiment: str, request: AddVariantRequest) -> dict[str, Any]:
        """Add a challenger from a model artifact on the gateway's file system, or from an MLflow
        model URI (models:/<name>/<version>, models:/<name>@<alias>, runs:/<run_id>/<path>:
        fetched by gateway.learning.mlflow_models, as a policy's are): it is loaded (sha256 and
        skops types checked, nothing unpickled), copied into the registry and served at once."""
        from gateway.learning import mlflow_models
        from gateway.learning.artifacts import ArtifactError, load_model
        from gateway.learning.registry import ModelRegistry, RegistryError
        from gateway.learning.variant_features import check_derived, declared_features, feature_record

        plane = self.plane
        rt = self.can_add_variants(experiment)
        assert self.registry_root is not None
        name, source = request.name, request.model
        from_mlflow = is_mlflow_uri(source)
        if name in rt.variants:
            raise Conflict(f"experiment {experiment!r} already has a variant {name!r}", code="variant_exists")
        if from_mlflow and request.sha256 is not None:
            raise Unprocessable("sha256: for an artifact path; an MLflow URI names its model itself (a version, "
                                "an alias or a run's artifact)", code="invalid_variant")
        registry = ModelRegistry(Path(self.registry_root))
        try:
            # The features the model takes, checked against the experiment's schema before the
            # artifact is even read: a name the policy lacks is refused, naming it. An MLflow
            # model has no metadata file beside it: the given features, else all the policy's.
            features = list(request.features) if from_mlflow and request.features else (
                None if from_mlflow else declared_features(source, request.features))
            record = feature_record(rt.policy, features)
            if not from_mlflow:
                check_derived(rt.policy, source)
        except ValueError as err:
            raise Unprocessable(f"features: {err}", code="invalid_features") from None

        def load_and_register():
            if from_mlflow:
                model, provenance = mlflow_models.fetch_model(name, source)
            else:
                model, provenance = load_model(source, expected_sha256=request.sha256), {}
            try:
                checked = feature_record(rt.policy, features, model)
            except ValueError as err:  # the model's width does not match its features
                raise _BadFeatures(str(err)) from None
            return registry.register(experiment, name, model,
                                     {"source": source, "added_by": "admin", **provenance, **checked})

        try:
            entry = await asyncio.to_thread(load_and_register)
        except mlflow_models.MlflowUnavailable as err:
            raise Unavailable(f"model: {err}", code="mlflow_unavailable") from None
        except (ArtifactError, FileNotFoundError) as err:
            raise Unprocessable(f"model: {err}", code="invalid_artifact") from None
        except _BadFeatures as err:
            raise Unprocessable(f"features: {err}", code="invalid_features") from None
        except RegistryError as err:
            raise Conflict(str(err), code="variant_exists") from None
        now = plane.clock()
        variant = {"name": name, "algorithm": entry.algorithm, "path": str(entry.path), "sha256": entry.sha256,
                   "added_at": now, "source": source}
        history = {"action": "challenger_added", "variant": name, "at": now, "by": "admin",
                   "reason": request.reason or f"added from {source}", "sha256": entry.sha256}
        if features is not None:  # absent: all the policy's features, as before subsets
            variant["features"] = history["features"] = record["features"]
        if not await plane.store.add_variant(experiment, name, variant, history, now):
            raise Conflict(f"experiment {experiment!r} already has a variant {name!r}", code="variant_exists")
        return await self._done(experiment)

    async def retire(self, experiment: str, variant: str, request: AdminRequest) -> dict[str, Any]:
        """Take a variant out of rotation for good (its replica keeps serving named calls)."""
        meta = await self._meta(experiment)
        variant = self._live_variant(experiment, meta, variant)
        policy = self.plane.runtime(experiment).policy
        live = allocation.live_arms(policy, meta)
        if len(live) <= 1:
            raise Conflict("the last live variant cannot be retired", code="last_variant")
        if meta.get("champion") == variant and meta.get("status") in ("promoted", "paused"):
            raise Conflict(f"{variant!r} is the champion: promote another or roll back first", code="variant_is_champion")
        gone = sorted(allocation.retired(meta) | {variant})
        await self.plane.store.annotate(experiment, "retired", json.dumps(gone),
                                        self._entry("retire", request.reason, variant=variant))
        return await self._done(experiment)
