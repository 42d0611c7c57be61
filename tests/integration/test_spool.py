"""Redis away: a real DataPlane with a spool keeps serving from its cached weights, acknowledges
records and rewards once they are on local disk, and replays them exactly once when the
embedded redis-server comes back (restarted on its own data, AOF). No Ray: the gateway-level
outage test is test_redis_outage.py; this one pins the data plane's rules."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import yaml

from gateway.dataplane import DataPlane
from gateway.policy import load_policy_file
from gateway.sim import churn
from gateway.store.embedded import EmbeddedRedis
from gateway.store.experiments import ExperimentStore
from gateway.store.spool import Spool
from gateway.dataplane.tokens import RewardTokens
from tests.planes import BASE
from tests.models import loaded_variants

pytestmark = pytest.mark.integration


def make_plane(tmp_path: Path, redis: EmbeddedRedis, spool_dir: Path, name: str = "spooled") -> DataPlane:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, "experiment": name}))
    policy = load_policy_file(path)
    variants = loaded_variants(policy, path, tmp_path / "state")
    return DataPlane(
        {name: policy}, ExperimentStore.from_url(redis.url), {name: variants}, RewardTokens("s" * 32),
        rng=np.random.default_rng(3), spool=Spool(spool_dir),
    )


async def wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the condition")
        await asyncio.sleep(0.05)


def test_writes_are_spooled_while_redis_is_away_and_applied_exactly_once_when_it_returns(tmp_path):
    redis_dir = tmp_path / "redis-data"
    redis = EmbeddedRedis(redis_dir).start()
    plane = make_plane(tmp_path, redis, tmp_path / "spool")
    rows, labels = churn.make_churn(30, seed=1)

    async def scenario():
        nonlocal redis
        await plane.start()
        try:
            before = [await plane.predict("spooled", {"instances": [r]}, f"b{i}") for i, r in enumerate(rows[:10])]
            redis.stop()
            during = [await plane.predict("spooled", {"instances": [r]}, f"d{i}") for i, r in enumerate(rows[10:])]
            await wait_for(lambda: not plane.store_ok)
            health_down = plane.readiness()
            answers = []
            for p in before + during:
                answers.append(await plane.rewards({"request_id": p["request_id"], "reward": 1, "token": p["reward_token"]}))
            # Sent twice while away: both spooled, applied once.
            again = await plane.rewards({"request_id": during[0]["request_id"], "reward": 1, "token": during[0]["reward_token"]})
            labelled = await plane.rewards({"rewards": [
                {"request_id": during[1]["request_id"], "label": int(labels[11]), "token": during[1]["reward_token"]}]})
            spooled = plane.spool.pending()
            redis = EmbeddedRedis(redis_dir).start()
            await wait_for(lambda: plane.readiness()["status"] == "ok")
            state = await plane.state("spooled")
            return health_down, answers, again, labelled, spooled, state, during
        finally:
            await plane.stop()
            redis.stop()

    health_down, answers, again, labelled, spooled, state, during = asyncio.run(scenario())
    assert health_down["status"] == "degraded" and health_down["store"] == "unreachable"
    assert [code for code, _ in answers] == [202] * 30
    assert {body["status"] for _, body in answers} == {"queued"}
    assert again[1]["status"] == "queued" and labelled[1]["queued"] == 1
    # 20 records + 30 rewards + the repeat + the labelled item.
    assert spooled == 20 + 30 + 1 + 1
    per_variant = {v["name"]: (v["requests"], v["rewards"], v["reward_sum"]) for v in state["variants"]}
    assert sum(r for r, _, _ in per_variant.values()) == 30  # every prediction recorded, once
    assert sum(n for _, n, _ in per_variant.values()) == 30  # the repeat and the label were duplicates
    assert sum(s for _, _, s in per_variant.values()) == 30.0


def test_a_replica_that_died_leaves_its_spool_to_the_next_one(tmp_path):
    redis = EmbeddedRedis(tmp_path / "redis-data").start()
    spool_dir = tmp_path / "spool"
    try:
        first = make_plane(tmp_path, redis, spool_dir, "orphan")
        rows, _ = churn.make_churn(3, seed=2)

        async def spool_then_die():
            await first.start()
            first.store_ok = False  # as after a failed call: writes go to the spool
            served = [await first.predict("orphan", {"instances": [r]}, f"o{i}") for i, r in enumerate(rows)]
            await first.stop()
            first.spool.close()  # the replica is gone: its lock is released
            return served

        served = asyncio.run(spool_then_die())
        second = DataPlane(
            {"orphan": first.experiments["orphan"].policy}, ExperimentStore.from_url(redis.url),
            {"orphan": first.experiments["orphan"].variants}, RewardTokens("s" * 32), spool=Spool(spool_dir, owner="second"),
        )

        async def adopt():
            await second.start()
            try:
                return await second.state("orphan")
            finally:
                await second.stop()

        state = asyncio.run(adopt())
        assert sum(v["requests"] for v in state["variants"]) == len(served)
        assert second.spool.pending() == 0
    finally:
        redis.stop()
