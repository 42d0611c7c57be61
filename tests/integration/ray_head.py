"""A Ray head node of the test's own (`ray start --head --block`), apart from any other Ray on
the machine: its own temp folder (where `ray start` also writes the address a bare
`ray.init()` would find), every port chosen free and bound to 127.0.0.1.

It is stopped by signalling its own processes only: `ray stop` would kill every Ray process of
this user on the machine, including the session's gateway and other runs'."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import json
import psutil

from tests.integration.conftest import free_port


def ray_command(name: str) -> list[str]:
    """The `ray` or `serve` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name(name)
    if not script.exists():
        raise FileNotFoundError(f"{script}: the {name} command of ray[serve] is not installed")
    return [str(script)]


@dataclass
class RayHead:
    num_cpus: int = 4
    # Custom resources (e.g. {"node_head": 1}): a test can pin work to this node, or tell nodes apart.
    resources: dict[str, float] = field(default_factory=dict)
    # Extra environment of the head node's own processes (its replicas inherit it).
    node_env: dict[str, str] = field(default_factory=dict)
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rh", dir="/tmp")))
    process: subprocess.Popen | None = None
    gcs_port: int = 0
    dashboard_port: int = 0

    @property
    def dashboard_url(self) -> str:
        """What `serve deploy/status/shutdown --address` take."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment of the head and of the commands that talk to it: Ray's token auth on with
        a token of this head's (not the user's ~/.ray/auth_token, which other runs share). A
        `serve` command needs RAY_AUTH_MODE=token to send it."""
        return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(self.temp_dir / "auth_token")}

    def start(self, wait_s: float = 120) -> RayHead:
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        ports = {
            "--port": self.gcs_port, "--dashboard-port": self.dashboard_port,
            "--node-manager-port": free_port(), "--object-manager-port": free_port(),
            "--ray-client-server-port": free_port(), "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(), "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        token = self.temp_dir / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        log = (self.temp_dir / "ray-start.log").open("ab")
        self.process = subprocess.Popen(
            [*ray_command("ray"), "start", "--head", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
             "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--num-cpus={self.num_cpus}",
             f"--temp-dir={self.temp_dir}", f"--resources={json.dumps(self.resources)}",
             *(f"{k}={v}" for k, v in ports.items())],
            stdout=log, stderr=subprocess.STDOUT, env={**self.env, **self.node_env},
            start_new_session=True,
        )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                # The dashboard answers once the head is up (401: no token sent): serve deploy
                # talks to it.
                if httpx.get(f"{self.dashboard_url}/api/version", timeout=2).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ray head not up after {wait_s}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        return (self.temp_dir / "ray-start.log").read_text(errors="replace")[-n:]

    def _processes(self) -> list[psutil.Process]:
        return node_processes(self.process, self.temp_dir)

    def stop(self, grace_s: float = 20) -> None:
        stop_processes(self._processes(), grace_s)
        if self.process is not None:
            self.process.wait(10)
        # Its session logs (a few MB a run) would otherwise pile up in /tmp.
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def node_processes(process: subprocess.Popen | None, temp_dir: Path) -> list[psutil.Process]:
    """A node's `ray start` and everything under it, plus any of its processes that left its
    tree (their command lines name its own temp folder)."""
    found: dict[int, psutil.Process] = {}
    if process is not None:
        try:
            root = psutil.Process(process.pid)
            found = {p.pid: p for p in [root, *root.children(recursive=True)]}
        except psutil.NoSuchProcess:
            pass
    marker = str(temp_dir)
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if marker in " ".join(p.info["cmdline"] or ()):
                found.setdefault(p.pid, p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return list(found.values())


def stop_processes(procs: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM, then SIGKILL what is still there after grace_s (0: SIGKILL at once)."""
    if grace_s > 0:
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        _, procs = psutil.wait_procs(procs, timeout=grace_s)
    for p in procs:
        try:
            p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(procs, timeout=10)
