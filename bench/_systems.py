"""The systems bench/serving.py starts and stops, seen from the orchestrator: the paths and
constants they share (the experiment, the row every system is asked about, the MLServer version),
the child processes that run them (`Proc`: its own process group, stopped with SIGTERM then
SIGKILL to every descendant; `start_role` runs `serving.py --role ...` and waits for its ready
file), free ports, small HTTP probes, the MLServer venv and server, the tools the load needs
(wrk, redis-benchmark), and what every system serves: the policies, the models trained by the
gateway's bootstrap recipe, the OIP body and the expected answer. What runs inside the children
is in bench/_roles.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.serving import ports

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SCRIPT = BENCH / "serving.py"  # the entry point, which the children run with --role
BASE_POLICY = ROOT / "tests" / "policies" / "churn.yaml"

EXPERIMENT = "churn"
ROW = {"tenure": 14.0, "monthly_charges": 82.5, "support_calls": 3.0, "plan": "pro"}
MLSERVER_VERSION = "1.7.1"


def log(msg: str) -> None:
    print(f"[serving {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _write_ready(path: str, info: dict) -> None:
    """Write a JSON file atomically (ready files, redeploy commands and their acks)."""
    tmp = path + ".tmp"
    Path(tmp).write_text(json.dumps(info))
    os.replace(tmp, path)


# =============================================================================================
# Orchestrator helpers
# =============================================================================================


def free_port() -> int:
    return ports.free_port()


def free_port_range(count: int) -> int:
    """A base port with `count` free ports after it on 127.0.0.1 and 0.0.0.0."""
    return ports.free_ports("0.0.0.0", count)


def http(method: str, url: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, b""


def wait_http(ok, what: str, timeout: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: the process exited ({proc.returncode()}); the end of its log:\n"
                               f"{proc.log_tail()}")
        if ok():
            return
        time.sleep(0.25)
    raise RuntimeError(f"{what}: not ready within {timeout:.0f}s; see {proc.log_path if proc else '-'}")


class Proc:
    """A child process in its own process group. stop(): SIGTERM to the child (a role stops its
    system cleanly), then SIGKILL to the group and to every descendant seen while it ran."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path | None = None):
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen | None = None
        self._seen: dict[int, Any] = {}

    def start(self) -> Proc:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def processes(self) -> list:
        """The child and all its descendants (remembered for stop())."""
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            self._seen.setdefault(p.pid, p)
        return procs

    def wait_ready_file(self, path: Path, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                self.processes()
                return json.loads(path.read_text())
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.returncode()} before it was ready; "
                                   f"the end of its log:\n{self.log_tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: not ready within {timeout:.0f}s; see {self.log_path}")

    def log_tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 60.0) -> None:
        import psutil

        if self.popen is None:
            return
        try:
            if self.alive():
                self.processes()
                with contextlib.suppress(ProcessLookupError):
                    self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    log(f"{self.name}: no clean stop within {timeout:.0f}s; killing it")
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.popen.wait(5)
            for p in self._seen.values():
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    if p.is_running():
                        p.kill()
            self._log.close()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "OTEL_", "RAY_SERVE_")) and k not in ("RAY_ADDRESS", "PYTHONPATH")
    }
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "1"})
    # The code beside this script, not whichever checkout the venv's editable install names: a
    # run from another worktree measures that worktree (`extra` may still name another).
    env["PYTHONPATH"] = str(ROOT / "src")
    env.update(extra or {})
    return env




def start_role(role: str, name: str, spec: dict, work: Path, env_extra: dict | None = None, timeout: float = 180) -> tuple[Proc, dict]:
    ready = work / f"{name}.ready.json"
    ready.unlink(missing_ok=True)
    spec = {**spec, "ready_file": str(ready)}
    spec_file = work / f"{name}.spec.json"
    spec_file.write_text(json.dumps(spec))
    proc = Proc(name, [sys.executable, str(SCRIPT), "--role", role, "--spec", str(spec_file)],
                child_env(env_extra), work / "logs")
    proc.start()
    try:
        info = proc.wait_ready_file(ready, timeout)
    except BaseException:
        proc.stop()
        raise
    return proc, info


def with_retry(name: str, start, attempts: int = 2):
    """Start a system; on a busy shared machine a start can fail once (a port taken between
    picking and binding, a Ray component slow to come up): try once more."""
    for attempt in range(1, attempts + 1):
        try:
            return start(attempt)
        except Exception as err:
            if attempt == attempts:
                raise
            log(f"  {name} failed to start ({type(err).__name__}: {str(err)[-1500:]}); trying again")


# -- MLServer -----------------------------------------------------------------------------------


def mlserver_requirements() -> list[str]:
    import sklearn

    return [f"mlserver=={MLSERVER_VERSION}", f"mlserver-sklearn=={MLSERVER_VERSION}", "uvloop<0.22",
            f"scikit-learn=={sklearn.__version__}", "joblib"]


def ensure_mlserver_venv(cache: Path) -> Path:
    """MLServer in its own venv (its pins clash with the project's); built once, reused."""
    venv = cache / f"mlserver-{MLSERVER_VERSION}"
    marker = venv / ".bench-complete"
    reqs = mlserver_requirements()
    if marker.exists() and marker.read_text().split() == " ".join(reqs).split():
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"mlserver-{MLSERVER_VERSION}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    log(f"creating the MLServer venv at {venv} (a few minutes, once)")
    subprocess.run([base, "-m", "venv", str(tmp)], check=True)
    pip = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", *reqs], check=False,
                         capture_output=True, text=True)
    if pip.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"pip install {' '.join(reqs)} failed: {pip.stderr[-2000:]}")
    (tmp / ".bench-complete").write_text(" ".join(reqs))
    shutil.rmtree(venv, ignore_errors=True)
    os.replace(tmp, venv)  # the venv is run as `venv/bin/python -c ...`, so the move is safe
    return venv


def start_mlserver(venv: Path, model_dir: Path, work: Path) -> tuple[Proc, str]:
    port = free_port()
    (model_dir / "settings.json").write_text(json.dumps(
        {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
         "debug": False}
    ))
    code = "import sys; from mlserver.cli import main; sys.argv = ['mlserver', 'start', '.']; sys.exit(main())"
    env = {k: v for k, v in child_env().items() if not k.startswith("MLSERVER")}
    proc = Proc("mlserver", [str(venv / "bin" / "python"), "-c", code], env, work / "logs", cwd=model_dir).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(lambda: http("GET", f"{url}/v2/models/{EXPERIMENT}/ready")[0] == 200, "mlserver", 180, proc)
        proc.processes()
    except BaseException:
        proc.stop()
        raise
    return proc, url


def start_mlserver_workers(venv: Path, artifact: dict, work: Path, workers: int) -> tuple[Proc, str, str]:
    """MLServer serving `artifact` with `parallel_workers` set in the model folder's `.env`,
    which MLServer's settings read (its working directory is the model folder; start_mlserver's
    settings.json does not set the field). Returns the Proc, its HTTP URL and its gRPC target."""
    sub = work / f"mlserver-pw{workers}"
    model_dir = sub / "model"
    (sub / "logs").mkdir(parents=True, exist_ok=True)
    write_mlserver_model(artifact, model_dir)
    (model_dir / ".env").write_text(f"MLSERVER_PARALLEL_WORKERS={workers}\n")
    proc, url = start_mlserver(venv, model_dir, sub)
    settings = json.loads((model_dir / "settings.json").read_text())
    return proc, url, f"127.0.0.1:{settings['grpc_port']}"


# -- model, policies, bodies ----------------------------------------------------------------------


def prepare_models(work: Path, cache: Path) -> dict:
    """Policy files (1 and 4 variants) beside their models, trained by the bootstrap recipe
    (seeded, so the result is kept in the cache dir keyed by the policies' text)."""
    import hashlib

    import yaml

    from gateway.learning.bootstrap import resolve_artifacts
    from gateway.policy import load_policy_file

    base = yaml.safe_load(BASE_POLICY.read_text())
    one = {**base, "variants": [v for v in base["variants"] if v["name"] == "logreg"]}
    four = {
        **base,
        "variants": [
            {"name": "logreg", "model": "models/churn-logreg.skops", "train": "logistic_regression"},
            {"name": "xgb", "model": "models/churn-xgb.ubj", "train": "xgboost"},
            {"name": "hgb", "model": "models/churn-hgb.skops", "train": "hist_gradient_boosting"},
            {"name": "logreg2", "model": "models/churn-logreg2.skops", "train": "logistic_regression"},
        ],
    }
    # One live variant and XGBoost in shadow, copied 10% or 100% of the requests (section shadow).
    shadowed = [*one["variants"], {**four["variants"][1], "role": "shadow"}]
    shadow10 = {**one, "variants": shadowed, "shadow": {"fraction": 0.1}}
    shadow100 = {**one, "variants": shadowed, "shadow": {"fraction": 1.0}}
    texts = {name: yaml.safe_dump(doc, sort_keys=False)
             for name, doc in (("one", one), ("four", four), ("shadow10", shadow10), ("shadow100", shadow100))}
    # What the trained artifacts depend on: the features, the data recipe and the variants.
    recipe = [base.get("features"), base.get("bootstrap"), one["variants"], four["variants"]]
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    cached = cache / f"models-{key}"
    if cached.is_dir():
        shutil.copytree(cached, work / "models")
    paths = {}
    for name, text in texts.items():
        path = work / f"policy-{name}.yaml"
        path.write_text(text)
        refs = resolve_artifacts(load_policy_file(path), path, work)
        paths[name] = {"policy": str(path), "artifacts": {k: {"path": r.path, "sha256": r.sha256} for k, r in refs.items()}}
    if not cached.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f"models-{key}.tmp-{os.getpid()}"
        shutil.copytree(work / "models", tmp)
        os.replace(tmp, cached)
    paths["features"] = base["features"]
    return paths


def oip_body() -> dict:
    inputs = []
    for name, value in ROW.items():
        if isinstance(value, str):
            inputs.append({"name": name, "shape": [1], "datatype": "BYTES", "data": [value]})
        else:
            inputs.append({"name": name, "shape": [1], "datatype": "FP64", "data": [value]})
    return {"inputs": inputs}


def encoded_row(features: list[dict]) -> list[float]:
    out: list[float] = []
    for f in features:
        v = ROW[f["name"]]
        if f["type"] == "categorical":
            out.extend(1.0 if v == c else 0.0 for c in f["values"])
        else:
            out.append(float(v))
    return out


def write_mlserver_model(artifact: dict, model_dir: Path) -> None:
    import joblib

    from gateway.learning.artifacts import load_model

    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(load_model(artifact["path"], expected_sha256=artifact["sha256"]), model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(json.dumps(
        {"name": EXPERIMENT, "implementation": "mlserver_sklearn.SKLearnModel",
         "parameters": {"uri": "./model.joblib", "version": "v1"}}
    ))


def check_answer(url: str, body: bytes, expect_label: int | None) -> dict:
    status, raw = http("POST", url, body)
    if status != 200:
        raise RuntimeError(f"POST {url}: HTTP {status}: {raw[:500]!r}")
    answer = json.loads(raw)
    label = answer["outputs"][0]["data"][0]
    if expect_label is not None and label != expect_label:
        raise RuntimeError(f"POST {url}: predicted {label}, the model itself says {expect_label}")
    return answer


# -- tools --------------------------------------------------------------------------------------


def ensure_tools() -> dict:
    """wrk and redis-benchmark from Debian; installed when missing and we are root."""
    wanted = {"wrk": "wrk", "redis-benchmark": "redis-tools"}
    missing = [pkg for tool, pkg in wanted.items() if shutil.which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing {' '.join(missing)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True, check=False)
    return {tool: shutil.which(tool) for tool in wanted}
