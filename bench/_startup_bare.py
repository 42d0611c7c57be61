"""The bare side of bench/startup.py: one Ray Serve deployment, Serve's defaults, that loads the
same skops artifact as the gateway and answers the same OIP body; run with `serve run` on a config
file. The artifact comes from the environment (BARE_ARTIFACT, BARE_SHA256, BARE_FEATURES as JSON),
which Ray's workers inherit from the `serve run` process that starts them."""
from __future__ import annotations

import json
import os

import numpy as np
from ray import serve
from starlette.requests import Request


@serve.deployment
class BareModel:
    def __init__(self) -> None:
        from gateway.learning import artifacts

        self.artifacts = artifacts
        self.model = artifacts.load_model(os.environ["BARE_ARTIFACT"], expected_sha256=os.environ["BARE_SHA256"])
        self.features = json.loads(os.environ["BARE_FEATURES"])

    async def __call__(self, request: Request) -> dict:
        columns = {t["name"]: t["data"] for t in (await request.json())["inputs"]}
        parts = []
        for f in self.features:
            data = columns[f["name"]]
            if f["type"] == "categorical":
                parts.append(np.array([[1.0 if v == c else 0.0 for c in f["values"]] for v in data]))
            else:
                parts.append(np.asarray(data, dtype=float).reshape(-1, 1))
        labels, _ = self.artifacts.predict(self.model, np.hstack(parts))
        return {"outputs": [{"name": "predict", "datatype": "INT64", "shape": [len(labels)], "data": labels.tolist()}]}


app = BareModel.bind()
