"""What bench/serving.py measures on a running system's processes (the child and all its
descendants, psutil): resident memory (RSS and PSS, by kind of process), the CPU time each kind
of process spends per request, and py-spy profiles (raw collapsed stacks of the Router replica,
the variant replicas and Serve's proxy) with the summary of where their samples go.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _systems import EXPERIMENT, Proc, log

if TYPE_CHECKING:
    from _serving_load import Loader


# -- memory -------------------------------------------------------------------------------------


def system_memory(proc: Proc) -> dict:
    import psutil

    rss = pss = 0
    by_kind: dict[str, int] = {}
    each = []
    procs = proc.processes()
    mib = 1 << 20
    for p in procs:
        try:
            info = p.memory_full_info()
            cmd = p.cmdline()
            name = " ".join(Path(c).name if c.startswith("/") else c for c in cmd[:3]) or p.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", 0)
        kind = _kind(p, name)
        by_kind[kind] = by_kind.get(kind, 0) + info.rss
        each.append({"pid": p.pid, "name": name[:80], "kind": kind, "rss_mib": round(info.rss / mib, 1),
                     "pss_mib": round(getattr(info, "pss", 0) / mib, 1)})
    return {
        "processes": len(procs),
        "each": sorted(each, key=lambda e: -e["rss_mib"]),
        "rss_mib": round(rss / mib, 1),
        "pss_mib": round(pss / mib, 1),
        "rss_by_kind_mib": {k: round(v / mib, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
    }


def _kind(p, name: str) -> str:
    title = name
    with contextlib.suppress(Exception):
        title = p.name() if not p.cmdline() else " ".join(p.cmdline())
    for key, kind in (
        ("redis-server", "redis-server"),
        ("ServeReplica:gateway:Router", "ingress replica"),
        (f"ServeReplica:gateway:{EXPERIMENT}--", "model replicas"),
        ("ServeReplica:gateway:", "other gateway replicas"),
        ("ServeReplica:bare:BareIngress", "ingress replica"),
        ("ServeReplica:bare:", "model replicas"),
        ("mlserver.cli", "mlserver"),
        ("multiprocessing", "mlserver workers"),
        ("ProxyActor", "serve proxy"),
        ("ServeController", "serve controller"),
        ("gcs_server", "gcs_server"),
        ("raylet", "raylet"),
        ("dashboard", "dashboard/agents"),
        ("runtime_env", "dashboard/agents"),
        ("log_monitor", "log monitor"),
        ("RuntimeEnv", "dashboard/agents"),
        ("monitor.py", "ray monitor"),
        ("ray::", "other ray workers"),
        ("serving.py", "driver"),
    ):
        if key.lower() in title.lower():
            return kind
    return "other"


def cpu_snapshot(proc: Proc) -> dict[int, tuple[str, float]]:
    import psutil

    out = {}
    for p in proc.processes():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            out[p.pid] = (_kind(p, p.name()), t.user + t.system)
    return out


def cpu_per_request(a: dict, b: dict, requests: int) -> dict[str, float]:
    """CPU milliseconds per request by kind of process (a contended machine stretches latency,
    but hardly the CPU each request costs)."""
    if not requests:
        return {}
    out: dict[str, float] = {}
    for pid, (kind, t) in b.items():
        spent = t - a.get(pid, (kind, 0.0))[1]
        out[kind] = out.get(kind, 0.0) + spent
    total = sum(out.values())
    res = {k: round(v * 1e3 / requests, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0}
    res["total"] = round(total * 1e3 / requests, 3)
    return res


def find_processes(proc: Proc, needle: str) -> list:
    import psutil

    out = []
    for p in proc.processes():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if needle in " ".join(p.cmdline()):
                out.append(p)
    return out


# -- profile ------------------------------------------------------------------------------------


def gateway_targets(proc: Proc) -> dict[str, list]:
    return {
        "router": find_processes(proc, "ServeReplica:gateway:Router"),
        "variant": find_processes(proc, f"ServeReplica:gateway:{EXPERIMENT}--"),
        "proxy": find_processes(proc, "ProxyActor"),
    }


@contextlib.contextmanager
def spying(targets: dict[str, list], seconds: float, out_dir: Path, tag: str, summary: dict):
    """py-spy record (raw collapsed stacks, non-blocking) of the first process of each target
    while the body runs; the summaries land in `summary`."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    spies = []
    for name, procs in targets.items():
        if not procs:
            continue
        path = out_dir / f"{tag}-{name}.txt"
        cmd = [pyspy, "record", "-p", str(procs[0].pid), "-d", str(max(1, int(seconds))), "-r", "97",
               "--nonblocking", "--format", "raw", "-o", str(path)]
        spies.append((name, path, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True)))
    try:
        yield
    finally:
        for _, _, sp in spies:
            try:
                sp.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                sp.kill()
                sp.wait()
    for name, path, _ in spies:
        if path.exists():
            summary[name] = summarize_stacks(path)
            log(f"  profile {tag} {name}: {path}")
            for frame, share in summary[name].get("self_by_library", {}).items():
                log(f"    {share:5.1%}  {frame}")
            for frame, share in list(summary[name].get("gateway_inclusive", {}).items())[:10]:
                log(f"    {share:5.1%}  (incl.) {frame}")


def profile_run(proc: Proc, loader: Loader, url: str, body: Path, out_dir: Path) -> dict:
    summary: dict[str, Any] = {}
    loader.warm(url, body, 16)
    with spying(gateway_targets(proc), loader.measure, out_dir, "predict-c16", summary):
        summary["load"] = loader.run(url, body, 16, warm=False, proc=proc)
    return summary


_CATEGORIES = (
    ("(gateway/", "gateway code"),
    ("/gateway/", "gateway code"),
    ("starlette/", "starlette"),
    ("opentelemetry/", "opentelemetry"),
    ("redis/", "redis-py"),
    ("ray/serve/", "ray serve"),
    ("ray/", "ray core"),
    ("sklearn/", "model (sklearn/numpy)"),
    ("numpy/", "model (sklearn/numpy)"),
    ("scipy/", "model (sklearn/numpy)"),
    ("uvicorn/", "uvicorn/httptools"),
    ("httptools/", "uvicorn/httptools"),
    ("asyncio/", "asyncio"),
    ("json/", "json"),
)


def _category(frame: str) -> str:
    for needle, cat in _CATEGORIES:
        if needle in frame:
            return cat
    return "other (stdlib, threads)"


def summarize_stacks(path: Path, top: int = 20) -> dict:
    """Shares of the samples: self time by library (the leaf frame's file), inclusive time of
    the gateway's own functions, and the hottest leaf functions."""
    total = 0
    by_cat: dict[str, int] = {}
    own: dict[str, int] = {}
    leaf: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        cat = _category(frames[-1])
        by_cat[cat] = by_cat.get(cat, 0) + n
        name = re.sub(r" \((?:.*/)?([^/]+?):\d+\)$", r" [\1]", frames[-1])
        leaf[name] = leaf.get(name, 0) + n
        seen = set()
        for f in frames:
            if "(gateway/" in f or "/gateway/" in f:
                fn = re.sub(r" \((?:.*/)?([^/]+?):\d+\)$", r" [\1]", f)
                if fn not in seen:
                    seen.add(fn)
                    own[fn] = own.get(fn, 0) + n

    def order(d: dict) -> dict:
        return {k: round(v / total, 4) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]}

    if not total:
        return {"samples": 0}
    return {"samples": total, "self_by_library": order(by_cat), "gateway_inclusive": order(own), "self": order(leaf)}
