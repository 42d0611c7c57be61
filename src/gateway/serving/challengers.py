"""Challengers added at run time, served by one multiplexed deployment: a new model is loaded
by id on first use (its sha256 checked), so adding one restarts neither the router nor the
other variants."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from gateway.learning.bootstrap import as_dict
from gateway.learning.artifacts import ArtifactError
from gateway.learning.registry import ModelRegistry
from gateway.serving.drain import DRAIN_POLL_S
from gateway.serving.variant import LoadedVariant
from gateway.telemetry.logs import QUIET, setup_logging
from gateway.telemetry.tracing import carried_span, setup_tracing, shutdown_tracing


def model_id(experiment: str, name: str, sha256: str) -> str:
    """'<experiment>/<name>@<sha256>': the pool loads exactly the registered bytes."""
    return f"{experiment}/{name}@{sha256}"


def load_registered(registry: ModelRegistry, experiment: str, name: str, sha256: str) -> LoadedVariant:
    """The registered model, only if its bytes are the ones expected (sha256)."""
    entry = registry.get(experiment, name)
    if entry.sha256 != sha256:
        raise ArtifactError(f"{entry.path}: registered sha256 {entry.sha256} is not the expected {sha256}")
    return LoadedVariant(as_dict(entry.ref()))


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200, logging_config=QUIET,
                  graceful_shutdown_wait_loop_s=DRAIN_POLL_S)
class ChallengerPool:
    def __init__(self, registry_root: str):
        setup_tracing("variant")
        setup_logging("variant")
        self.registry = ModelRegistry(Path(registry_root))

    @serve.multiplexed(max_num_models_per_replica=16)
    async def load(self, mux_id: str) -> LoadedVariant:
        where, _, sha256 = mux_id.rpartition("@")
        experiment, _, name = where.partition("/")
        return load_registered(self.registry, experiment, name, sha256)

    async def predict(self, matrix: np.ndarray, carrier: dict[str, str]) -> dict[str, Any]:
        variant = await self.load(serve.get_multiplexed_model_id())
        with carried_span("variant.predict", carrier) as span:
            span.set_attributes(variant.span_attributes(len(matrix)))
            return variant.payload(*variant.predict_rows(matrix))

    def __del__(self):
        shutdown_tracing()


class ChallengerClient:
    """One run-time challenger, reached through the pool's handle."""

    def __init__(self, handle: DeploymentHandle, experiment: str, name: str, sha256: str):
        self.handle = handle.options(multiplexed_model_id=model_id(experiment, name, sha256))

    async def predict(self, matrix: np.ndarray, carrier: dict[str, str]) -> dict[str, Any]:
        return await self.handle.predict.remote(matrix, carrier)
