"""One Ray Serve deployment per model variant: loads its artifact (sha256 checked first) and
predicts in dynamic batches."""
from __future__ import annotations

from typing import Any

import numpy as np
from opentelemetry.trace import SpanKind
from ray import serve

from gateway.learning import artifacts
from gateway.telemetry.tracing import context_from_carrier, setup_tracing, shutdown_tracing, tracer


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200)
class VariantModel:
    def __init__(self, artifact: dict):
        setup_tracing("variant")
        self.experiment = artifact["experiment"]
        self.name = artifact["variant"]
        self.sha256 = artifact["sha256"]
        self.model = artifacts.load_model(artifact["path"], expected_sha256=self.sha256)

    async def predict(self, matrix: np.ndarray, carrier: dict[str, str]) -> dict[str, Any]:
        return await self._predict_batch(matrix, carrier)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def _predict_batch(self, matrices: list[np.ndarray], carriers: list[dict[str, str]]) -> list[dict[str, Any]]:
        sizes = [len(m) for m in matrices]
        labels, scores = artifacts.predict(self.model, np.vstack(matrices))
        out, start = [], 0
        for size, carrier in zip(sizes, carriers):
            # One span per request, a child of that request's router span across the Ray hop.
            with tracer().start_as_current_span(
                "variant.predict", context=context_from_carrier(carrier), kind=SpanKind.SERVER
            ) as span:
                span.set_attributes(
                    {
                        "gateway.experiment": self.experiment,
                        "gateway.variant": self.name,
                        "gateway.model_sha256": self.sha256,
                        "gateway.batch_size": len(matrices),
                        "gateway.rows": size,
                    }
                )
            end = start + size
            out.append(
                {
                    "predictions": labels[start:end].tolist(),
                    "scores": None if scores is None else scores[start:end].tolist(),
                    "model_version": self.name,
                }
            )
            start = end
        return out

    def __del__(self):
        shutdown_tracing()
