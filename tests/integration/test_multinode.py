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
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from gateway.sim.churn import make_churn
from gateway.store.embedded import EmbeddedRedis
from tests.integration.conftest import ADMIN_TOKEN, free_port
from tests.integration.deploy_configs import ROOT, for_this_machine, serve_config
from tests.integration.multinode_app import Deployed, counted_rewards, gateway_config, serve_down, settled_rewards
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
    # The head has no CPU: what needs one (the retrainer's training tasks) must run on a worker.
    c = RayCluster(workers=2, head_cpus=0, worker_cpus=1,
                   node_env={n: {"GATEWAY_SPOOL_DIR": str(d)} for n, d in spools.items()}).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """The folder every node reads (the state dir: models, registry): one for the module, so the
    bootstrap models are trained once."""
    return tmp_path_factory.mktemp("shared")


class Redis:
    """The external redis-server, which a test may stop and start again on its data (same URL)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.server = EmbeddedRedis(folder).start()
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = EmbeddedRedis(self.folder).start()
        assert self.server.url == self.url


@pytest.fixture(scope="module")
def redis(tmp_path_factory) -> Iterator[Redis]:
    server = Redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def spread(cluster, redis, shared, tmp_path_factory) -> Iterator[Deployed]:
    """Three router replicas, one per node; the churn policy and the drift one (a world the
    bootstrap models get wrong, so the retrainer has something to learn)."""
    policies = tmp_path_factory.mktemp("policies")
    shutil.copy(ROOT / "policies" / "default.yaml", policies / "churn.yaml")
    shutil.copy(ROOT / "tests" / "policies" / "drift.yaml", policies / "drift.yaml")
    work = tmp_path_factory.mktemp("spread")
    config = gateway_config(free_port(), shared, redis.url, replicas=3, policy=policies,
                            env={"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN})
    app = Deployed(cluster, config, work)
    try:
        app.wait(replicas=3)
        yield app
    finally:
        app.shutdown()


def test_router_replicas_one_per_node_with_node_local_spools(spread, cluster, spools, shared):
    # Serve's own view: one router replica on each of the three nodes.
    assert cluster.running_replicas_by_node("gateway", "Router") == {n: 1 for n in NODES}
    # Each replica loaded the models at start (a RUNNING replica has them) from the shared
    # folder, where the build trained them.
    models = {p.name for p in (shared / "models").iterdir() if p.suffix in (".ubj", ".skops")}
    assert models == {"churn-logreg.skops", "churn-xgb.ubj", "drift-logreg.skops", "drift-xgb.ubj"}, models
    # Each node's replica opened its spool in that node's own folder, not the shared one.
    for node, folder in spools.items():
        assert len(list(folder.glob("*.sqlite"))) == 1, (node, list(folder.iterdir()) if folder.exists() else None)
    assert not (shared / "spool").exists()  # the default, unused here
    before = counted_rewards(spread.url)
    with Load(spread.url, threads=3, seed=1) as load:
        time.sleep(8)
    t = load.tally
    assert t.predicted == t.predictions > 0 and t.rewards_unacked == 0, t.summary()
    assert settled_rewards(spread.url, before + len(t.acked)) == before + len(t.acked)
    predict_and_reward(spread.url)


def test_retraining_runs_on_a_worker_node(spread, cluster, shared):
    """Labelled traffic on the drift experiment until the retrainer has run: its training task
    ran on a worker (the head has no CPU for it), and an admitted challenger's model is in the
    shared registry, where every router replica loads it from."""
    rows, labels = make_churn(600, seed=21, concept=1)
    history: list[dict] = []
    with httpx.Client(base_url=spread.url, timeout=30) as c:
        pending = []
        for row, label in zip(rows, labels):
            out = c.post("/v1/experiments/drift/predict", json={"instances": [row]}).json()
            pending.append({"request_id": out["request_id"], "token": out["reward_token"], "label": int(label)})
            if len(pending) == 50:
                assert c.post("/v1/rewards", json={"rewards": pending}).json()["accepted"] == 50
                pending = []
                history = [h for h in c.get("/v1/experiments/drift").json()["history"] if h.get("by") == "retrainer"]
                if history:
                    break
        deadline = time.monotonic() + 120
        while not history and time.monotonic() < deadline:
            time.sleep(1)
            history = [h for h in c.get("/v1/experiments/drift").json()["history"] if h.get("by") == "retrainer"]
    assert history and history[0]["outcome"] in {"admitted", "rejected"}, history
    heads = {i for i, n in cluster.alive_nodes().items() if n == "node_head"}
    deadline = time.monotonic() + 60
    while True:
        ran_on = {t["node_id"] for t in cluster.tasks("train_challenger") if t["state"] == "FINISHED"}
        if ran_on or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert ran_on and not ran_on & heads, (ran_on, heads)
    if history[0]["outcome"] == "admitted":
        added = history[0]["variant"]
        assert list((shared / "registry" / "drift").glob(f"{added}.*.meta.json")), list(shared.rglob("*"))


def test_replacement_replica_adopts_its_nodes_spool(spread, cluster, redis, spools):
    """Redis goes away under load: the replicas spool what they acknowledge, each in its node's
    folder. node_w1's replica is killed with writes in its spool; Serve can only replace it on
    node_w1 (one per node, every node has one), where the new replica adopts the dead one's
    spool. Redis returns: every acknowledged reward counts exactly once."""
    folder = spools["node_w1"]
    before = counted_rewards(spread.url)
    node_w1 = next(i for i, n in cluster.alive_nodes().items() if n == "node_w1")
    victim = next(r for r in cluster.replicas("gateway", "Router") if r["node_id"] == node_w1 and r["state"] == "RUNNING")
    redis.stop()
    try:
        with Load(spread.url, threads=3, seed=3) as load:
            time.sleep(6)
        old = {p: spooled(p) for p in folder.glob("*.sqlite")}
        assert sum(old.values()) > 0, old
        psutil.Process(victim["pid"]).kill()
    finally:
        redis.start()
    t = load.tally
    assert t.predicted == t.predictions > 0 and t.rewards_unacked == 0, t.summary()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        now = set(folder.glob("*.sqlite"))
        # Adoption moves the orphan's items into the new replica's spool and removes its file.
        if now and not (now & set(old)):
            break
        time.sleep(1)
    assert now and not (now & set(old)), (old, now)
    # The replacement is on node_w1 (its spool file is in node_w1's folder, and Serve says so).
    assert spread.wait_replicas(3) == {n: 1 for n in NODES}
    assert node_w1 in {r["node_id"] for r in cluster.replicas("gateway", "Router") if r["state"] == "RUNNING"}
    assert settled_rewards(spread.url, before + len(t.acked), wait_s=120) == before + len(t.acked), t.summary()


def spooled(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    finally:
        db.close()


def test_serve_deploy_cluster_yaml_to_the_multinode_cluster(cluster, redis, shared, tmp_path):
    port = free_port()
    config = for_this_machine(serve_config("cluster.yaml"), port=port, state_dir=shared, redis_url=redis.url)
    config["proxy_location"] = "HeadOnly"  # one machine: one IP, one proxy port (see gateway_config)
    serve_down(cluster)  # the module's spread deployment has other HTTP options
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
    serve_down(cluster)
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
