"""Status changes that both the upkeep (a guardrail) and an operator make: one atomic store
step each, recorded in the history."""
from __future__ import annotations

from typing import Any

from gateway.decisions import allocation
from gateway.policy import Policy
from gateway.store.experiments import ExperimentStore


def rollback_target(policy: Policy, meta: dict[str, str]) -> str | None:
    """The previous champion when it is still live and not blocked by a guardrail, else None
    (back to exploring)."""
    current, previous = meta.get("champion"), meta.get("previous_champion")
    usable = set(allocation.live_arms(policy, meta)) - allocation.guardrail_blocked(meta)
    return previous if previous in usable and previous != current else None


async def rollback_champion(
    store: ExperimentStore, policy: Policy, experiment: str, meta: dict[str, str], entry: dict[str, Any]
) -> bool:
    """Replace the current champion by the previous one when it is still live, else go back
    to exploring. Only if the champion is still the one the caller saw: two replicas that see
    the same breach roll back once."""
    current = meta.get("champion")
    target = rollback_target(policy, meta)
    entry = {**entry, "from_variant": current, "variant": target}
    return await store.transition(
        experiment, expected_status="promoted", new_status="promoted" if target else "exploring",
        champion=target or "-", entry=entry, now=entry["at"], expected_champion=current or "",
    )
