"""Operator decisions on an experiment: promote, roll back, pause, resume, retire a variant.
Each is one atomic Redis step that also records who decided and why in the history."""
from __future__ import annotations

import json
from typing import Any

from gateway import allocation
from gateway.dataplane import DataPlane
from gateway.errors import Conflict, NotFound, Unprocessable


class Control:
    def __init__(self, plane: DataPlane):
        self.plane = plane

    async def _meta(self, experiment: str) -> dict[str, str]:
        self.plane._runtime(experiment)  # 404 for an unknown experiment
        return (await self.plane.store.snapshots([experiment]))[experiment].meta

    def _entry(self, action: str, reason: str | None, **extra: Any) -> dict[str, Any]:
        return {"action": action, "at": self.plane.clock(), "by": "admin", "reason": reason or f"{action} by an operator", **extra}

    async def _done(self, experiment: str) -> dict[str, Any]:
        await self.plane.refresh()
        return await self.plane.state(experiment)

    def _live_variant(self, experiment: str, meta: dict[str, str], variant: Any) -> str:
        policy = self.plane._runtime(experiment).policy
        if not isinstance(variant, str) or variant not in policy.variant_names:
            raise NotFound(f"experiment {experiment!r} has no variant {variant!r}", code="variant_not_found")
        if variant not in allocation.live_arms(policy, meta):
            raise Conflict(f"variant {variant!r} is the holdout or retired; it cannot be champion", code="variant_not_live")
        return variant

    async def promote(self, experiment: str, variant: Any, reason: str | None = None) -> dict[str, Any]:
        meta = await self._meta(experiment)
        variant = self._live_variant(experiment, meta, variant)
        entry = self._entry("promote", reason, variant=variant, previous=meta.get("champion"))
        await self.plane.store.transition(
            experiment, expected_status="*", new_status="promoted", champion=variant, entry=entry, now=entry["at"]
        )
        blocked = allocation.guardrail_blocked(meta)
        if variant in blocked:  # an operator's promotion lifts a guardrail's block
            await self.plane.store.set_meta(experiment, "guardrail_blocked", json.dumps(sorted(blocked - {variant})))

        return await self._done(experiment)

    async def rollback(self, experiment: str, reason: str | None = None) -> dict[str, Any]:
        """Back to the previous champion if there is a live one, else back to exploring."""
        meta = await self._meta(experiment)
        if meta.get("status") != "promoted":
            raise Conflict(f"experiment {experiment!r} has no promoted champion to roll back", code="not_promoted")
        await rollback_champion(self.plane, experiment, meta, self._entry("rollback", reason))
        return await self._done(experiment)

    async def pause(self, experiment: str, reason: str | None = None) -> dict[str, Any]:
        """Freeze the traffic split as it stands; rewards still count, nothing is decided."""
        meta = await self._meta(experiment)
        if meta.get("status") == "paused":
            raise Conflict(f"experiment {experiment!r} is already paused", code="already_paused")
        rt = self.plane._runtime(experiment)
        snap = (await self.plane.store.snapshots([experiment]))[experiment]
        shares = allocation.allocate(rt.policy, snap.arms, snap.meta).shares
        frozen = {v: shares.get(v, 0.0) for v in rt.policy.variant_names}
        entry = self._entry("pause", reason, weights=frozen, resume_to=meta.get("status", "exploring"))
        await self.plane.store.transition(
            experiment, expected_status=meta.get("status", "exploring"), new_status="paused", champion="",
            entry=entry, now=entry["at"], frozen_weights=frozen,
        )
        return await self._done(experiment)

    async def resume(self, experiment: str, reason: str | None = None) -> dict[str, Any]:
        meta = await self._meta(experiment)
        if meta.get("status") != "paused":
            raise Conflict(f"experiment {experiment!r} is not paused", code="not_paused")
        status = "promoted" if meta.get("champion") else "exploring"
        entry = self._entry("resume", reason, resume_to=status)
        await self.plane.store.transition(
            experiment, expected_status="paused", new_status=status, champion="", entry=entry, now=entry["at"]
        )
        return await self._done(experiment)

    async def retire(self, experiment: str, variant: Any, reason: str | None = None) -> dict[str, Any]:
        """Take a variant out of rotation for good (its replica keeps serving named calls)."""
        meta = await self._meta(experiment)
        variant = self._live_variant(experiment, meta, variant)
        policy = self.plane._runtime(experiment).policy
        live = allocation.live_arms(policy, meta)
        if len(live) <= 1:
            raise Conflict("the last live variant cannot be retired", code="last_variant")
        if meta.get("champion") == variant and meta.get("status") in ("promoted", "paused"):
            raise Conflict(f"{variant!r} is the champion: promote another or roll back first", code="variant_is_champion")
        gone = sorted(allocation.retired(meta) | {variant})
        await self.plane.store.annotate(experiment, "retired", json.dumps(gone), self._entry("retire", reason, variant=variant))
        return await self._done(experiment)


async def rollback_champion(plane: DataPlane, experiment: str, meta: dict[str, str], entry: dict[str, Any]) -> bool:
    """Replace the current champion by the previous one when it is still live, else go back
    to exploring. Only if the champion is still the one the caller saw: two replicas that see
    the same breach roll back once."""
    policy = plane._runtime(experiment).policy
    current, previous = meta.get("champion"), meta.get("previous_champion")
    entry = {**entry, "from_variant": current}
    usable = set(allocation.live_arms(policy, meta)) - allocation.guardrail_blocked(meta)
    if previous in usable and previous != current:
        return await plane.store.transition(
            experiment, expected_status="promoted", new_status="promoted", champion=previous,
            entry={**entry, "variant": previous}, now=entry["at"], expected_champion=current or "",
        )
    return await plane.store.transition(
        experiment, expected_status="promoted", new_status="exploring", champion="-",
        entry={**entry, "variant": None}, now=entry["at"], expected_champion=current or "",
    )


def reason_of(body: Any) -> str | None:
    if isinstance(body, dict) and body.get("reason") is not None:
        if not isinstance(body["reason"], str) or len(body["reason"]) > 500:
            raise Unprocessable("reason: a string of at most 500 characters", code="invalid_reason")
        return body["reason"]
    return None
