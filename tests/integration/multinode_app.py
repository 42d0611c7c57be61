"""The gateway as deployed to a test's multi-node Ray cluster (tests/integration/ray_cluster.py)
with `serve deploy`: its Serve config, and what the tests and bench/scale.py ask of it."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import TEST_SECRET
from tests.integration.deploy_configs import ROOT, write_config
from tests.integration.ray_cluster import RayCluster, serve_cli
from tests.integration.test_deploy_paths import refused, wait_healthy


def gateway_config(port: int, shared: Path, redis_url: str, replicas: int, policy: Path = ROOT / "policies",
                   env: dict[str, str] | None = None) -> dict[str, Any]:
    """Router replicas at most one per node (`max_replicas_per_node: 1`): Serve puts them on
    distinct nodes, and a replacement only on a node that holds none."""
    return {
        # One machine: every node has the same IP, so one proxy (a proxy per node would fight
        # over the port). On real machines EveryNode puts one on each.
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{
            "name": "gateway", "route_prefix": "/", "import_path": "gateway.serving.app:build_app",
            "runtime_env": {"env_vars": {"GATEWAY_REDIS_URL": redis_url, "GATEWAY_REWARD_SECRET": TEST_SECRET,
                                                    **(env or {})}},
            # The state dir is the shared folder: models are trained/found there and every
            # replica loads them from it, whichever node it runs on.
            "args": {"policy": str(policy), "state_dir": str(shared)},
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


def counted_rewards(url: str, experiment: str = "churn") -> int:
    """Rewards the experiment counts (read from Redis by the gateway)."""
    state = httpx.get(f"{url}/v1/experiments/{experiment}", timeout=30).json()
    return sum(v["rewards"] for v in state["variants"])


def settled_rewards(url: str, want: int, wait_s: float = 60) -> int:
    deadline = time.monotonic() + wait_s
    got = counted_rewards(url)
    while got != want and time.monotonic() < deadline:
        time.sleep(0.5)
        got = counted_rewards(url)
    return got


def serve_down(cluster: RayCluster, wait_s: float = 60) -> None:
    """No application left on the cluster (HTTP options take effect only on a fresh start, so a
    deploy with other ones needs this first)."""
    down = serve_cli(cluster.head, "shutdown", "-y")
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + wait_s
    while cluster.get("/api/serve/applications/").get("applications") and time.monotonic() < deadline:
        time.sleep(0.5)
