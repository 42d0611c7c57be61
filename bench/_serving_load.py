"""The load bench/serving.py sends to a system: `Loader` runs one load point (a warm-up that is
dropped, then the measured run) with wrk and bench/serving_post.lua, or with bench/_load.py when
wrk cannot be had, parses either tool's output into the same figures (req/s, p50/p90/p99,
non-2xx answers, socket errors) and adds the CPU time the system's processes spent per request.
The Redis and reward load is in bench/_serving_redis.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from _serving_probes import cpu_per_request, cpu_snapshot
from _systems import BENCH, Proc, log

LUA = BENCH / "serving_post.lua"
LOAD = BENCH / "_load.py"


class Loader:
    """Runs load points: wrk (warm-up run dropped, then the measured run) or bench/_load.py."""

    def __init__(self, warmup: float, measure: float):
        self.warmup = warmup
        self.measure = measure
        self.wrk = shutil.which("wrk")

    def _wrk(self, url: str, body_file: Path, connections: int, duration: float, per_line: bool = False) -> dict:
        cmd = [self.wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
               "--latency", "-s", str(LUA), url]
        env = {**os.environ, "BENCH_BODY_FILE": str(body_file)}
        if per_line:
            env["BENCH_BODIES_FILE"] = str(body_file)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60, start_new_session=True, check=False)
        m = re.search(r"^BENCH_RESULT (.*)$", out.stdout, re.MULTILINE)
        if not m:
            raise RuntimeError(f"wrk gave no result: {out.stdout[-1000:]} {out.stderr[-1000:]}")
        r = json.loads(m.group(1))
        seconds = r["duration_us"] / 1e6
        bad = r["errors"]["status"]
        other = sum(v for k, v in r["errors"].items() if k != "status")
        lat = r["latency_us"]
        return {
            "tool": "wrk",
            "connections": connections,
            "window_s": round(seconds, 3),
            "requests": r["requests"],
            "non_2xx": bad,
            "socket_errors": other,
            "rps": round((r["requests"] - bad) / seconds, 1),
            "p50_ms": round(lat["50"] / 1e3, 3),
            "p90_ms": round(lat["90"] / 1e3, 3),
            "p99_ms": round(lat["99"] / 1e3, 3),
            "mean_ms": round(lat["mean"] / 1e3, 3),
        }

    def _pyload(self, url: str, body_file: Path, connections: int, warmup: float, duration: float) -> dict:
        cmd = [sys.executable, str(LOAD), url, "--bodies", str(body_file), "--repeat", "--connections",
               str(connections), "--warmup", str(warmup), "--duration", str(duration)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=warmup + duration + 60, start_new_session=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"_load.py failed: {out.stderr[-2000:]}")
        r = json.loads(out.stdout)
        return {
            "tool": "_load.py",
            "connections": connections,
            "window_s": round(r["window_s"], 3),
            "requests": r["requests"],
            "non_2xx": r["requests"] - r["ok"],
            "socket_errors": r["errors"],
            "rps": round(r["rps"], 1),
            "p50_ms": round(r["p50_ms"], 3),
            "p90_ms": round(r["p90_ms"], 3),
            "p99_ms": round(r["p99_ms"], 3),
        }

    def warm(self, url: str, body_file: Path, connections: int, per_line: bool = False) -> None:
        if self.warmup <= 0:
            return
        if self.wrk:
            self._wrk(url, body_file, connections, self.warmup, per_line)

    def run(self, url: str, body_file: Path, connections: int, warm: bool = True, proc: Proc | None = None,
            duration: float | None = None, quiet: bool = False, per_line: bool = False) -> dict:
        """One load point; `warm=False` when the caller already ran the warm-up. With `proc`, the
        CPU time each kind of process of that system spent per request is added. `per_line`: the
        file holds one body a line, sent in turn (bench/_load.py always reads it so)."""
        if self.wrk:
            if warm:
                self.warm(url, body_file, connections, per_line)
            before = cpu_snapshot(proc) if proc else None
            result = self._wrk(url, body_file, connections, duration or self.measure, per_line)
        else:
            before = cpu_snapshot(proc) if proc else None
            result = self._pyload(url, body_file, connections, self.warmup if warm else 0.0, duration or self.measure)
        if proc is not None:
            # With _load.py the warm-up is inside the run, so these figures include it.
            result["cpu_ms_per_request"] = cpu_per_request(before, cpu_snapshot(proc), result["requests"])
        result["load_avg_1m"] = round(os.getloadavg()[0], 2)
        if quiet:
            return result
        if result["non_2xx"] or result["socket_errors"]:
            log(f"  warning: {result['non_2xx']} non-2xx answers and {result['socket_errors']} socket errors")
        log(f"  {connections:>2} conn: {result['rps']:8.1f} req/s  p50 {result['p50_ms']:.2f} ms  "
            f"p99 {result['p99_ms']:.2f} ms  ({result['requests']} requests)")
        return result
