"""One Ray Serve deployment per model variant: loads its artifact (sha256 checked first) and
predicts in dynamic batches."""
from __future__ import annotations

from typing import Any

import numpy as np
from opentelemetry.trace import SpanKind
from ray import serve

from gateway.learning import artifacts
from gateway.telemetry.logs import setup_logging
from gateway.telemetry.tracing import context_from_carrier, setup_tracing, shutdown_tracing, tracer


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

    async def predict(self, matrix: np.ndarray, carrier: dict[str, str]) -> dict[str, Any]:
        """In-process use (tests, tools): the same answer the deployment gives."""
        with tracer().start_as_current_span("variant.predict", context=context_from_carrier(carrier)):
            return self.payload(*self.predict_rows(matrix))


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200)
class VariantModel:
    def __init__(self, artifact: dict):
        setup_tracing("variant")
        setup_logging("variant")
        self.variant = LoadedVariant(artifact)

    async def predict(self, matrix: np.ndarray, carrier: dict[str, str]) -> dict[str, Any]:
        return await self._predict_batch(matrix, carrier)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def _predict_batch(self, matrices: list[np.ndarray], carriers: list[dict[str, str]]) -> list[dict[str, Any]]:
        sizes = [len(m) for m in matrices]
        v = self.variant
        labels, scores = v.predict_rows(np.vstack(matrices))
        out, start = [], 0
        for size, carrier in zip(sizes, carriers):
            # One span per request, a child of that request's router span across the Ray hop.
            with tracer().start_as_current_span(
                "variant.predict", context=context_from_carrier(carrier), kind=SpanKind.SERVER
            ) as span:
                span.set_attributes(
                    {
                        "gateway.experiment": v.experiment,
                        "gateway.variant": v.name,
                        "gateway.model_sha256": v.sha256,
                        "gateway.batch_size": len(matrices),
                        "gateway.rows": size,
                    }
                )
            end = start + size
            out.append(v.payload(labels[start:end], None if scores is None else scores[start:end]))
            start = end
        return out

    def __del__(self):
        shutdown_tracing()
