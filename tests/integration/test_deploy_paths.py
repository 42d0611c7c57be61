"""The deploy paths a Ray Serve user runs: `serve run deployments/local.yaml`, and `serve deploy`
of every config in deployments/ to a running Ray cluster. Each one is started for real, then
predicted and rewarded through over HTTP, then stopped.

These start Ray themselves (serve run its own local instance, serve deploy a `ray start --head`
of this module), apart from the session's gateway: own temp folders, free ports, and a stop
that signals only their own processes."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
import yaml

from gateway.store.embedded import EmbeddedRedis
from tests.integration.conftest import ROW, free_port
from tests.integration.deploy_configs import DEPLOYMENTS, ROOT, for_this_machine, serve_config, write_config
from tests.integration.ray_head import RayHead, ray_command

pytestmark = pytest.mark.integration

CONFIGS = sorted(p.name for p in DEPLOYMENTS.glob("*.yaml"))


def wait_healthy(url: str, alive, wait_s: float = 240) -> None:
    deadline = time.monotonic() + wait_s
    with httpx.Client(base_url=url, timeout=5) as c:
        while time.monotonic() < deadline:
            alive()
            try:
                if c.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
    raise AssertionError(f"{url} not healthy after {wait_s}s")


def predict_and_reward(url: str) -> None:
    """A client's round trip: a prediction routed by the bandit, its reward accepted once, and
    the experiment counting it."""
    with httpx.Client(base_url=url, timeout=30) as c:
        p = c.post("/v1/experiments/churn/predict", json={"instances": [ROW], "unit_id": "user-42"})
        assert p.status_code == 200, p.text
        body = p.json()
        assert body["variant"] in {"logreg", "xgb"} and len(body["predictions"]) == 1
        reward = {"request_id": body["request_id"], "reward": 1.0, "token": body["reward_token"]}
        first = c.post("/v1/rewards", json=reward)
        assert first.status_code == 200 and first.json()["status"] == "accepted", first.text
        assert c.post("/v1/rewards", json=reward).json()["status"] == "duplicate"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = c.get("/v1/experiments/churn").json()
            if sum(v["rewards"] for v in state["variants"]) >= 1:
                return
            time.sleep(0.2)
        raise AssertionError(f"the reward never reached the experiment's state: {state}")


def refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=2)
    except httpx.TransportError:
        return True
    return False


def _session_processes(leader: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == leader and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied, PermissionError):
            continue
    return out


def test_serve_run_local_yaml(tmp_path):
    port = free_port()
    config = for_this_machine(serve_config("local.yaml"), port=port, state_dir=tmp_path / "state", redis_url=None)
    path = write_config(config, tmp_path / "local.yaml")
    log = tmp_path / "serve-run.log"
    # RAY_ADDRESS=local: a Ray instance of its own, never one another run on this machine started.
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([*ray_command("serve"), "run", str(path)], cwd=ROOT, env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def alive() -> None:
        assert proc.poll() is None, f"serve run exited with {proc.returncode}:\n{log.read_text()[-4000:]}"

    try:
        wait_healthy(url, alive)
        predict_and_reward(url)
        # Ctrl-C, as a user stops it: Serve shuts down, then the Ray instance serve run started.
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, log.read_text()[-4000:]
        assert refused(url)
        deadline = time.monotonic() + 30
        while _session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [" ".join(p.cmdline())[:120] for p in _session_processes(proc.pid)]
        assert not left, f"serve run left processes behind: {left}"
    finally:
        for p in _session_processes(proc.pid):
            p.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    """One cluster for every `serve deploy` below: starting one costs more than a deploy."""
    head = RayHead().start()
    yield head
    head.stop()


@pytest.fixture(scope="module")
def redis(tmp_path_factory) -> Iterator[str]:
    """The external Redis the cluster configs expect (GATEWAY_REDIS_URL)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


def serve_cli(head: RayHead, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*ray_command("serve"), *args, "--address", head.dashboard_url], env=head.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", CONFIGS)
def test_serve_deploy_to_a_running_cluster(name, ray_head, redis, tmp_path):
    port = free_port()
    config = for_this_machine(serve_config(name), port=port, state_dir=tmp_path / "state", redis_url=redis)
    path = write_config(config, tmp_path / name)
    deployed = serve_cli(ray_head, "deploy", str(path))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    url = f"http://127.0.0.1:{port}"

    def alive() -> None:
        assert ray_head.process.poll() is None, ray_head.log_tail()

    try:
        wait_healthy(url, alive)
        # What `serve status` tells its user: the application running, every deployment the
        # config names healthy (the cluster config's per-variant ones and pool too).
        status = serve_cli(ray_head, "status")
        app = yaml.safe_load(status.stdout)["applications"]["gateway"]
        assert app["status"] == "RUNNING", status.stdout
        named = {d["name"] for a in config["applications"] for d in a.get("deployments", [])}
        health = {d: info["status"] for d, info in app["deployments"].items()}
        assert named <= set(health) and set(health.values()) == {"HEALTHY"}, status.stdout
        predict_and_reward(url)
    finally:
        # Every config sets its own HTTP options, which Serve takes only on a fresh start.
        down = serve_cli(ray_head, "shutdown", "-y")
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 30
    while not refused(url) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert refused(url), f"{url} still answers after serve shutdown"
