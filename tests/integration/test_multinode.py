"""The gateway on a multi-node Ray cluster: a head and two worker nodes on this machine (real
raylets, ray_cluster.py), one external redis-server, models in a shared folder (the state dir
every node reads), a spool folder per node. Deployed with `serve deploy` as a cluster user does.

Placement: the Router deployment gets `max_replicas_per_node: 1`, so Serve puts its replicas on
distinct nodes (and a replacement can only go to a node that holds none).

Three Ray nodes cost about five minutes on two cores, so this module is a tier of its own:
.ci/multinode.sh sets GATEWAY_TEST_MULTINODE=1 and runs it; the README's plain `pytest` skips it,
saying so."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gateway.store.embedded import EmbeddedRedis
from tests.integration.conftest import free_port
from tests.integration.deploy_configs import for_this_machine, serve_config
from tests.integration.multinode_app import Deployed, counted_rewards, gateway_config, settled_rewards
from tests.integration.multinode_load import Load
from tests.integration.ray_cluster import RayCluster, serve_cli
from tests.integration.test_deploy_paths import predict_and_reward, wait_healthy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("GATEWAY_TEST_MULTINODE") != "1",
                       reason="the multi-node tier: bash .ci/multinode.sh (or GATEWAY_TEST_MULTINODE=1)"),
]

NODES = ("node_head", "node_w1", "node_w2")


@pytest.fixture(scope="module")
def spools(tmp_path_factory) -> dict[str, Path]:
    """Each node's own spool folder (on one machine: a folder per node, named in its environment)."""
    root = tmp_path_factory.mktemp("spools")
    return {n: root / n for n in NODES}


@pytest.fixture(scope="module")
def cluster(spools) -> Iterator[RayCluster]:
    c = RayCluster(workers=2, head_cpus=1, worker_cpus=1,
                   node_env={n: {"GATEWAY_SPOOL_DIR": str(d)} for n, d in spools.items()}).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """The folder every node reads (the state dir: models, registry): one for the module, so the
    bootstrap models are trained once."""
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def redis(tmp_path_factory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def test_router_replicas_one_per_node_with_node_local_spools(cluster, redis, spools, shared, tmp_path):
    app = Deployed(cluster, gateway_config(free_port(), shared, redis.url, replicas=3), tmp_path)
    try:
        placed = app.wait(replicas=3)
        # Serve's own view: one router replica on each of the three nodes.
        assert placed == {n: 1 for n in NODES}, placed
        # Each replica loaded the models at start (a RUNNING replica has them), from the shared
        # folder: the artifacts the build trained are there and nowhere else under tmp_path.
        models = [*shared.rglob("*.ubj"), *shared.rglob("*.skops")]
        assert len(models) == 2, list(shared.rglob("*"))
        # Each node's replica opened its spool in that node's own folder, not the shared one.
        for node, folder in spools.items():
            assert len(list(folder.glob("*.sqlite"))) == 1, (node, list(folder.iterdir()) if folder.exists() else None)
        assert not (shared / "spool").exists()  # the default, unused here
        before = counted_rewards(app.url)
        with Load(app.url, threads=3, seed=1) as load:
            time.sleep(8)
        t = load.tally
        assert t.predicted == t.predictions > 0 and t.rewards_unacked == 0, t.summary()
        assert settled_rewards(app.url, before + len(t.acked)) == before + len(t.acked)
        predict_and_reward(app.url)
    finally:
        app.shutdown()


def test_replacement_replica_adopts_its_nodes_spool(cluster, redis, spools, shared, tmp_path):
    """A router replica killed on node_w1 is replaced there (max one per node, every node has
    one): the new replica adopts the dead one's spool file in node_w1's folder."""
    app = Deployed(cluster, gateway_config(free_port(), shared, redis.url, replicas=3), tmp_path)
    try:
        app.wait(replicas=3)
        folder = spools["node_w1"]
        node_w1 = next(i for i, n in cluster.alive_nodes().items() if n == "node_w1")
        victim = next(r for r in cluster.replicas("gateway", "Router") if r["node_id"] == node_w1 and r["state"] == "RUNNING")
        old = {p.name for p in folder.glob("*.sqlite")}
        psutil.Process(victim["pid"]).kill()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            now = {p.name for p in folder.glob("*.sqlite")}
            # Adoption removes the orphan's file once its items are moved into the new one.
            if now and not (now & old):
                break
            time.sleep(1)
        assert now and not (now & old), (old, now)
        replicas = {r["replica_id"]: r["node_id"] for r in cluster.replicas("gateway", "Router") if r["state"] == "RUNNING"}
        assert list(replicas.values()).count(node_w1) == 1, replicas
        predict_and_reward(app.url)
    finally:
        app.shutdown()


def test_serve_deploy_cluster_yaml_to_the_multinode_cluster(cluster, redis, shared, tmp_path):
    port = free_port()
    config = for_this_machine(serve_config("cluster.yaml"), port=port, state_dir=shared, redis_url=redis.url)
    config["proxy_location"] = "HeadOnly"  # one machine: one IP, one proxy port (see gateway_config)
    app = Deployed(cluster, config, tmp_path)
    try:
        wait_healthy(app.url, lambda: None)
        status = serve_cli(cluster.head, "status")
        assert "RUNNING" in status.stdout, status.stdout
        # The config's autoscaling floor: two router replicas, spread over nodes by Serve.
        app.wait_replicas(2)
        predict_and_reward(app.url)
    finally:
        app.shutdown()


def test_node_loss_under_load(cluster, redis, shared, tmp_path):
    """Runs last: it kills node_w2 (its raylet, agents and replicas) while clients predict and
    reward. Two router replicas, at most one per node, on three nodes: the one lost comes back on
    the node that had none."""
    app = Deployed(cluster, gateway_config(free_port(), shared, redis.url, replicas=2), tmp_path)
    try:
        placed = app.wait(replicas=2)
        names = cluster.alive_nodes()
        victim_name = next(n for n in ("node_w2", "node_w1") if placed.get(n))
        victim = next(w for w in cluster.nodes if w.name == victim_name)
        before = counted_rewards(app.url)
        with Load(app.url, threads=4, seed=2) as load:
            time.sleep(6)
            killed, killed_at = victim.kill(), time.monotonic()
            # Clients keep going while Ray notices the node is gone and Serve replaces the replica.
            after_kill = app.wait_replicas(2, wait_s=180, not_on=victim_name)
            replaced_s = time.monotonic() - killed_at
            time.sleep(6)
        t = load.tally.summary()
        print("node loss:", {"killed_processes": killed, "placed_before": placed, "placed_after": after_kill,
                            "replaced_after_s": round(replaced_s, 1), **t})
        assert killed >= 3
        assert victim_name not in after_kill and set(after_kill) <= set(names.values()) - {victim_name}, after_kill
        assert t["success"] >= 0.99, t
        # Exactly once: Redis counts each acknowledged reward once and nothing else (every sent
        # reward was acknowledged, so none may count without the client knowing).
        assert t["rewards_unacked"] == 0, t
        assert settled_rewards(app.url, before + t["rewards_acked"]) == before + t["rewards_acked"], t
    finally:
        app.shutdown()
