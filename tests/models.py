"""Real models for data-plane tests without Ray: a policy's variants trained from its seeded
bootstrap data set (or found on disk) and loaded in-process, as a router replica loads them."""
from __future__ import annotations

from pathlib import Path

from gateway.learning.bootstrap import as_dict, resolve_artifacts
from gateway.policy import Policy
from gateway.serving.variant import LoadedVariant


def loaded_variants(policy: Policy, policy_path: Path, state_dir: Path) -> dict[str, LoadedVariant]:
    return {name: LoadedVariant(as_dict(ref)) for name, ref in resolve_artifacts(policy, policy_path, state_dir).items()}
