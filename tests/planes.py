"""A real DataPlane for tests without Ray: the embedded redis-server, real models trained from
the churn generator and loaded in-process as a variant replica loads them, and a fake clock (the
one fake: reward windows are hours long in production). Each test gets a fresh experiment."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from gateway.dataplane import DataPlane
from gateway.dataplane.tokens import RewardTokens
from gateway.policy import load_policy_file
from gateway.serving.variant import LoadedVariant
from gateway.store.embedded import EmbeddedRedis
from gateway.store.experiments import ExperimentStore
from gateway.store.spool import Spool
from tests.models import loaded_variants

BASE = {
    "features": [
        {"name": "tenure", "type": "numeric"},
        {"name": "monthly_charges", "type": "numeric"},
        {"name": "support_calls", "type": "numeric"},
        {"name": "plan", "type": "categorical", "values": ["basic", "pro", "enterprise"]},
    ],
    "variants": [
        {"name": "logreg", "model": "models/fb-logreg.skops", "train": "logistic_regression"},
        {"name": "xgb", "model": "models/fb-xgb.ubj", "train": "xgboost"},
    ],
    "bootstrap": {"dataset": "churn", "rows": 1000, "seed": 5},
    "guardrails": {"max_error_rate": 0.5, "max_p99_latency_ms": 60000},
}


# The background refresh of a test's plane: not within any test.
BACKGROUND_REFRESH_OFF = 3600.0


class Clock:
    """Starts at the real time: the decision log's stream ids are Redis's own clock."""

    def __init__(self):
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


class Env:
    def __init__(self, tmp: Path, redis_url: str | None = None):
        """The embedded redis-server, unless `redis_url` names one already running (a cluster)."""
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.redis = None if redis_url else EmbeddedRedis(tmp / "state").start()
        self.redis_url = redis_url or self.redis.url
        self.variants: dict[str, LoadedVariant] | None = None
        self.count = 0

    def plane(self, clock: Clock, *, wrap: Callable[[dict], dict] | None = None, challenger_client=None,
              name: str | None = None, spool: Spool | None = None, refresh_s: float = BACKGROUND_REFRESH_OFF,
              **policy_fields) -> DataPlane:
        """A fresh experiment (its own keys, or `name`'s) with the shared, already trained models
        (`wrap` may put an instrument around them: it gets and returns the variants by name).
        The plane refreshes where its test calls refresh(), not also every `refresh_s` of real
        time: the seeds then make a run the same every time, however loaded the machine."""
        self.count += 1
        name = name or f"fb{self.count}"
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**BASE, "experiment": name, **policy_fields}))
        policy = load_policy_file(path)
        if self.variants is None:
            self.variants = loaded_variants(policy, path, self.tmp / "state")
        store = ExperimentStore.from_url(self.redis_url)
        return DataPlane(
            {name: policy}, store, {name: wrap(dict(self.variants)) if wrap else self.variants}, RewardTokens("k" * 32),
            clock=clock, rng=np.random.default_rng(7), challenger_client=challenger_client, spool=spool,
            refresh_s=refresh_s,
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    e = Env(tmp_path_factory.mktemp("feedback-rules"))
    try:
        yield e
    finally:
        if e.redis is not None:
            e.redis.stop()


def run(coro):
    """Run a scenario in a fresh event loop; a task that outlives it is a bug, reported rather
    than left to hang the loop's shutdown."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            done, pending = loop.run_until_complete(asyncio.wait(leftover, timeout=10))
            for task in pending:
                task.print_stack()
            assert not pending, f"tasks ignored cancellation: {pending}"
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def serve(plane: DataPlane, rows: list, unit: str | None = None, prefix: str = "r") -> list[dict]:
    name = plane.experiment_names()[0]
    out = []
    for i, row in enumerate(rows):
        body = {"instances": [row], **({"unit_id": unit} if unit else {})}
        out.append(await plane.predict(name, body, f"{prefix}{i}"))
    return out


async def totals(plane: DataPlane) -> tuple[int, float]:
    """Rewards counted and their sum, over all variants."""
    name = plane.experiment_names()[0]
    snap = (await plane.store.snapshots([name]))[name]
    return sum(c.rewards for c in snap.arms.values()), sum(c.reward_sum for c in snap.arms.values())
