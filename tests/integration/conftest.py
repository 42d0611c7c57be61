"""Integration fixtures: a real `gateway serve` (real Ray Serve, the embedded redis-server),
started once per session as a user starts it, and an OTLP receiver for its traces."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from gateway.serving import ports
from tests.integration.otlp_collector import OtlpCollector

POLICIES = Path(__file__).resolve().parents[1] / "policies"
TEST_SECRET = "integration-test-reward-secret-0123456789"
ADMIN_TOKEN = "integration-admin-token"
ROW = [12.0, 80.5, 2.0, "pro"]


def free_port() -> int:
    # Not bind(0): that port is from the ephemeral range, where Ray's outgoing connections can
    # take it before the gateway binds it (CI saw HAProxy fail with "Address already in use").
    return ports.free_port()


def gateway_command() -> list[str]:
    script = Path(sys.executable).with_name("gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


@dataclass
class RunningGateway:
    url: str
    state_dir: Path
    process: subprocess.Popen
    log: Path
    grpc_address: str | None = None  # host:port of the OIP gRPC API, when GATEWAY_GRPC_PORT is set

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    @property
    def ray_log(self) -> Path:
        """Where `gateway serve` puts Ray's own lines (its replicas' tracebacks among them)."""
        return self.state_dir / "logs" / "gateway.log"

    def diagnostics(self, n: int = 3000) -> str:
        """The tails of its terminal output and of its Ray log, for a failure message."""
        parts = [(p.name, p.read_text(errors="replace")[-n:]) for p in (self.log, self.ray_log) if p.exists()]
        return "\n".join(f"--- {name} ---\n{text}" for name, text in parts)

    def processes(self, title: re.Pattern) -> list[psutil.Process]:
        """Live processes under this gateway's process tree whose command line matches (e.g. a
        Serve replica), for fault tests that kill one."""
        found = []
        for p in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if p.status() != psutil.STATUS_ZOMBIE and title.search(" ".join(p.cmdline()).strip()):
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def stop(self, timeout_s: float = 90, group: bool = True) -> int:
        """SIGTERM to its process group, as Ctrl-C in a terminal reaches Ray's workers too (Serve
        then waits ~30 s for its dead controller); `group=False`: to `gateway serve` alone first
        (it stops everything it started in a few seconds), the group only if that fails."""
        if not group and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_s)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def start_gateway(
    policy: Path, state_dir: Path, env: dict[str, str] | None = None, wait_s: float = 240, args: tuple[str, ...] = ()
) -> RunningGateway:
    port = free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "serve.log"
    full_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    proc = subprocess.Popen(
        [*gateway_command(), "serve", "--policy", str(policy), "--port", str(port), "--state-dir", str(state_dir), *args],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=full_env,
        start_new_session=True,
    )
    grpc_port = full_env.get("GATEWAY_GRPC_PORT")
    gw = RunningGateway(f"http://127.0.0.1:{port}", state_dir, proc, log, f"127.0.0.1:{grpc_port}" if grpc_port else None)
    deadline = time.monotonic() + wait_s
    with httpx.Client(base_url=gw.url, timeout=5) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway serve exited with {proc.returncode}:\n{gw.diagnostics(4000)}")
            try:
                if c.get("/healthz").status_code == 200:
                    return gw
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    gw.stop()
    raise RuntimeError(f"gateway not healthy after {wait_s}s:\n{gw.diagnostics(4000)}")


def write_incompatible_model(path: Path) -> None:
    """A real model trained on 3 columns where the policy encodes 6: it fails on every call."""
    import numpy as np

    from gateway.learning import artifacts

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    model = artifacts.train("logistic_regression", X, (X[:, 0] > 0).astype(int))
    path.parent.mkdir(parents=True, exist_ok=True)
    artifacts.save_model(model, path)


@pytest.fixture(scope="session")
def collector() -> Iterator[OtlpCollector]:
    c = OtlpCollector().start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, collector) -> Iterator[RunningGateway]:
    env = {
        "GATEWAY_REWARD_SECRET": TEST_SECRET,
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        # The OIP gRPC API beside REST (test_grpc.py).
        "GATEWAY_GRPC_PORT": str(free_port()),
    }
    state_dir = tmp_path_factory.mktemp("gateway-state")
    write_incompatible_model(state_dir / "models" / "faults-broken.skops")
    gw = start_gateway(POLICIES, state_dir, env)
    yield gw
    code = gw.stop()
    assert code == 0, f"gateway serve did not stop cleanly ({code}):\n{gw.diagnostics()}"


@pytest.fixture()
def client(gateway) -> Iterator[httpx.Client]:
    with gateway.client() as c:
        yield c


def variant_state(state: dict, name: str) -> dict:
    return next(v for v in state["variants"] if v["name"] == name)
