"""The gateway on a multi-node Ray cluster: a head and two worker nodes on this machine (real
raylets, ray_cluster.py), one external redis-server, models in a shared folder (the state dir
every node reads), a spool folder per node. Deployed with `serve deploy` as a cluster user does.

Placement: the Router deployment gets `max_replicas_per_node: 1`, so Serve puts its replicas on
distinct nodes (and a replacement can only go to a node that holds none)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from gateway.store.embedded import EmbeddedRedis
from tests.integration.conftest import TEST_SECRET, free_port
from tests.integration.deploy_configs import ROOT, for_this_machine, serve_config, write_config
from tests.integration.multinode_load import Load
from tests.integration.ray_cluster import RayCluster, serve_cli
from tests.integration.test_deploy_paths import predict_and_reward, refused, wait_healthy

pytestmark = pytest.mark.integration

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


def gateway_config(port: int, shared: Path, redis_url: str, replicas: int) -> dict[str, Any]:
    return {
        # One machine: every node has the same IP, so one proxy (a proxy per node would fight
        # over the port). On real machines EveryNode puts one on each.
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{
            "name": "gateway", "route_prefix": "/", "import_path": "gateway.serving.app:build_app",
            "runtime_env": {"env_vars": {"GATEWAY_REDIS_URL": redis_url, "GATEWAY_REWARD_SECRET": TEST_SECRET}},
            # The state dir is the shared folder: models are trained/found there and every
            # replica loads them from it, whichever node it runs on.
            "args": {"policy": str(ROOT / "policies"), "state_dir": str(shared)},
            "deployments": [{"name": "Router", "num_replicas": replicas, "max_replicas_per_node": 1,
                             "max_ongoing_requests": 200, "ray_actor_options": {"num_cpus": 0}}],
        }],
    }


class Deployed:
    def __init__(self, cluster: RayCluster, config: dict[str, Any], tmp: Path):
        self.cluster, self.config = cluster, config
        self.url = f"http://127.0.0.1:{config['http_options']['port']}"
        out = serve_cli(cluster.head, "deploy", str(write_config(config, tmp / "serve.yaml")))
        assert out.returncode == 0, out.stdout + out.stderr

    def wait(self, replicas: int, wait_s: float = 240) -> dict[str, int]:
        wait_healthy(self.url, lambda: None, wait_s)
        return self.wait_replicas(replicas, wait_s)

    def wait_replicas(self, replicas: int, wait_s: float = 240, not_on: str | None = None) -> dict[str, int]:
        """Node name -> running router replicas, once `replicas` run (none on node `not_on`)."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            placed = self.cluster.running_replicas_by_node("gateway", "Router")
            if sum(placed.values()) == replicas and not placed.get(not_on) and "dead" not in placed:
                return placed
            time.sleep(1)
        raise AssertionError(f"router replicas not all running after {wait_s}s: {placed}")

    def shutdown(self) -> None:
        down = serve_cli(self.cluster.head, "shutdown", "-y")
        assert down.returncode == 0, down.stdout + down.stderr
        deadline = time.monotonic() + 60
        while not refused(self.url) and time.monotonic() < deadline:
            time.sleep(0.5)


def counted_rewards(url: str) -> int:
    """Rewards the experiment counts (read from Redis by the gateway)."""
    state = httpx.get(f"{url}/v1/experiments/churn", timeout=30).json()
    return sum(v["rewards"] for v in state["variants"])


def settled_rewards(url: str, want: int, wait_s: float = 60) -> int:
    deadline = time.monotonic() + wait_s
    got = counted_rewards(url)
    while got != want and time.monotonic() < deadline:
        time.sleep(0.5)
        got = counted_rewards(url)
    return got


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
