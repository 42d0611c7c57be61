"""The Redis side of bench/serving.py's gateway section: Redis work per prediction (INFO
commandstats around a load point, less the idle background; round trips told apart from
scripts' commands with MONITOR), the batch-reward load (predictions recorded beforehand with the
store's own calls, captured instead of sent and replayed; signed reward bodies sent by
bench/_load.py) and the store's update path against redis-benchmark running the same EVALSHA on
the same embedded Redis.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _serving_load import LOAD, Loader
from _serving_probes import cpu_per_request, cpu_snapshot, gateway_targets, spying
from _systems import EXPERIMENT, Proc, log

REWARD_BATCH = 1000


# -- Redis --------------------------------------------------------------------------------------


def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def redis_counters(client) -> dict[str, float]:
    stats = client.info("commandstats")
    out = {k.removeprefix("cmdstat_"): float(v["calls"]) for k, v in stats.items()}
    s = client.info("stats")
    out["_writes"] = float(s.get("total_writes_processed", 0))
    out["_commands"] = float(s.get("total_commands_processed", 0))
    return out


def counters_delta(a: dict, b: dict) -> dict[str, float]:
    return {k: b.get(k, 0.0) - a.get(k, 0.0) for k in set(a) | set(b)}


def measure_redis_per_predict(
    client, redis_url: str, loader: Loader, url: str, body: Path, idle_s: float, proc: Proc
) -> tuple[dict, dict]:
    """Redis work per prediction, and the 16-connection load point measured meanwhile.

    1. INFO commandstats (every command, those run inside scripts included) before and after
       the measured 16-connection run, less the background rate (posterior refresh every 100 ms,
       dashboard series every 2 s) measured while idle; divided by the predictions recorded in
       that window (the variants' `:req` counters).
    2. Round trips: MONITOR tells the commands clients send from those scripts run; over a
       short extra 16-connection run and an idle window of the same length, client commands per
       prediction (a pipeline's commands share one round trip, so this is an upper bound)."""
    from gateway.store import keys

    arms = keys.arms(EXPERIMENT)
    a = redis_counters(client)
    t0 = time.perf_counter()
    time.sleep(idle_s)
    b = redis_counters(client)
    idle = time.perf_counter() - t0
    bg = {k: v / idle for k, v in counters_delta(a, b).items()}
    loader.warm(url, body, 16)
    req_before = _requests_served(client, arms)
    c = redis_counters(client)
    t1 = time.perf_counter()
    point = loader.run(url, body, 16, warm=False, proc=proc)
    d = redis_counters(client)
    busy = time.perf_counter() - t1
    served = _requests_served(client, arms) - req_before
    delta = counters_delta(c, d)
    per = {}
    for k, v in delta.items():
        # hgetall: the refresh, and this probe; the rest: connection set-up and probes.
        if k in ("info", "hgetall", "client", "hello", "echo", "monitor", "select", "auth") or k.startswith("_"):
            continue
        per[k] = round((v - bg.get(k, 0.0) * busy) / served, 3) if served else None
    # Background commands slow down under load (the refresher shares the router's loop), so the
    # subtraction can overshoot a little: below 0.05 a command is background only.
    calls = {k: v for k, v in sorted(per.items()) if v is not None and v >= 0.05}

    _, _, names = capturing_store()
    time.sleep(1.0)  # let the last run's requests finish
    idle_counts, idle_t, _, _ = monitor_commands(redis_url, names, lambda: time.sleep(idle_s))
    load_counts, load_t, _, n = monitor_commands(
        redis_url, names, lambda: loader.run(url, body, 16, warm=False, duration=idle_s, quiet=True),
        counter=lambda: _requests_served(client, arms),
    )
    client_cmds = {}
    for key in set(idle_counts) | set(load_counts):
        origin, cmd = key
        if origin != "client":
            continue
        # A background command slowed by the load would come out negative: no command costs < 0.
        net = max(0.0, load_counts.get(key, 0) - idle_counts.get(key, 0) * load_t / idle_t)
        client_cmds[cmd] = round(net / n, 3) if n else None
    per_predict = {k: v for k, v in sorted(client_cmds.items(), key=lambda kv: -(kv[1] or 0)) if v and v >= 0.02}
    return {
        "predictions": served,
        "window_s": round(busy, 3),
        "calls_per_predict": calls,
        "background_per_s": {k: round(v, 2) for k, v in sorted(bg.items()) if v >= 0.05 and k != "info"},
        # Client commands whose count follows the predictions; below 0.05 a command is the
        # timers' background (the refresh, the series) left over by the subtraction.
        "roundtrips_per_predict": round(sum(v for v in client_cmds.values() if v and v >= 0.05), 3) if n else None,
        "client_commands_per_predict": per_predict,
        "monitor_predictions": n,
        "monitor_window_s": round(load_t, 3),
        "monitor_idle_client_commands_per_s": {
            k[1]: round(v / idle_t, 2) for k, v in sorted(idle_counts.items()) if k[0] == "client"
        },
    }, point


def monitor_commands(redis_url: str, names: dict[str, str], body, counter=None) -> tuple[dict, float, Any, int]:
    """Run `body()` while MONITOR records every command: counts by (client|script, command),
    EVALSHA named by its script, between two ECHO markers sent around `body()` (so the count
    covers exactly the window even when the monitor stream lags); the elapsed seconds; body's
    result; and the change of `counter()` over the window."""
    import uuid

    import redis

    counts: dict[tuple[str, str], int] = {}
    token = uuid.uuid4().hex
    begin, finish = f"ECHO bench-start-{token}", f"ECHO bench-end-{token}"
    ready = threading.Event()
    conn = redis.Redis.from_url(redis_url, decode_responses=True)
    marks = redis.Redis.from_url(redis_url, decode_responses=True)

    def listen() -> None:
        inside = False
        with conn.monitor() as m:
            ready.set()
            for ev in m.listen():
                command = ev["command"]
                if command == begin:
                    inside = True
                    continue
                if command == finish:
                    return
                if not inside:
                    continue
                parts = command.split(" ", 2)
                cmd = parts[0].upper()
                if cmd in ("EVALSHA", "EVALSHA_RO") and len(parts) > 1:
                    cmd = f"{cmd} {names.get(parts[1], parts[1][:10])}"
                key = ("script" if ev.get("client_type") == "lua" else "client", cmd)
                counts[key] = counts.get(key, 0) + 1

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(10)
    time.sleep(0.2)
    marks.echo(begin.split(" ", 1)[1])
    c0 = counter() if counter else 0
    t0 = time.perf_counter()
    try:
        result = body()
    finally:
        elapsed = time.perf_counter() - t0
        c1 = counter() if counter else 0
        marks.echo(finish.split(" ", 1)[1])
        thread.join(60)
        conn.close()
        marks.close()
    if counter:  # the probe's own HGETALL
        counts[("client", "HGETALL")] = counts.get(("client", "HGETALL"), 0) - 1
    return counts, elapsed, result, c1 - c0


def _requests_served(client, arms: str) -> int:
    raw = client.hgetall(arms)
    return sum(int(v) for k, v in raw.items() if k.endswith(":req"))


# -- rewards ------------------------------------------------------------------------------------


class _CapturePipe:
    """Stands in for a redis pipeline: records the commands the store would send."""

    def __init__(self, calls: list):
        self.calls = calls

    def evalsha(self, *args):
        self.calls.append(("EVALSHA", *args))

    def execute_command(self, *args, **_kw):  # the store sends its scripts as EVALSHA commands
        self.calls.append(args)

    def __getattr__(self, name: str):
        return lambda *args, **_kw: self.calls.append((name.upper(), *args))


def capturing_store():
    """An ExperimentStore whose scripted calls are recorded instead of sent, so that the
    benchmark replays exactly what the store's code sends (its scripts and arguments change as
    the project does). Returns (store, the list the calls land in, {sha: script name})."""
    import hashlib

    from gateway.store.experiments import ExperimentStore

    store = ExperimentStore.from_url("unix:///nonexistent.sock")  # never connects
    store._shas = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in store._sources.items()}
    calls: list = []

    async def run_scripted(build, isolate=False):  # as ExperimentStore._run_scripted
        build(_CapturePipe(calls))
        raise _Captured  # what the store would do with the replies is not our business

    store._run_scripted = run_scripted
    return store, calls, {sha: name for name, sha in store._shas.items()}


class _Captured(Exception):
    pass


async def capture(coro) -> None:
    with contextlib.suppress(_Captured):
        await coro


def load_scripts(client) -> None:
    from gateway.store.experiments import ExperimentStore

    for src in ExperimentStore.from_url("unix:///nonexistent.sock")._sources.values():
        client.script_load(src)


def prepare_rewarded_requests(client, prefix: str, count: int, variant: str, window_s: float) -> list[str]:
    """Record `count` served predictions with the store's own `record_prediction` calls (replayed
    here in pipelines of 2,000) and return their request ids."""
    store, calls, _ = capturing_store()
    load_scripts(client)
    now = time.time()
    record = {"t": repr(now), "pred": "[1]", "prop": "1.0"}
    ids = [f"{prefix}-{i:08d}" for i in range(count)]

    async def build() -> None:
        for rid in ids:
            await capture(store.record_prediction(EXPERIMENT, rid, variant, record, window_s, None))

    asyncio.run(build())
    for start in range(0, len(calls), 2000):
        pipe = client.pipeline(transaction=False)
        for call in calls[start : start + 2000]:
            pipe.execute_command(*call)
        pipe.execute()
    return ids


def reward_bodies(ids: list[str], secret: str, variant: str, window_s: float, path: Path) -> int:
    from gateway.dataplane.tokens import RewardTokens, TokenClaims

    tokens = RewardTokens(secret)
    exp = time.time() + window_s
    rng = random.Random(7)
    n = 0
    with open(path, "w") as fh:
        for start in range(0, len(ids), REWARD_BATCH):
            items = [
                {"request_id": rid, "token": tokens.sign(rid, TokenClaims(EXPERIMENT, variant, exp)), "reward": rng.randint(0, 1)}
                for rid in ids[start : start + REWARD_BATCH]
            ]
            fh.write(json.dumps({"rewards": items}, separators=(",", ":")) + "\n")
            n += 1
    return n


def measure_rewards(client, url: str, work: Path, warmup: float, measure: float, records: int,
                    proc: Proc | None = None, profile_dir: str | None = None) -> dict:
    from gateway.store import keys

    secret = client.get(keys.SECRET)
    window = 3600.0
    t0 = time.perf_counter()
    ids = prepare_rewarded_requests(client, "rw", records, "logreg", window)
    body_file = work / "rewards.jsonl"
    batches = reward_bodies(ids, secret, "logreg", window, body_file)
    aof_quiet(client)
    log(f"  prepared {records} served requests and {batches} reward batches in {time.perf_counter() - t0:.1f}s")
    cmd = [sys.executable, str(LOAD), f"{url}/v1/rewards", "--bodies", str(body_file), "--connections", "4",
           "--warmup", str(warmup), "--duration", str(measure), "--count-field", "accepted"]
    profile: dict[str, Any] = {}
    before = cpu_snapshot(proc) if proc else None
    loader = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        if profile_dir and proc is not None:
            time.sleep(warmup)
            with spying({"router": gateway_targets(proc)["router"]}, measure, Path(profile_dir), "rewards", profile):
                pass
        stdout, stderr = loader.communicate(timeout=warmup + measure + 120)
    finally:
        if loader.poll() is None:
            loader.kill()
            loader.wait()
    if loader.returncode != 0:
        raise RuntimeError(f"_load.py failed: {stderr[-2000:]}")
    r = json.loads(stdout)
    body_file.unlink(missing_ok=True)
    result = {
        "rewards_per_s": round(r["counted_per_s"] or 0.0, 1),
        "batches_per_s": round(r["rps"], 2),
        "batch_size": REWARD_BATCH,
        "accepted": r["counted"],
        "window_s": round(r["window_s"], 3),
        "statuses": r["statuses"],
        "p50_batch_ms": round(r["p50_ms"], 1),
        "p99_batch_ms": round(r["p99_ms"], 1),
        "bodies_left": r["bodies_left"],
        "connections": 4,
    }
    if proc is not None:
        # Includes the warm-up's batches: per reward, over everything the loader sent.
        result["cpu_ms_per_1000_rewards"] = cpu_per_request(before, cpu_snapshot(proc), max(1, batches - r["bodies_left"]))
    if profile:
        result["profile"] = profile
    log(f"  rewards: {result['rewards_per_s']:.0f}/s accepted ({result['batches_per_s']:.1f} batches/s, "
        f"p50 {result['p50_batch_ms']} ms a batch, {r['bodies_left']} batches unused)")
    return result


def aof_quiet(client, timeout: float = 60.0) -> None:
    """Rewrite the AOF now and wait for it: the embedded Redis (appendonly, appendfsync
    everysec) otherwise starts a rewrite (a fork writing the whole dataset) in the middle of a
    measurement once the file has doubled."""
    with contextlib.suppress(Exception):
        client.bgrewriteaof()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not (info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")
                or info.get("rdb_bgsave_in_progress")):
            return
        time.sleep(0.2)


def measure_store_vs_redis_benchmark(redis_url: str, seconds: float, calls: int) -> dict:
    """ExperimentStore.apply_rewards (the router's update path, batches of 1,000) against
    redis-benchmark running EVALSHA of the same script on the same server."""
    from gateway.store import keys
    from gateway.store.experiments import ExperimentStore
    from gateway.store.snapshot import RewardItem

    client = redis_client(redis_url)
    # Keyspace for redis-benchmark, 10x its calls: ~95% of the random keys are fresh, so nearly
    # every call takes the accepted path like the store's. Written first, so that both runs
    # meet the same server (and the AOF rewrite this much writing triggers is over before).
    keyspace = calls * 10
    prefix = keys.request(EXPERIMENT, "rb-")
    populate = (
        "for i = tonumber(ARGV[2]), tonumber(ARGV[3]) do "
        "redis.call('HSET', ARGV[1] .. string.format('%012d', i), 'variant', 'logreg') end return 1"
    )
    for lo in range(0, keyspace, 100_000):
        client.eval(populate, 0, prefix, lo, min(keyspace, lo + 100_000) - 1)
    ids = prepare_rewarded_requests(client, "st", calls, "logreg", 3600)
    aof_quiet(client)

    async def store_run() -> tuple[int, float, dict]:
        store = ExperimentStore.from_url(redis_url)
        try:
            await store.apply_rewards([RewardItem(EXPERIMENT, "warm-none", "logreg", 1.0)], time.time())
            done, outcomes = 0, {}
            t0 = time.perf_counter()
            for start in range(0, len(ids), REWARD_BATCH):
                batch = [RewardItem(EXPERIMENT, rid, "logreg", 1.0) for rid in ids[start : start + REWARD_BATCH]]
                res = await store.apply_rewards(batch, time.time())
                for o in res:
                    o = str(o[0] if isinstance(o, (list, tuple)) else o)
                    outcomes[o] = outcomes.get(o, 0) + 1
                done += len(batch)
                if time.perf_counter() - t0 >= seconds:
                    break
            return done, time.perf_counter() - t0, outcomes
        finally:
            await store.close()

    done, elapsed, outcomes = asyncio.run(store_run())
    store_rate = done / elapsed

    bench = shutil.which("redis-benchmark")
    result: dict[str, Any] = {
        "store_rewards_per_s": round(store_rate, 1),
        "store_outcomes": outcomes,
        "store_batch": REWARD_BATCH,
    }
    if bench is None:
        result["redis_benchmark"] = "redis-benchmark not installed (apt-get install redis-tools)"
        return result
    aof_quiet(client)
    store_c, calls_made, names = capturing_store()
    asyncio.run(capture(store_c.apply_rewards([RewardItem(EXPERIMENT, "rb-__rand_int__", "logreg", 1.0)], time.time())))
    (command,) = calls_made
    load_scripts(client)
    sock = redis_url.removeprefix("unix://")
    cmd = [bench, "-s", sock, "-c", "4", "-P", "32", "-n", str(calls), "-r", str(keyspace), "--csv",
           *(str(a) for a in command)]
    result["redis_benchmark_script"] = names.get(str(command[1]))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, start_new_session=True, check=False)
    rate = None
    for line in out.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0].upper().startswith("EVALSHA"):
            rate = float(cells[1])
    if rate is None:
        result["redis_benchmark"] = f"no result: {out.stdout[-500:]} {out.stderr[-500:]}"
        return result
    result.update(
        {
            "redis_benchmark_evalsha_per_s": round(rate, 1),
            "redis_benchmark_args": f"-c 4 -P 32 -n {calls} -r {keyspace} EVALSHA <reward.lua> (unix socket)",
            "store_vs_redis_benchmark": round(store_rate / rate, 3),
        }
    )
    log(f"  store apply_rewards {store_rate:.0f}/s vs redis-benchmark EVALSHA {rate:.0f}/s "
        f"= {store_rate / rate:.0%}")
    client.close()
    return result
