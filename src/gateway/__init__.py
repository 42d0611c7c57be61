"""A model-serving gateway with Thompson-sampling bandit routing, automatic promotion and
continuous learning. The public surface: `Client` and `AsyncClient` (the HTTP API from Python),
`Policy` (an experiment's policy file, validated), `Settings` (the GATEWAY_ environment).
Everything else is internal and may change."""
from __future__ import annotations

from typing import Any

__all__ = ["AsyncClient", "Client", "Policy", "Settings"]

_WHERE = {"AsyncClient": "gateway.client", "Client": "gateway.client", "Policy": "gateway.policy",
          "Settings": "gateway.settings"}


def __getattr__(name: str) -> Any:
    # Imported on first use: router replicas import gateway.* and need none of these.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
