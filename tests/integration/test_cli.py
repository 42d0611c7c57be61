"""The CLI verbs against a running gateway, run as a user runs them."""
from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest

from tests.integration.conftest import ADMIN_TOKEN, POLICIES, free_port, gateway_command

pytestmark = pytest.mark.integration


def run(gateway, *args, token=None, columns=200):
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_ADMIN_TOKEN"}
    if token:
        env["GATEWAY_ADMIN_TOKEN"] = token
    env["COLUMNS"] = str(columns)
    return subprocess.run([*gateway_command(), *args, "--url", gateway.url], capture_output=True, text=True, env=env, timeout=120)


def test_status_shows_every_variant(gateway):
    out = run(gateway, "status", "churn")
    assert out.returncode == 0, out.stderr
    assert "churn" in out.stdout and "logreg" in out.stdout and "xgb" in out.stdout and "P(best)" in out.stdout


def test_status_reads_whole_in_an_80_column_terminal(gateway, client):
    out = run(gateway, "status", "churn", columns=80)
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout and max(map(len, out.stdout.splitlines())) <= 80, out.stdout
    for v in client.get("/v1/experiments/churn").json()["variants"]:
        lo, hi = v["credible_interval"]
        assert v["name"] in out.stdout and f"Beta({v['posterior']['alpha']:g}, {v['posterior']['beta']:g})" in out.stdout
        assert f"[{lo:.4f}, {hi:.4f}]" in out.stdout, out.stdout


def test_admin_verbs_need_the_token_and_then_work(gateway, client):
    refused = run(gateway, "promote", "ops", "c")
    assert refused.returncode == 1 and "401" in refused.stderr
    wrong = run(gateway, "promote", "ops", "c", token="nope")
    assert wrong.returncode == 1 and "403" in wrong.stderr
    done = run(gateway, "promote", "ops", "c", token=ADMIN_TOKEN)
    assert done.returncode == 0, done.stderr
    assert client.get("/v1/experiments/ops").json()["champion"] == "c"
    back = run(gateway, "rollback", "ops", token=ADMIN_TOKEN)
    assert back.returncode == 0, back.stderr
    assert client.get("/v1/experiments/ops").json()["champion"] != "c"
    missing = run(gateway, "status", "nope")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_ope_estimates_a_policy_from_the_logged_traffic(gateway, client):
    # Rewarded traffic of its own, so the log has something to evaluate whatever ran before.
    for i in range(40):
        p = client.post("/v1/experiments/churn/predict", json={"instances": [[12.0, 80.5, float(i % 5), "pro"]]}).json()
        client.post("/v1/rewards", json={"request_id": p["request_id"], "reward": i % 2, "token": p["reward_token"]})
    out = run(gateway, "ope", "churn", "--target", "uniform")
    assert out.returncode == 0, out.stderr
    for name in ("IPS", "SNIPS", "DR", "value of uniform"):
        assert name in out.stdout, out.stdout
    refused = run(gateway, "ope", "churn", "--target", "no-such-variant")
    assert refused.returncode == 1 and "422 invalid_target" in refused.stderr


@pytest.mark.parametrize("taken", ["GATEWAY_GRPC_PORT", "GATEWAY_HTTP_PORT"])
def test_serve_refuses_a_port_another_process_listens_on(tmp_path, taken):
    # The gRPC API binds with SO_REUSEPORT: without the check a second gateway would start and
    # take part of the first one's calls. The check comes before Redis and Ray start.
    ports = {"GATEWAY_HTTP_PORT": free_port(), "GATEWAY_GRPC_PORT": free_port()}
    state_dir = tmp_path / "state"
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "RAY_USAGE_STATS_ENABLED": "0",
           "COLUMNS": "200"}  # the message on one line
    with socket.socket() as other:
        if taken == "GATEWAY_GRPC_PORT":
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as another gateway's gRPC server binds
        other.bind(("127.0.0.1", ports[taken]))
        other.listen()
        serve = [*gateway_command(), "serve", "--policy", str(POLICIES / "churn.yaml"), "--state-dir", str(state_dir)]
        proc = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # it started: stop all it started (Ray's workers too)
            proc.communicate(timeout=90)
            pytest.fail(f"gateway serve started although port {ports[taken]} ({taken}) was in use")
    assert proc.returncode != 0, out
    assert f"port {ports[taken]}" in err and "already in use" in err, err
    assert not (state_dir / "redis").exists(), "the embedded Redis was started"
    assert "gateway serving" not in out, out


def test_demo_on_a_port_in_use_says_so_without_a_traceback(tmp_path):
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "COLUMNS": "200"}
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        demo = [*gateway_command(), "demo", "--quick", "--port", str(port), "--state-dir", str(tmp_path / "demo")]
        result = subprocess.run(demo, capture_output=True, text=True, env=env, timeout=120, start_new_session=True)
    assert result.returncode != 0, result.stdout
    assert f"port {port}" in result.stderr and "already in use" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
