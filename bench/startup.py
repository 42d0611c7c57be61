"""Startup and stop: `gateway serve` from the command to its first prediction answered, against a
bare `serve run` of one Ray Serve deployment (Serve's defaults, the same skops model and body:
bench/_startup_bare.py) from the command to its first answer, in alternating rounds.

Usage::

    python bench/startup.py [--rounds 3] [--json PATH] [--cache-dir DIR]

Each round starts the gateway exactly as a user does (`gateway serve --policy P --port N
--state-dir FRESH`, the one-variant churn policy of bench/serving.py, models trained beforehand,
a fresh state folder so the registry import and the embedded Redis start are counted), then the
bare `serve run CONFIG` (its own Ray instance each time, like the gateway's); one at a time. The
clock starts before the process is spawned; "ready" is the first POST of the OIP body answered
200 (polled every 50 ms). The gateway's own lines on stdout are stamped with the time they
appeared, which splits its start into: Python and the CLI's imports (its first line), Ray, Redis
and Serve up (the "gateway serving" line), and the first answer. Then SIGINT (Ctrl-C) and the
time until the process has exited, stop included.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _systems import BENCH, EXPERIMENT, ROOT, child_env, free_port, http, log, oip_body, prepare_models  # noqa: E402

POLL_S = 0.05
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 120.0


class Timed:
    """A command spawned in its own process group, its stdout lines stamped with seconds since
    the spawn (stderr is merged; Ray's chatter ends up stamped too)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path):
        self.t0 = time.perf_counter()
        self.popen = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True, text=True, bufsize=1)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append((time.perf_counter() - self.t0, line.rstrip()))

    def first_line_with(self, text: str) -> float | None:
        return next((t for t, line in list(self.lines) if text in line), None)

    def wait_answer(self, url: str, body: bytes) -> float:
        """Seconds from the spawn to the first 200 answer."""
        deadline = time.perf_counter() + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.popen.poll() is not None:
                tail = "\n".join(line for _, line in self.lines[-20:])
                raise RuntimeError(f"{self.popen.args[0]} exited with {self.popen.returncode}:\n{tail}")
            status, _ = http("POST", url, body, timeout=5)
            if status == 200:
                return time.perf_counter() - self.t0
            time.sleep(POLL_S)
        raise RuntimeError(f"no answer from {url} within {READY_TIMEOUT_S:.0f}s")

    def interrupt(self) -> float:
        """SIGINT, as Ctrl-C sends it; seconds until the process has exited (then the group is
        killed, so nothing it started outlives the round)."""
        t = time.perf_counter()
        os.kill(self.popen.pid, signal.SIGINT)
        try:
            self.popen.wait(STOP_TIMEOUT_S)
            stopped = time.perf_counter() - t
        except subprocess.TimeoutExpired:
            stopped = float("nan")
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)
        self._reader.join(5)
        return stopped


def gateway_round(work: Path, policy: str, body: bytes, n: int) -> dict:
    port = free_port()
    gateway = str(Path(sys.executable).parent / "gateway")
    run = Timed([gateway, "serve", "--policy", policy, "--port", str(port), "--state-dir", str(work / f"state-{n}")],
                child_env(), work)
    try:
        ready = run.wait_answer(f"http://127.0.0.1:{port}/v2/models/{EXPERIMENT}/infer", body)
    finally:
        stop = run.interrupt()
    return {"ready_s": ready, "first_line_s": run.first_line_with("Ray's own messages"),
            "serving_line_s": run.first_line_with("gateway serving"), "stop_s": stop,
            "lines": [f"{t:7.2f}s {line}" for t, line in run.lines]}


def bare_round(work: Path, artifact: dict, features: list, body: bytes, n: int) -> dict:
    port = free_port()
    config = work / f"bare-{n}.yaml"
    config.write_text(json.dumps({
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{"name": "bare", "route_prefix": "/", "import_path": "_startup_bare:app"}],
    }))
    env = child_env({"BARE_ARTIFACT": artifact["path"], "BARE_SHA256": artifact["sha256"],
                     "BARE_FEATURES": json.dumps(features), "PYTHONPATH": f"{BENCH}:{ROOT / 'src'}"})
    serve = str(Path(sys.executable).parent / "serve")
    run = Timed([serve, "run", str(config)], env, BENCH)
    try:
        ready = run.wait_answer(f"http://127.0.0.1:{port}/", body)
    finally:
        stop = run.interrupt()
    return {"ready_s": ready, "stop_s": stop}


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "gateway-bench")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gw-bench-startup-"))
    log(f"work dir {work}; training the models")
    models = prepare_models(work, args.cache_dir)
    body = json.dumps(oip_body()).encode()
    rounds = []
    for n in range(args.rounds):
        g = gateway_round(work, models["one"]["policy"], body, n)
        log(f"round {n + 1}: gateway ready in {g['ready_s']:.1f}s (first line {g['first_line_s']}, serving line "
            f"{g['serving_line_s']}), stopped in {g['stop_s']:.1f}s")
        b = bare_round(work, models["one"]["artifacts"]["logreg"], models["features"], body, n)
        log(f"round {n + 1}: bare serve run ready in {b['ready_s']:.1f}s, stopped in {b['stop_s']:.1f}s")
        rounds.append({"gateway": g, "bare": b, "ready_ratio": g["ready_s"] / b["ready_s"]})
    result = {
        "machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_end": os.getloadavg(),
        "gateway_ready_s": summary([r["gateway"]["ready_s"] for r in rounds]),
        "bare_ready_s": summary([r["bare"]["ready_s"] for r in rounds]),
        "ready_ratio": summary([r["ready_ratio"] for r in rounds]),
        "gateway_stop_s": summary([r["gateway"]["stop_s"] for r in rounds]),
        "bare_stop_s": summary([r["bare"]["stop_s"] for r in rounds]),
        "rounds": rounds,
    }
    for key in ("gateway_ready_s", "bare_ready_s", "ready_ratio", "gateway_stop_s", "bare_stop_s"):
        s = result[key]
        log(f"{key}: {s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}]")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
