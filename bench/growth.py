#!/usr/bin/env python
"""Growth curves: how the gateway's cost grows with variants, experiments, rows per request,
logged traffic and batch rewards (issue 19). Every figure is a ratio against a baseline measured
in the same run, in alternating rounds (baseline, config, ..., baseline, config, ...), reported as
the median of the per-round ratios with its spread (min-max): the 2-core machine is shared, so
absolute figures drift between minutes.

Usage::

    python bench/growth.py [--only SECTIONS] [--quick] [--rounds N] [--json PATH]
                           [--profile DIR] [--no-report] [--cache-dir DIR]

Sections (--only takes a comma-separated subset; default all, cheapest first):

rows         One gateway (the churn test policy, logistic regression and XGBoost): OIP requests of
             1, 10, 100 and 1,000 rows at 16 connections, the sizes in turn each round; rows/s
             over the 1-row point of the same round.
memory       The default policy (policies/default.yaml, its two variants pointed at the bench's
             trained models). Predictions and batch rewards through HTTP: Redis bytes per logged
             prediction (MEMORY USAGE of the request records, the decision log and the feedback
             stream; INFO used_memory delta as a cross-check). Then --fill predictions with their
             rewards written straight through the store's own scripts (record.lua and reward.lua,
             the calls ExperimentStore makes, captured and replayed in pipelines: HTTP would take
             an hour for 1M), with the record and log entry of a real request as the template;
             used_memory along the way. Appendonly is switched off for the fill (the AOF would
             grow by ~1 GB and fork rewrites; it does not change the dataset's memory).
rewards      Batch rewards through HTTP (POST /v1/rewards, 1,000 items a body, 4 connections:
             bench/_serving_redis.measure_rewards) against redis-benchmark sending the same EVALSHA
             of reward.lua to the same Redis (measure_store_vs_redis_benchmark, which also times
             ExperimentStore.apply_rewards alone: the "52%" of bench/README.md), alternating; the
             records each round used are deleted before the next, so every round meets fresh ones.
variants     Gateways with 2, 8 and 32 variants in one experiment (the churn policy's logistic
             regression and XGBoost models, alternating), one started per round and config:
             throughput at 16 connections, p50 at 1, RSS of the whole system (RSS per added
             variant = the slope from 2 to 32).
experiments  Gateways with 1, 10 and 100 experiments of 2 variants each (one policy file each),
             load spread evenly over them (wrk cycles the paths, bench/serving_post.lua with
             BENCH_PATHS_FILE): throughput at 16 connections, p50 at 1; then idle for --idle
             seconds: Redis commands/s (INFO stats), Redis CPU (INFO cpu) and the CPU of the Router
             replica (psutil) while no request arrives (the refresh, series and monitor loops).

--baseline-src DIR (with experiments): only the largest count, alternating a gateway run from the
source folder DIR (the children's PYTHONPATH) with one from this source: a lever's before/after.

--quick: shorter load points and windows, 200k predictions for the fill: 20 min here (the full run
39 min); the 18 gateway starts (20-55 s each on the shared machine) are most of what remains. The results go to bench/growth.md (between <!-- growth:start --> and <!-- growth:end -->)
and plots bench/growth-*.png, unless --no-report or --only is a strict subset (then only --json).
The systems are started and stopped with bench/serving.py's helpers (its `--role gateway` child),
with this process's PYTHONPATH passed on so that a worktree's source is what runs.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import os
import random
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _report import machine as machine_line
from _report import targets_table, write_readme
from _serving_probes import find_processes, system_memory
from _serving_redis import (
    aof_quiet,
    capture,
    capturing_store,
    counters_delta,
    load_scripts,
    measure_rewards,
    measure_store_vs_redis_benchmark,
    redis_client,
    redis_counters,
)
from _serving_sections import Sections
from _systems import BASE_POLICY, BENCH, EXPERIMENT, ROOT, ROW, ensure_tools, http, log, prepare_models

SECTIONS = ("rows", "memory", "rewards", "variants", "experiments")
ROWS = (1, 10, 100, 1000)
VARIANTS = (2, 8, 32)
EXPERIMENTS = (1, 10, 100)
REPORT = BENCH / "growth.md"
START, END = "<!-- growth:start -->", "<!-- growth:end -->"
MIB = 1 << 20


# -- small helpers ------------------------------------------------------------------------------


def spread(values: list[float], nd: int = 3) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(vals), nd), "min": round(min(vals), nd),
            "max": round(max(vals), nd), "n": len(vals)}


def ratios(rounds: list[dict], metric: str, base: Any) -> dict[str, dict]:
    """Per config, the spread of metric(config) / metric(base) over the rounds."""
    configs = [c for c in rounds[0] if c != "round"] if rounds else []
    out = {}
    for c in configs:
        vals = []
        for r in rounds:
            a, b = r.get(c, {}).get(metric), r.get(base, {}).get(metric)
            vals.append(a / b if a is not None and b else None)
        out[str(c)] = spread(vals)
    return out


@contextlib.contextmanager
def paths_file(path: Path | None):
    """Have bench/serving_post.lua cycle through the paths in `path` (wrk reads the environment)."""
    old = os.environ.get("BENCH_PATHS_FILE")
    if path is not None:
        os.environ["BENCH_PATHS_FILE"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BENCH_PATHS_FILE", None)
        else:
            os.environ["BENCH_PATHS_FILE"] = old


def oip_rows(n: int) -> dict:
    """An OIP body of n rows (the serving row with its tenure varied)."""
    inputs = []
    for name, value in ROW.items():
        if isinstance(value, str):
            inputs.append({"name": name, "shape": [n], "datatype": "BYTES", "data": [value] * n})
        else:
            data = [float(value + (i % 50) if name == "tenure" else value) for i in range(n)]
            inputs.append({"name": name, "shape": [n], "datatype": "FP64", "data": data})
    return {"inputs": inputs}


def cpu_seconds(procs: list) -> float:
    import psutil

    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def redis_cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# -- the run ------------------------------------------------------------------------------------


class Growth(Sections):
    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        # The children run serving.py's gateway role; keep this worktree's source first for them.
        self.child_env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}

    # -- policies -----------------------------------------------------------------------------

    def policy_doc(self, n_variants: int, experiment: str = EXPERIMENT) -> dict:
        import yaml

        base = yaml.safe_load(BASE_POLICY.read_text())
        arts = self.models["four"]["artifacts"]
        kinds = ("logreg", "xgb")
        variants = [{"name": f"{kinds[i % 2]}{i // 2 if i >= 2 else ''}", "model": arts[kinds[i % 2]]["path"]}
                    for i in range(n_variants)]
        return {**base, "experiment": experiment, "variants": variants}

    def write_policy(self, doc: dict, path: Path) -> str:
        import yaml

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return str(path)

    def start(self, name: str, policy: str):
        return self.gateway(name, policy, env=self.child_env)

    def execute(self) -> dict:
        started = time.perf_counter()
        tools = ensure_tools()
        if not tools["wrk"]:
            raise SystemExit("wrk is needed (apt-get install wrk): the experiments section cycles paths with it")
        self.results["tools"] = tools
        log(f"work dir {self.work}; training the models")
        self.models = prepare_models(self.work, Path(self.args.cache_dir))
        errors = {}
        for section in self.args.only:
            t0 = time.perf_counter()
            try:
                getattr(self, f"section_{section}")()
            except Exception as err:  # noqa: BLE001 - one section failing must not lose the others
                import traceback

                errors[section] = f"{type(err).__name__}: {err}"
                log(f"section {section} failed: {traceback.format_exc()}")
            self.results.setdefault("section_seconds", {})[section] = round(time.perf_counter() - t0, 1)
        self.results["errors"] = errors
        self.results["wall_s"] = round(time.perf_counter() - started, 1)
        return self.results

    # -- rows ---------------------------------------------------------------------------------

    def section_rows(self) -> None:
        proc, info = self.start("growth-rows", self.write_policy(self.policy_doc(2), self.work / "rows" / "churn.yaml"))
        try:
            url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
            bodies = {}
            for n in ROWS:
                bodies[n] = self.work / f"rows-{n}.json"
                bodies[n].write_text(json.dumps(oip_rows(n), separators=(",", ":")))
                status, raw = http("POST", url, bodies[n].read_bytes(), timeout=30)
                shape = json.loads(raw)["outputs"][0]["shape"] if status == 200 else None
                if shape != [n]:
                    raise RuntimeError(f"{n} rows: HTTP {status}, shape {shape}: {raw[:300]!r}")
            rounds = []
            for r in range(self.args.rounds):
                fig: dict[Any, Any] = {"round": r}
                for n in ROWS:
                    log(f"rows round {r}: {n} rows a request")
                    p = self.loader.run(url, bodies[n], 16, proc=proc)
                    fig[n] = {"rps": p["rps"], "rows_per_s": round(p["rps"] * n, 1), "p50_ms": p["p50_ms"],
                              "p99_ms": p["p99_ms"], "non_2xx": p["non_2xx"],
                              "cpu_ms_per_request": p.get("cpu_ms_per_request", {}).get("total")}
                rounds.append(fig)
            self.results["rows"] = {"rounds": rounds, "rows_per_s_ratio": ratios(rounds, "rows_per_s", 1),
                                    "connections": 16}
            log(f"  rows/s ratios: {self.results['rows']['rows_per_s_ratio']}")
        finally:
            self.stop(proc)

    # -- memory -------------------------------------------------------------------------------

    def default_policy(self) -> str:
        import yaml

        doc = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
        arts = self.models["four"]["artifacts"]
        for v in doc["variants"]:
            v["model"] = arts[v["name"]]["path"]
        return self.write_policy(doc, self.work / "default" / "default.yaml")

    def section_memory(self) -> None:
        from gateway.store import keys

        proc, info = self.start("growth-memory", self.default_policy())
        client = redis_client(info["redis_url"])
        try:
            url = info["url"]
            infer = f"{url}/v2/models/{EXPERIMENT}/infer"
            body = self.body_file.read_bytes()
            n = self.args.http_predictions
            time.sleep(1.0)
            aof_quiet(client)
            used0 = client.info("memory")["used_memory"]

            def one(_):
                status, raw = http("POST", infer, body)
                if status != 200:
                    return None
                a = json.loads(raw)
                return a["id"], a["parameters"]["variant"], a["parameters"]["reward_token"]

            t0 = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                served = [x for x in pool.map(one, range(n)) if x]
            log(f"  {len(served)} predictions through HTTP in {time.perf_counter() - t0:.1f}s")
            used1 = client.info("memory")["used_memory"]
            rng = random.Random(7)
            accepted = 0
            for start in range(0, len(served), 1000):
                items = [{"request_id": rid, "token": tok, "reward": rng.randint(0, 1)}
                         for rid, _, tok in served[start : start + 1000]]
                status, raw = http("POST", f"{url}/v1/rewards", json.dumps({"rewards": items}).encode(), timeout=60)
                if status == 200:
                    accepted += int(json.loads(raw).get("accepted", 0))
            used2 = client.info("memory")["used_memory"]
            sample = [rid for rid, _, _ in served[:: max(1, len(served) // 300)]]
            rec = [client.memory_usage(keys.request(EXPERIMENT, rid), samples=0) or 0 for rid in sample]
            log_bytes = client.memory_usage(keys.decision_log(EXPERIMENT), samples=0) or 0
            fb_bytes = client.memory_usage(keys.feedback(EXPERIMENT), samples=0) or 0
            pend = client.memory_usage(keys.pending(EXPERIMENT), samples=0) or 0
            k = len(served)
            per = {
                "record_bytes": round(statistics.mean(rec), 1),
                "decision_log_bytes": round(log_bytes / k, 1),
                "feedback_bytes": round(fb_bytes / max(1, accepted), 1),
                "pending_bytes": round(pend / k, 1),
            }
            per["total_bytes"] = round(sum(per.values()), 1)
            template = client.hgetall(keys.request(EXPERIMENT, served[0][0]))
            entry = client.xrange(keys.decision_log(EXPERIMENT), count=1)
            fb_entry = client.xrange(keys.feedback(EXPERIMENT), count=1)
            self.results["memory_http"] = {
                "predictions": k, "rewards_accepted": accepted, "per_prediction": per,
                "used_memory_delta_per_prediction": round((used1 - used0) / k, 1),
                "used_memory_delta_per_reward": round((used2 - used1) / max(1, accepted), 1),
                "used_memory_delta_per_rewarded_prediction": round((used2 - used0) / k, 1),
                "record_ttl_s": client.ttl(keys.request(EXPERIMENT, served[0][0])),
                "record_fields": {f: len(v) for f, v in template.items()},
                "log_entry_fields": {f: len(v) for f, v in entry[0][1].items()} if entry else {},
                "feedback_entry_fields": {f: len(v) for f, v in fb_entry[0][1].items()} if fb_entry else {},
            }
            log(f"  per prediction: {per}; used_memory delta {self.results['memory_http']}")
            rid0 = served[0][0]
            self.results["memory_fill"] = self.fill(client, template, entry[0][1] if entry else {}, rid0)
            self.results["memory_system"] = system_memory(proc)
        finally:
            client.close()
            self.stop(proc)

    def fill(self, client, template: dict, log_entry: dict, rid0: str) -> dict:
        """`--fill` predictions with their rewards through the store's scripts (captured from
        ExperimentStore's own calls and replayed in pipelines), used_memory along the way."""
        from gateway.store import keys
        from gateway.store.experiments import RewardItem, RewardRules
        from gateway.store.limits import DECISION_LOG_MAXLEN, FEEDBACK_MAXLEN

        total = self.args.fill
        store, calls, _ = capturing_store()
        load_scripts(client)
        client.config_set("appendonly", "no")
        skip = {"variant", "nonce", "dl", "reward", "rewarded_at", "label", "defaulted", "late", "lr"}
        record = {f: v for f, v in template.items() if f not in skip}
        ttl = 86400.0
        used_start = client.info("memory")["used_memory"]
        curve = [{"predictions": 0, "used_memory_mib": round(used_start / MIB, 1)}]
        chunk = 10_000
        checkpoints = {round(total * f) for f in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)}
        rules = {EXPERIMENT: RewardRules(window_s=ttl)}
        rng = random.Random(11)
        t0 = time.perf_counter()

        def send() -> None:
            for s in range(0, len(calls), 2000):
                pipe = client.pipeline(transaction=False)
                for call in calls[s : s + 2000]:
                    pipe.execute_command(*call)
                pipe.execute()
            calls.clear()

        done = 0
        while done < total:
            ids = [f"fill-{i:031d}" for i in range(done, min(total, done + chunk))]  # as long as a uuid
            variants = ["logreg" if i % 2 else "xgb" for i in range(len(ids))]

            async def build() -> None:
                for rid, v in zip(ids, variants):
                    entry = {f: (rid if x == rid0 else x) for f, x in log_entry.items()}
                    await capture(store.record_prediction(EXPERIMENT, rid, v, record, ttl, entry))
                now = time.time()
                for s in range(0, len(ids), 1000):
                    items = [RewardItem(EXPERIMENT, rid, v, float(rng.randint(0, 1)))
                             for rid, v in zip(ids[s : s + 1000], variants[s : s + 1000])]
                    await capture(store.apply_rewards(items, now, rules))

            asyncio.run(build())
            send()
            done += len(ids)
            if any(done >= c > done - len(ids) for c in checkpoints):
                used = client.info("memory")["used_memory"]
                curve.append({"predictions": done, "used_memory_mib": round(used / MIB, 1),
                              "log_len": client.xlen(keys.decision_log(EXPERIMENT)),
                              "feedback_len": client.xlen(keys.feedback(EXPERIMENT)),
                              "s": round(time.perf_counter() - t0, 1)})
                log(f"  fill: {done:,} predictions, used_memory {used / MIB:.0f} MiB")
        mem = client.info("memory")
        out = {
            "predictions": total,
            "method": "store scripts (record.lua, reward.lua) replayed in pipelines of 2,000",
            "used_memory_mib": round(mem["used_memory"] / MIB, 1),
            "used_memory_rss_mib": round(mem["used_memory_rss"] / MIB, 1),
            "added_mib": round((mem["used_memory"] - used_start) / MIB, 1),
            "added_bytes_per_prediction": round((mem["used_memory"] - used_start) / total, 1),
            "decision_log_mib": round((client.memory_usage(keys.decision_log(EXPERIMENT), samples=0) or 0) / MIB, 1),
            "feedback_mib": round((client.memory_usage(keys.feedback(EXPERIMENT), samples=0) or 0) / MIB, 1),
            "record_bytes": client.memory_usage(keys.request(EXPERIMENT, f"fill-{1:031d}"), samples=0),
            "log_len": client.xlen(keys.decision_log(EXPERIMENT)),
            "feedback_len": client.xlen(keys.feedback(EXPERIMENT)),
            "caps": {"DECISION_LOG_MAXLEN": DECISION_LOG_MAXLEN, "FEEDBACK_MAXLEN": FEEDBACK_MAXLEN,
                     "record_ttl_s (reward.window_s)": ttl},
            "dbsize": client.dbsize(),
            "curve": curve,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        log(f"  after {total:,}: used_memory {out['used_memory_mib']} MiB (log {out['decision_log_mib']} MiB, "
            f"feedback {out['feedback_mib']} MiB, {out['dbsize']:,} keys)")
        return out

    # -- rewards ------------------------------------------------------------------------------

    def section_rewards(self) -> None:
        proc, info = self.start("growth-rewards", self.write_policy(self.policy_doc(2), self.work / "rw" / "churn.yaml"))
        client = redis_client(info["redis_url"])
        try:
            rounds = []
            for r in range(self.args.rounds):
                log(f"rewards round {r}: redis-benchmark and the store path")
                bench = measure_store_vs_redis_benchmark(info["redis_url"], seconds=min(4.0, self.args.measure),
                                                         calls=self.args.store_calls)
                log(f"rewards round {r}: HTTP")
                web = measure_rewards(client, info["url"], self.work, min(2.0, self.args.warmup), self.args.measure,
                                      self.args.reward_records, proc)
                rounds.append({"round": r,
                               "redis_benchmark": {"per_s": bench.get("redis_benchmark_evalsha_per_s")},
                               "store": {"per_s": bench.get("store_rewards_per_s")},
                               "http": {"per_s": web["rewards_per_s"], "p50_batch_ms": web["p50_batch_ms"],
                                        "cpu_ms_per_1000": web.get("cpu_ms_per_1000_rewards")}})
                self._drop_reward_keys(client)
            out: dict[str, Any] = {"rounds": rounds, "share": ratios(rounds, "per_s", "redis_benchmark"),
                                   "redis_benchmark_args": bench.get("redis_benchmark_args")}
            if self.args.profile:
                log("rewards: an extra HTTP run under py-spy (not counted)")
                out["profile"] = measure_rewards(client, info["url"], self.work, min(2.0, self.args.warmup),
                                                 self.args.measure, self.args.reward_records, proc,
                                                 self.args.profile).get("profile")
                self._drop_reward_keys(client)
            self.results["rewards"] = out
            log(f"  shares of redis-benchmark: {out['share']}")
        finally:
            client.close()
            self.stop(proc)

    def _drop_reward_keys(self, client) -> None:
        from gateway.store import keys

        t0 = time.perf_counter()
        n = 0
        for prefix in ("rw-", "st-", "rb-"):
            batch = []
            for key in client.scan_iter(match=keys.request(EXPERIMENT, prefix) + "*", count=10_000):
                batch.append(key)
                if len(batch) >= 10_000:
                    n += client.unlink(*batch)
                    batch = []
            if batch:
                n += client.unlink(*batch)
        log(f"  dropped {n:,} request records in {time.perf_counter() - t0:.1f}s")

    # -- variants -----------------------------------------------------------------------------

    def section_variants(self) -> None:
        policies = {n: self.write_policy(self.policy_doc(n), self.work / f"variants-{n}" / "churn.yaml")
                    for n in VARIANTS}
        rounds = []
        for r in range(self.args.rounds):
            fig: dict[Any, Any] = {"round": r}
            for n in VARIANTS:
                proc, info = self.start(f"growth-variants{n}-r{r}", policies[n])
                try:
                    url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
                    c16 = self.loader.run(url, self.body_file, 16, proc=proc)
                    time.sleep(0.5)
                    mem = system_memory(proc)
                    c1 = self.loader.run(url, self.body_file, 1, proc=proc)
                    fig[n] = {"rps": c16["rps"], "p50_ms": c1["p50_ms"], "p50_ms_c16": c16["p50_ms"],
                              "p99_ms_c16": c16["p99_ms"], "rss_mib": mem["rss_mib"], "pss_mib": mem["pss_mib"],
                              "router_rss_mib": mem["rss_by_kind_mib"].get("ingress replica"),
                              "cpu_ms_per_request": c16.get("cpu_ms_per_request", {}).get("total")}
                finally:
                    self.stop(proc)
            rounds.append(fig)
            log(f"  variants round {r}: " + ", ".join(f"{n}: {fig[n]['rps']:.0f} req/s, p50 {fig[n]['p50_ms']:.2f} ms, "
                                                      f"RSS {fig[n]['rss_mib']:.0f} MiB" for n in VARIANTS))
        lo, hi = VARIANTS[0], VARIANTS[-1]
        per_variant = [(f[hi]["rss_mib"] - f[lo]["rss_mib"]) / (hi - lo) for f in rounds]
        router_per_variant = [(f[hi]["router_rss_mib"] - f[lo]["router_rss_mib"]) / (hi - lo) for f in rounds
                              if f[hi]["router_rss_mib"] and f[lo]["router_rss_mib"]]
        self.results["variants"] = {
            "rounds": rounds,
            "throughput_ratio": ratios(rounds, "rps", lo),
            "p50_ratio": ratios(rounds, "p50_ms", lo),
            "rss_mib_per_added_variant": spread(per_variant, 1),
            "router_rss_mib_per_added_variant": spread(router_per_variant, 1),
        }
        log(f"  variants: {self.results['variants']['throughput_ratio']} p50 {self.results['variants']['p50_ratio']}")

    # -- experiments --------------------------------------------------------------------------

    def section_experiments(self) -> None:
        if self.args.baseline_src:
            # The lever's own measure: the largest count, this source against the baseline's.
            n = EXPERIMENTS[-1]
            base_env = {"PYTHONPATH": f"{Path(self.args.baseline_src).resolve()}:{ROOT}"}
            rounds = self._experiment_rounds([("baseline", n, base_env), ("this", n, self.child_env)])
            self.results["experiments_vs_baseline"] = {
                "rounds": rounds, "experiments": n, "baseline_src": self.args.baseline_src,
                "idle_window_s": self.args.idle,
                **{f"{m}_ratio": ratios(rounds, m, "baseline") for m in (
                    "rps", "p50_ms", "cpu_ms_per_request", "idle_redis_commands_per_s", "idle_router_cpu_pct",
                    "idle_replicas_cpu_pct")},
            }
            log(f"  this / baseline: {self.results['experiments_vs_baseline']}")
            return
        rounds = self._experiment_rounds([(n, n, self.child_env) for n in EXPERIMENTS])
        lo = EXPERIMENTS[0]
        self.results["experiments"] = {
            "rounds": rounds,
            "idle_window_s": self.args.idle,
            **{f"{m}_ratio": ratios(rounds, m, lo) for m in (
                "rps", "p50_ms", "idle_redis_commands_per_s", "idle_redis_cpu_pct", "idle_router_cpu_pct",
                "idle_replicas_cpu_pct")},
        }
        log(f"  experiments: throughput {self.results['experiments']['rps_ratio']}")

    def _experiment_rounds(self, configs: list[tuple[Any, int, dict]]) -> list[dict]:
        """Alternating rounds over (label, experiments, child environment)."""
        folders, paths = {}, {}
        for n in {c[1] for c in configs}:
            folder = self.work / f"experiments-{n}"
            names = [EXPERIMENT if i == 0 else f"{EXPERIMENT}-{i:03d}" for i in range(n)]
            for name in names:
                self.write_policy(self.policy_doc(2, name), folder / f"{name}.yaml")
            folders[n] = str(folder)
            paths[n] = self.work / f"paths-{n}.txt"
            paths[n].write_text("".join(f"/v2/models/{name}/infer\n" for name in names))
        rounds = []
        for r in range(self.args.rounds):
            fig: dict[Any, Any] = {"round": r}
            for label, n, env in configs:
                proc, info = self.gateway(f"growth-experiments-{label}-r{r}", folders[n], env=env)
                client = redis_client(info["redis_url"])
                try:
                    url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
                    with paths_file(paths[n]):
                        c16 = self.loader.run(url, self.body_file, 16, proc=proc)
                        c1 = self.loader.run(url, self.body_file, 1, proc=proc)
                    time.sleep(2.0)  # the last requests' records written, the loops back to idle
                    idle = self.idle_cost(client, proc, self.args.idle)
                    fig[label] = {"rps": c16["rps"], "p50_ms": c1["p50_ms"], "p99_ms_c16": c16["p99_ms"],
                                  "non_2xx": c16["non_2xx"] + c1["non_2xx"],
                                  "cpu_ms_per_request": c16.get("cpu_ms_per_request", {}).get("total"), **idle}
                finally:
                    client.close()
                    self.stop(proc)
            rounds.append(fig)
            log(f"  experiments round {r}: " + ", ".join(
                f"{c[0]}: {fig[c[0]]['rps']:.0f} req/s, p50 {fig[c[0]]['p50_ms']:.2f} ms, idle "
                f"{fig[c[0]]['idle_redis_commands_per_s']:.0f} cmd/s, router {fig[c[0]]['idle_router_cpu_pct']:.1f}% CPU"
                for c in configs))
        return rounds

    def idle_cost(self, client, proc, seconds: float) -> dict:
        routers = find_processes(proc, "ServeReplica:gateway:Router")
        replicas = find_processes(proc, "ServeReplica:gateway:")
        a, ra, ca, cr = redis_counters(client), redis_cpu(client), cpu_seconds(routers), cpu_seconds(replicas)
        t0 = time.perf_counter()
        time.sleep(seconds)
        b, rb, cb, crb = redis_counters(client), redis_cpu(client), cpu_seconds(routers), cpu_seconds(replicas)
        dt = time.perf_counter() - t0
        delta = counters_delta(a, b)
        by_cmd = {k: round(v / dt, 1) for k, v in sorted(delta.items(), key=lambda kv: -kv[1])
                  if not k.startswith("_") and k != "info" and v / dt >= 0.5}
        return {
            "idle_redis_commands_per_s": round((delta["_commands"] - delta.get("info", 0)) / dt, 1),
            "idle_redis_commands_by_kind": by_cmd,
            "idle_redis_cpu_pct": round(100 * (rb - ra) / dt, 2),
            "idle_router_cpu_pct": round(100 * (cb - ca) / dt, 2),
            "idle_replicas_cpu_pct": round(100 * (crb - cr) / dt, 2),
        }


# -- report -------------------------------------------------------------------------------------


def _r(s: dict | None) -> str:
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"


def _med(rounds: list[dict], config: Any, metric: str) -> float | None:
    vals = [r[config][metric] for r in rounds if config in r and r[config].get(metric) is not None]
    return statistics.median(vals) if vals else None


def render(results: dict, args: argparse.Namespace) -> tuple[str, list[tuple[str, str, bool]]]:
    lines = [
        "## Growth curves (`bench/growth.py`)",
        "",
        f"- date: {results['date']}",
        f"- machine: {machine_line()}; shared with other work (1-minute load average {results['load_avg_at_start']} "
        "at the start)",
        f"- command: `{results['command']}` (wall time {results.get('wall_s')} s)",
        f"- protocol: {args.rounds} alternating rounds (the configs in turn, each round's ratio to its own "
        f"baseline), median [min, max] of the ratios; {args.warmup:g} s warm-up dropped, {args.measure:g} s "
        "measured per load point, wrk -t1",
        "",
    ]
    goals: list[tuple[str, str, bool]] = []
    rows = results.get("rows")
    if rows:
        lines += ["### Rows per request (16 connections)", "",
                  "| rows a request | rows/s (median) | ratio to 1 row | p50 ms (median) |", "| --- | --- | --- | --- |"]
        for n in ROWS:
            lines.append(f"| {n:,} | {_med(rows['rounds'], n, 'rows_per_s'):,.0f} | {_r(rows['rows_per_s_ratio'][str(n)])} "
                         f"| {_med(rows['rounds'], n, 'p50_ms'):.1f} |")
        lines.append("")
        s = rows["rows_per_s_ratio"]["100"]
        goals.append(("rows/s at 100 rows >= 20x at 1", _r(s), bool(s["median"] and s["median"] >= 20)))
    var = results.get("variants")
    if var:
        lines += ["### Variants per experiment (placement router)", "",
                  "| variants | req/s at 16 (median) | throughput ratio | p50 at 1, ms (median) | p50 ratio | "
                  "CPU ms/request at 16 (all processes) | ratio | RSS MiB (median) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        cpu = ratios(var["rounds"], "cpu_ms_per_request", VARIANTS[0])
        for n in VARIANTS:
            lines.append(f"| {n} | {_med(var['rounds'], n, 'rps'):,.0f} | {_r(var['throughput_ratio'][str(n)])} | "
                         f"{_med(var['rounds'], n, 'p50_ms'):.2f} | {_r(var['p50_ratio'][str(n)])} | "
                         f"{_med(var['rounds'], n, 'cpu_ms_per_request'):.2f} | {_r(cpu[str(n)])} | "
                         f"{_med(var['rounds'], n, 'rss_mib'):,.0f} |")
        lines.append("")
        s = var["throughput_ratio"][str(VARIANTS[-1])]
        goals.append((f"throughput at {VARIANTS[-1]} variants >= 0.9 of {VARIANTS[0]}", _r(s),
                      bool(s["median"] and s["median"] >= 0.9)))
        m = var["rss_mib_per_added_variant"]
        goals.append(("RSS per added variant <= 30 MiB", f"{m['median']} MiB [{m['min']}, {m['max']}] (whole system; "
                      f"router replica alone {var['router_rss_mib_per_added_variant'].get('median')} MiB)",
                      bool(m["median"] is not None and m["median"] <= 30)))
    exp = results.get("experiments")
    if exp:
        lines += [f"### Experiments on one gateway (2 variants each, load spread evenly; idle window {exp['idle_window_s']:g} s)", "",
                  "| experiments | req/s at 16 | throughput ratio | p50 at 1, ms | p50 ratio | idle Redis cmd/s | ratio | "
                  "idle Redis CPU % | idle router CPU % | ratio |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for n in EXPERIMENTS:
            k = str(n)
            lines.append(
                f"| {n} | {_med(exp['rounds'], n, 'rps'):,.0f} | {_r(exp['rps_ratio'][k])} | {_med(exp['rounds'], n, 'p50_ms'):.2f} | "
                f"{_r(exp['p50_ms_ratio'][k])} | {_med(exp['rounds'], n, 'idle_redis_commands_per_s'):,.0f} | "
                f"{_r(exp['idle_redis_commands_per_s_ratio'][k])} | {_med(exp['rounds'], n, 'idle_redis_cpu_pct'):.1f} | "
                f"{_med(exp['rounds'], n, 'idle_router_cpu_pct'):.1f} | {_r(exp['idle_router_cpu_pct_ratio'][k])} |")
        lines.append("")
        last = exp["rounds"][-1][EXPERIMENTS[-1]]["idle_redis_commands_by_kind"]
        lines += [f"Idle Redis commands/s by kind at {EXPERIMENTS[-1]} experiments (last round): "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in list(last.items())[:8]), ""]
        s = exp["rps_ratio"][str(EXPERIMENTS[-1])]
        goals.append((f"throughput at {EXPERIMENTS[-1]} experiments >= 0.8 of 1", _r(s), bool(s["median"] and s["median"] >= 0.8)))
        n = EXPERIMENTS[-1]
        cmd, cpu = exp["idle_redis_commands_per_s_ratio"][str(n)], exp["idle_router_cpu_pct_ratio"][str(n)]
        goals.append((f"idle cost grows less than linearly ({n}x experiments: ratio < {n})",
                      f"Redis commands {_r(cmd)}, router CPU {_r(cpu)}",
                      bool(cmd["median"] and cmd["median"] < n and cpu["median"] and cpu["median"] < n)))
    vs = results.get("experiments_vs_baseline")
    if vs:
        lines += [f"### {vs['experiments']} experiments: this source against `{vs['baseline_src']}` (alternating, "
                  f"idle window {vs['idle_window_s']:g} s)", "",
                  "| measure | baseline (median) | this (median) | this / baseline |", "| --- | --- | --- | --- |"]
        for m, label in (("rps", "req/s at 16 connections"), ("p50_ms", "p50 at 1 connection, ms"),
                         ("cpu_ms_per_request", "CPU ms per request at 16 (all processes)"),
                         ("idle_router_cpu_pct", "idle router CPU %"), ("idle_replicas_cpu_pct", "idle CPU % of all replicas"),
                         ("idle_redis_commands_per_s", "idle Redis commands/s")):
            b, h = _med(vs["rounds"], "baseline", m), _med(vs["rounds"], "this", m)
            lines.append(f"| {label} | {b if b is None else round(b, 2)} | {h if h is None else round(h, 2)} | "
                         f"{_r(vs[f'{m}_ratio']['this'])} |")
        lines.append("")
    mem = results.get("memory_http")
    if mem:
        per = mem["per_prediction"]
        lines += ["### Redis memory per logged prediction (default policy)", "",
                  "| part | bytes per prediction |", "| --- | --- |",
                  f"| request record (hash, kept for reward.window_s = {mem['record_ttl_s']:,} s) | {per['record_bytes']:,.0f} |",
                  f"| decision log entry (stream) | {per['decision_log_bytes']:,.0f} |",
                  f"| feedback entry (stream) | {per['feedback_bytes']:,.0f} |",
                  f"| pending set | {per['pending_bytes']:,.0f} |",
                  f"| **total** (MEMORY USAGE) | **{per['total_bytes']:,.0f}** |",
                  f"| cross-check: INFO used_memory delta, prediction + reward | {mem['used_memory_delta_per_rewarded_prediction']:,.0f} |",
                  "", f"Measured over {mem['predictions']:,} predictions and {mem['rewards_accepted']:,} rewards through HTTP.", ""]
        goals.append(("Redis bytes per logged prediction <= 1 KiB", f"{per['total_bytes']:,.0f} B",
                      per["total_bytes"] <= 1024))
    fill = results.get("memory_fill")
    if fill:
        lines += [f"### Redis after {fill['predictions']:,} predictions with rewards ({fill['method']})", "",
                  "| predictions | used_memory MiB | decision log entries | feedback entries |", "| --- | --- | --- | --- |"]
        for c in fill["curve"]:
            lines.append(f"| {c['predictions']:,} | {c['used_memory_mib']:,.0f} | {c.get('log_len', 0):,} | {c.get('feedback_len', 0):,} |")
        lines += ["", f"At the end: used_memory {fill['used_memory_mib']:,} MiB (RSS {fill['used_memory_rss_mib']:,}), of which "
                  f"decision log {fill['decision_log_mib']} MiB and feedback {fill['feedback_mib']} MiB; one record "
                  f"{fill['record_bytes']} B; {fill['dbsize']:,} keys. Caps: {fill['caps']}.", ""]
    sysmem = results.get("memory_system")
    if sysmem:
        lines += [f"Whole system RSS with the default policy: {sysmem['rss_mib']:,.0f} MiB over {sysmem['processes']} processes.", ""]
    rw = results.get("rewards")
    if rw:
        lines += ["### Batch rewards: HTTP and the store path as a share of redis-benchmark EVALSHA (same script, same Redis)", "",
                  "| round | redis-benchmark /s | store path /s | HTTP /s (1,000 a body, 4 conn) | HTTP share |", "| --- | --- | --- | --- | --- |"]
        for r in rw["rounds"]:
            b, s, h = r["redis_benchmark"]["per_s"], r["store"]["per_s"], r["http"]["per_s"]
            lines.append(f"| {r['round']} | {b:,.0f} | {s:,.0f} | {h:,.0f} | {h / b:.0%} |" if b else f"| {r['round']} | n/a | | | |")
        lines += ["", f"Shares (median [min, max]): HTTP {_r(rw['share']['http'])}, store path {_r(rw['share']['store'])}. "
                  f"redis-benchmark: `{rw.get('redis_benchmark_args')}`.", ""]
        s = rw["share"]["http"]
        goals.append(("HTTP batch rewards >= 80% of redis-benchmark EVALSHA", _r(s), bool(s["median"] and s["median"] >= 0.8)))
    lines += targets_table("### Goals", goals)
    return "\n".join(lines), goals


def plots(results: dict) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plots")
        return []
    made = []

    def errbars(ax, xs, stats, label):
        med = [stats[str(x)]["median"] for x in xs]
        lo = [m - stats[str(x)]["min"] for x, m in zip(xs, med)]
        hi = [stats[str(x)]["max"] - m for x, m in zip(xs, med)]
        ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=4, label=label)

    def save(fig, name):
        path = BENCH / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(str(path))

    if results.get("rows"):
        fig, ax = plt.subplots(figsize=(5.5, 4))
        errbars(ax, ROWS, results["rows"]["rows_per_s_ratio"], "rows/s, ratio to 1 row")
        ax.plot(ROWS, ROWS, "k:", label="linear (y = rows)")
        ax.axhline(20, color="r", ls="--", lw=0.8, label="goal at 100 rows: 20x")
        ax.set(xscale="log", yscale="log", xlabel="rows per request", ylabel="ratio", title="Rows per request (16 conn)")
        ax.legend(fontsize=8)
        save(fig, "growth-rows.png")
    if results.get("variants"):
        fig, ax = plt.subplots(figsize=(5.5, 4))
        errbars(ax, VARIANTS, results["variants"]["throughput_ratio"], "throughput at 16 conn")
        errbars(ax, VARIANTS, results["variants"]["p50_ratio"], "p50 at 1 conn")
        ax.axhline(0.9, color="r", ls="--", lw=0.8, label="goal: throughput >= 0.9")
        ax.set(xscale="log", xlabel="variants in the experiment", ylabel="ratio to 2 variants", title="Variants")
        ax.set_xticks(VARIANTS, [str(v) for v in VARIANTS])
        ax.legend(fontsize=8)
        save(fig, "growth-variants.png")
    if results.get("experiments"):
        e = results["experiments"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        errbars(a1, EXPERIMENTS, e["rps_ratio"], "throughput at 16 conn")
        errbars(a1, EXPERIMENTS, e["p50_ms_ratio"], "p50 at 1 conn")
        a1.axhline(0.8, color="r", ls="--", lw=0.8, label="goal: throughput >= 0.8")
        a1.set(xscale="log", xlabel="experiments", ylabel="ratio to 1 experiment", title="Experiments: load")
        a1.legend(fontsize=8)
        errbars(a2, EXPERIMENTS, e["idle_redis_commands_per_s_ratio"], "idle Redis commands/s")
        errbars(a2, EXPERIMENTS, e["idle_router_cpu_pct_ratio"], "idle router CPU")
        a2.plot(EXPERIMENTS, EXPERIMENTS, "k:", label="linear")
        a2.set(xscale="log", yscale="log", xlabel="experiments", ylabel="ratio to 1 experiment", title="Experiments: idle cost")
        a2.legend(fontsize=8)
        for a in (a1, a2):
            a.set_xticks(EXPERIMENTS, [str(v) for v in EXPERIMENTS])
        save(fig, "growth-experiments.png")
    if results.get("memory_fill"):
        f = results["memory_fill"]
        fig, ax = plt.subplots(figsize=(5.5, 4))
        ax.plot([c["predictions"] for c in f["curve"]], [c["used_memory_mib"] for c in f["curve"]], marker="o")
        ax.set(xlabel="predictions with rewards (default policy)", ylabel="Redis used_memory, MiB",
               title="Redis memory as traffic is logged")
        save(fig, "growth-memory.png")
    return made


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="shorter load points and windows (~15-20 minutes in all)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (at least 3 for a spread)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up dropped per load point (3; quick 1.5)")
    p.add_argument("--measure", type=float, help="seconds measured per load point (8; quick 4)")
    p.add_argument("--idle", type=float, help="idle window of the experiments section (20; quick 10)")
    p.add_argument("--fill", type=int, help="predictions with rewards written through the store (1M; quick 200k)")
    p.add_argument("--http-predictions", type=int, help="predictions through HTTP for bytes/prediction (10k; quick 3k)")
    p.add_argument("--reward-records", type=int, help="records prepared for each HTTP reward run (120k; quick 60k)")
    p.add_argument("--store-calls", type=int, help="calls of each redis-benchmark / store run (60k; quick 30k)")
    p.add_argument("--baseline-src", help="experiments: only the largest count, alternating the gateway from this "
                   "source folder (PYTHONPATH for the children) and from this one; ratios this / baseline")
    p.add_argument("--profile", help="an extra HTTP reward run under py-spy, stacks into this folder")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--no-report", action="store_true", help="do not write bench/growth.md and the plots")
    p.add_argument("--cache-dir", default=os.environ.get("GATEWAY_BENCH_CACHE", "/tmp/gateway-bench-cache"))
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--render", metavar="JSON", help="only write the report and plots from a saved --json")
    args = p.parse_args(argv)
    q = args.quick
    for name, full, quick in (("warmup", 3.0, 1.5), ("measure", 8.0, 4.0), ("idle", 20.0, 10.0), ("fill", 1_000_000, 200_000),
                              ("http_predictions", 10_000, 3_000), ("reward_records", 120_000, 60_000),
                              ("store_calls", 60_000, 30_000)):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.render:
        results = json.loads(Path(args.render).read_text())
        for sec in ("rows", "variants", "experiments"):  # JSON made the configs' keys strings
            for r in results.get(sec, {}).get("rounds", []):
                for k in [k for k in r if k.isdigit()]:
                    r[int(k)] = r.pop(k)
        for k, v in results["args"].items():
            setattr(args, k, v)
        text, _ = render(results, args)
        write_readme(REPORT, text, START, END)
        log(f"wrote {REPORT} and {plots(results)}")
        return 0
    unknown = [s for s in args.only if s not in SECTIONS]
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    run = Growth(args)
    started = _dt.datetime.now(_dt.timezone.utc)
    load0 = round(os.getloadavg()[0], 2)
    try:
        results = run.execute()
    finally:
        if not args.keep_work:
            shutil.rmtree(run.work, ignore_errors=True)
    results.update({"date": started.strftime("%Y-%m-%d %H:%M UTC"), "load_avg_at_start": load0,
                    "command": "python bench/growth.py " + " ".join(argv),
                    "args": {k: v for k, v in vars(args).items() if k != "only"} | {"only": args.only}})
    text, goals = render(results, args)
    results["goals"] = [{"goal": g, "value": v, "met": ok} for g, v, ok in goals]
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        log(f"wrote {args.json}")
    if not args.no_report and set(args.only) == set(SECTIONS):
        write_readme(REPORT, text, START, END)
        log(f"wrote {REPORT} and {plots(results)}")
    return 1 if results.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
