"""A multi-node Ray cluster on this machine, as Ray's own multi-node tests build one: the test's
head (ray_head.RayHead) plus worker nodes, each a `ray start --address=HEAD --block` with its
own temp folder, ports and a custom resource naming it ({"node_w1": 1}), so a test can tell
the nodes apart and pin work to one. Each node is a real raylet with its own object store and
worker processes.

Nodes are stopped (or killed, to simulate node loss) by signalling their own processes only:
never `ray stop`, which would take down every other Ray run of this user on the machine."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.integration.conftest import free_port
from tests.integration.ray_head import RayHead, node_processes, ray_command, stop_processes

log = logging.getLogger("tests.ray_cluster")


@dataclass
class RayWorker:
    head: RayHead
    name: str  # also its custom resource: {"<name>": 1}
    num_cpus: int = 1  # `ray start --num-cpus` takes whole CPUs
    env: dict[str, str] = field(default_factory=dict)  # extra environment of this node (its replicas inherit it)
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rw", dir="/tmp")))
    process: subprocess.Popen | None = None

    def start(self) -> RayWorker:
        ports = {
            "--node-manager-port": free_port(), "--object-manager-port": free_port(),
            "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
        }
        log = (self.temp_dir / "ray-start.log").open("ab")
        self.process = subprocess.Popen(
            [*ray_command("ray"), "start", "--block", "--disable-usage-stats", f"--address=127.0.0.1:{self.head.gcs_port}",
             "--node-ip-address=127.0.0.1", f"--num-cpus={self.num_cpus}", f"--temp-dir={self.temp_dir}",
             f"--resources={json.dumps({self.name: 1})}", *(f"{k}={v}" for k, v in ports.items())],
            stdout=log, stderr=subprocess.STDOUT, env={**self.head.env, **self.env}, start_new_session=True,
        )
        return self

    def log_tail(self, n: int = 4000) -> str:
        return (self.temp_dir / "ray-start.log").read_text(errors="replace")[-n:]

    def processes(self) -> list[psutil.Process]:
        return node_processes(self.process, self.temp_dir)

    def kill(self) -> int:
        """Node loss: SIGKILL its raylet, agents and every worker process (replicas) at once.
        Returns how many processes it killed."""
        procs = self.processes()
        stop_processes(procs, grace_s=0)
        if self.process is not None:
            self.process.wait(10)
        return len(procs)

    def stop(self, grace_s: float = 20) -> None:
        stop_processes(self.processes(), grace_s)
        if self.process is not None and self.process.poll() is None:
            self.process.wait(10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


# Serve's proxy sends a request to a replica on its own node when it has one. A real cluster
# runs a proxy per node behind a load balancer, so each node serves its share; on one machine
# every node has the same IP and only the head's proxy can take the port, so it would send
# everything to the head's replica. Off here, it spreads requests over all replicas.
SPREAD_FROM_ONE_PROXY = {"RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}


@dataclass
class RayCluster:
    """A head (resource "node_head") and `workers` worker nodes ("node_w1", "node_w2", ...)."""

    workers: int = 1
    head_cpus: int = 2
    worker_cpus: int = 1
    node_env: dict[str, dict[str, str]] = field(default_factory=dict)  # per node name, "node_head" too
    head: RayHead | None = None
    nodes: list[RayWorker] = field(default_factory=list)

    def start(self, wait_s: float = 180) -> RayCluster:
        self.head = RayHead(num_cpus=self.head_cpus, resources={"node_head": 1},
                            node_env={**SPREAD_FROM_ONE_PROXY, **self.node_env.get("node_head", {})}).start()
        try:
            for i in range(1, self.workers + 1):
                self.add_worker(f"node_w{i}", wait=False)
            self.wait_nodes(wait_s)
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker(self, name: str, wait: bool = True, wait_s: float = 180) -> RayWorker:
        worker = RayWorker(self.head, name, self.worker_cpus, {**SPREAD_FROM_ONE_PROXY, **self.node_env.get(name, {})}).start()
        self.nodes.append(worker)
        if wait:
            self.wait_nodes(wait_s)
        return worker

    # -- what the cluster reports (dashboard REST API, with this head's token) --------------

    def get(self, path: str, **params: Any) -> Any:
        token = (self.head.temp_dir / "auth_token").read_text().strip()
        r = httpx.get(f"{self.head.dashboard_url}{path}", params=params, timeout=30,
                      headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
        return r.json()

    def alive_nodes(self) -> dict[str, str]:
        """node id -> the name of its custom resource ("node_head", "node_w1", ...), live nodes only."""
        out = {}
        for n in self.get("/api/v0/nodes", limit=100)["data"]["result"]["result"]:
            if n["state"] != "ALIVE":
                continue
            names = [r for r in n.get("resources_total", {}) if r.startswith("node_")]
            out[n["node_id"]] = names[0] if names else "?"
        return out

    def wait_nodes(self, wait_s: float = 180) -> None:
        wanted = {"node_head", *(w.name for w in self.nodes if w.process and w.process.poll() is None)}
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for w in self.nodes:
                if w.process is not None and w.process.poll() not in (None, 0) and w.name in wanted:
                    raise RuntimeError(f"{w.name}: ray start exited {w.process.returncode}:\n{w.log_tail()}")
            try:
                if wanted <= set(self.alive_nodes().values()):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"nodes {wanted} not all alive after {wait_s}s: {self.alive_nodes()}")

    def replicas(self, app: str, deployment: str) -> list[dict[str, Any]]:
        """Serve's own view of a deployment's replicas (state, node_id, pid, ...)."""
        apps = self.get("/api/serve/applications/")["applications"]
        return apps.get(app, {}).get("deployments", {}).get(deployment, {}).get("replicas", [])

    def running_replicas_by_node(self, app: str, deployment: str) -> dict[str, int]:
        """Node name -> how many RUNNING replicas of the deployment it holds."""
        names = self.alive_nodes()
        out: dict[str, int] = {}
        for r in self.replicas(app, deployment):
            if r["state"] == "RUNNING":
                name = names.get(r["node_id"], "dead")
                out[name] = out.get(name, 0) + 1
        return out

    def tasks(self, name: str) -> list[dict[str, Any]]:
        """Ray's state API: the tasks whose function is `name` (state, node_id, ...). Workers
        report task events every second or so: a task just finished may not be listed yet."""
        listed = self.get("/api/v0/tasks", limit=10000, detail=1)["data"]["result"]["result"]
        return [t for t in listed if name in (t.get("name") or "") or name in (t.get("func_or_class_name") or "")]

    def stop(self) -> None:
        # Workers all at once (each waits up to its grace period), then the head; each step
        # even when an earlier one failed, so no node outlives the tests.
        try:
            stop_processes([p for w in self.nodes for p in w.processes()], grace_s=20)
        finally:
            try:
                for w in self.nodes:
                    try:
                        w.stop(grace_s=1)
                    except Exception:  # noqa: BLE001 - the next node and the head must still stop
                        log.exception("stopping a worker node failed")
            finally:
                if self.head is not None:
                    self.head.stop()


def serve_cli(head: RayHead, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*ray_command("serve"), *args, "--address", head.dashboard_url], env=head.env,
                          capture_output=True, text=True, timeout=timeout)

