"""What a user sees on the terminal of `gateway serve`: the gateway's own lines only. Ray's
(its token-auth warning, Serve's start-up lines, its workers' forwarded logs, shutdown noise) go
to STATE_DIR/logs/gateway.log, and back to the terminal with --verbose."""
from __future__ import annotations

import os
import time

import pytest

from tests.integration.conftest import POLICIES, ROW, start_gateway

POLICY = POLICIES / "churn.yaml"

pytestmark = pytest.mark.integration

# Lines Ray prints in every local start; the token-auth warning only while RAY_AUTH_MODE is unset.
RAY_LINES = ("Started Serve in namespace",) + (() if os.environ.get("RAY_AUTH_MODE") else ("Token authentication is enabled",))
# Prefixes of the only lines the gateway itself prints around a run.
OWN_LINES = ("Ray's own messages go to ", "gateway serving ", "stopping ...", "stopped")


def _serve_and_stop(tmp_path, *args: str, env: dict[str, str] | None = None, group: bool = True) -> tuple[str, str]:
    """Start `gateway serve`, predict and reward once, stop it (`group`: as Ctrl-C does, Serve's
    noisiest shutdown); its terminal output (stdout and stderr) and its log file."""
    gw = start_gateway(POLICY, tmp_path / "state", env, args=args)
    try:
        # Healthy can come a moment before `serve` says it is up; a user stops it after that.
        deadline = time.monotonic() + 60
        while "gateway serving " not in gw.log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.2)
        with gw.client() as c:
            p = c.post("/v1/experiments/churn/predict", json={"instances": [ROW]})
            assert p.status_code == 200, p.text
            body = p.json()
            r = c.post("/v1/rewards", json={"request_id": body["request_id"], "reward": 1, "token": body["reward_token"]})
            assert r.status_code == 200, r.text
    finally:
        code = gw.stop(group=group)
    terminal = gw.log.read_text(errors="replace")
    assert code == 0, terminal
    log_file = gw.state_dir / "logs" / "gateway.log"
    return terminal, log_file.read_text(errors="replace") if log_file.exists() else ""


def test_a_normal_run_shows_only_the_gateways_lines_and_logs_rays(tmp_path):
    terminal, log = _serve_and_stop(tmp_path)
    lines = [line for line in terminal.splitlines() if line.strip()]
    assert lines and all(line.startswith(OWN_LINES) for line in lines), terminal
    assert any(line.startswith("gateway serving ") for line in lines) and lines[-1] == "stopped", terminal
    for ray_line in RAY_LINES:
        assert ray_line not in terminal
        assert ray_line in log, log[-3000:]


def test_verbose_puts_rays_lines_back_on_the_terminal(tmp_path):
    terminal, _ = _serve_and_stop(tmp_path, "--verbose", group=False)
    for ray_line in RAY_LINES:
        assert ray_line in terminal, terminal[-3000:]
    assert "Ray's own messages go to" not in terminal
