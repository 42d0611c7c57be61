"""One Ray Serve deployment per model variant: loads its artifact (sha256 checked first) and
predicts in dynamic batches."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
from opentelemetry.trace import SpanKind
from ray import serve

from gateway.learning import artifacts
from gateway.serving.drain import DRAIN_POLL_S
from gateway.serving.microbatch import MicroBatcher
from gateway.telemetry.logs import QUIET, setup_logging
from gateway.telemetry.tracing import carried_span, setup_tracing, shutdown_tracing


class LoadedVariant:
    """A variant's model loaded in this process (its sha256 checked first)."""

    def __init__(self, artifact: dict):
        self.experiment = artifact["experiment"]
        self.name = artifact["variant"]
        self.sha256 = artifact["sha256"]
        self.model = artifacts.load_model(artifact["path"], expected_sha256=self.sha256)

    def predict_rows(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Row-wise labels and scores for one stacked matrix."""
        labels, scores = artifacts.predict(self.model, matrix)
        return labels, scores

    def payload(self, labels: np.ndarray, scores: np.ndarray | None) -> dict[str, Any]:
        return {
            "predictions": labels.tolist(),
            "scores": None if scores is None else scores.tolist(),
            "model_version": self.name,
        }

    def span_attributes(self, rows: int) -> dict[str, Any]:
        return {"gateway.experiment": self.experiment, "gateway.variant": self.name,
                "gateway.model_sha256": self.sha256, "gateway.rows": rows}

    async def predict(self, matrix: np.ndarray, carrier: dict[str, str]) -> dict[str, Any]:
        """In-process use (tests, tools): the same answer the deployment gives."""
        with carried_span("variant.predict", carrier):
            return self.payload(*self.predict_rows(matrix))


def predict_batch(
    v: LoadedVariant, matrices: list[np.ndarray], carriers: list[dict[str, str]], kind: SpanKind = SpanKind.INTERNAL
) -> list[dict[str, Any]]:
    """One pass through the model for several requests (dynamic batching), each answered with
    its own rows and traced as a child of its own request."""
    labels, scores = v.predict_rows(matrices[0] if len(matrices) == 1 else np.vstack(matrices))
    out, start = [], 0
    for matrix, carrier in zip(matrices, carriers):
        size = len(matrix)
        with carried_span("variant.predict", carrier, kind) as span:
            span.set_attributes({**v.span_attributes(size), "gateway.batch_size": len(matrices)})
        end = start + size
        out.append(v.payload(labels[start:end], None if scores is None else scores[start:end]))
        start = end
    return out


class InProcessVariant:
    """A variant predicted inside the router replica (placement `router`): no Ray hop, no copy.
    The model is loaded on first use, in a thread. Requests that arrive together share one pass
    through the model; small batches predict on the event loop (well under a millisecond), large
    ones in a thread so that other requests keep moving."""

    THREAD_ROWS = 64
    MAX_BATCH = 64

    def __init__(self, load: Callable[[], LoadedVariant]):
        self._load = load
        self._variant: LoadedVariant | None = None
        self._loading = asyncio.Lock()
        self._batcher: MicroBatcher[tuple[np.ndarray, dict[str, str]], dict[str, Any]] = MicroBatcher(
            self._predict_batch, self.MAX_BATCH, lambda items: sum(len(m) for m, _ in items) > self.THREAD_ROWS
        )

    async def loaded(self) -> LoadedVariant:
        if self._variant is None:
            async with self._loading:
                if self._variant is None:
                    self._variant = await asyncio.to_thread(self._load)
        return self._variant

    async def predict(self, matrix: np.ndarray, carrier: dict[str, str]) -> dict[str, Any]:
        if self._variant is None:
            await self.loaded()
        return await self._batcher.submit((matrix, carrier))

    def _predict_batch(self, items: list[tuple[np.ndarray, dict[str, str]]]) -> list[dict[str, Any]]:
        assert self._variant is not None  # predict() loaded it first
        return predict_batch(self._variant, [m for m, _ in items], [c for _, c in items])


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200, logging_config=QUIET,
                  graceful_shutdown_wait_loop_s=DRAIN_POLL_S)
class VariantModel:
    def __init__(self, artifact: dict):
        setup_tracing("variant")
        setup_logging("variant")
        self.variant = LoadedVariant(artifact)

    async def predict(self, matrix: np.ndarray, carrier: dict[str, str]) -> dict[str, Any]:
        return await self._predict_batch(matrix, carrier)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def _predict_batch(self, matrices: list[np.ndarray], carriers: list[dict[str, str]]) -> list[dict[str, Any]]:
        # One span per request, a child of that request's router span across the Ray hop.
        return predict_batch(self.variant, matrices, carriers, SpanKind.SERVER)

    def __del__(self):
        shutdown_tracing()
