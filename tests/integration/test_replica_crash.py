"""Replica crash (placement `deployment`): a variant replica's worker process is SIGKILLed under steady load. A client
that retries idempotent calls (a prediction answered 5xx or not at all is sent again with a new
request id, up to 3 times) sees at least 99% of its logical requests succeed; Ray Serve brings
the replica back and the variant serves again; rewarding every successful prediction twice
counts each exactly once.

The replica is found by its process title (`ray::ServeReplica:<app>:<deployment>`) among the
descendants of this session's `gateway serve`, so other gateways on the machine are never
touched. Experiment 'churn' is the one the integration tests write to; the rewards are balanced
(half 0, half 1 within each variant) so they cannot push it towards a promotion."""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import httpx
import numpy as np
import psutil
import pytest

from gateway.serving.app import APP_NAME, deployment_name
from tests.integration.conftest import POLICIES, ROW, TEST_SECRET, start_gateway
from tests.integration.test_traces import PREDICT_SPAN

pytestmark = pytest.mark.integration

EXPERIMENT = "churn"
SEED = 11
RATE_PER_S = 20.0
RETRIES = 3  # after the first attempt
ATTEMPT_TIMEOUT_S = 12.0  # above the gateway's own 10 s timeout on a variant call
KILL_AFTER_S = 5.0  # steady load before the kill
MIN_LOAD_AFTER_KILL_S = 15.0
RECOVERY_BOUND_S = 45.0  # the replica must be back and serving within this after the kill
BUDGET_S = 88.0
MIN_SUCCESS_RATE = 0.99


def replica_processes(gateway, deployment: str) -> list[psutil.Process]:
    """The live replica processes of one deployment under this gateway's process tree."""
    title = re.compile(rf"(^|\s|::)ServeReplica:{re.escape(APP_NAME)}:{re.escape(deployment)}(\.|\s|$)")
    return gateway.processes(title)


def experiment_state(client: httpx.Client) -> dict:
    for _ in range(20):
        r = client.get(f"/v1/experiments/{EXPERIMENT}")
        if r.status_code == 200:
            return r.json()
        time.sleep(0.25)
    raise AssertionError(f"GET /v1/experiments/{EXPERIMENT}: {r.status_code} {r.text}")


@dataclass
class Logical:
    index: int
    started: float  # when it was due: the latency includes any wait for a free client thread
    success: dict | None = None
    done_at: float | None = None
    attempts: int = 0
    failures: tuple = ()
    refused: str | None = None  # a 4xx: a bug, never retried


class RetryingClient:
    """Logical predictions, each retried with a fresh request id on a 5xx or a transport
    error; one shared connection pool (building a client per thread costs seconds of CPU)."""

    def __init__(self, url: str, run_id: str, concurrency: int):
        self.run_id = run_id
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.http = httpx.Client(base_url=url, timeout=ATTEMPT_TIMEOUT_S, limits=limits)
        self.results: list[Logical] = []
        self.lock = threading.Lock()

    def logical(self, index: int, scheduled: float) -> None:
        out = Logical(index, scheduled)
        failures = []
        for attempt in range(1 + RETRIES):
            out.attempts += 1
            rid = f"crash-{self.run_id}-{index}-{attempt}"
            try:
                r = self.http.post(
                    f"/v1/experiments/{EXPERIMENT}/predict", json={"instances": [ROW]}, headers={"x-request-id": rid}
                )
            except httpx.TransportError as err:
                failures.append(type(err).__name__)
                time.sleep(0.05)
                continue
            if r.status_code == 200:
                out.success = r.json()
                break
            if r.status_code < 500:
                out.refused = f"{r.status_code} {r.text[:200]}"
                break
            code = r.json().get("error", {}).get("code", "") if r.headers.get("content-type", "").startswith("application/json") else ""
            failures.append(f"http_{r.status_code}:{code}")
            time.sleep(0.05)
        out.failures = tuple(failures)
        out.done_at = time.monotonic()
        with self.lock:
            self.results.append(out)


def reward_all(client: httpx.Client, items: list[dict]) -> Counter:
    statuses: Counter = Counter()
    for i in range(0, len(items), 100):
        chunk = items[i : i + 100]
        for _ in range(20):
            r = client.post("/v1/rewards", json={"rewards": chunk})
            if r.status_code == 200:
                break
            assert r.status_code >= 500, r.text
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        statuses.update(x["status"] for x in r.json()["results"])
    return statuses


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, collector):
    """A gateway whose variants run in deployments of their own (placement `deployment`; the
    default runs them inside the router replica, where there is no variant process to kill)."""
    env = {
        "GATEWAY_VARIANT_PLACEMENT": "deployment",
        "GATEWAY_REWARD_SECRET": TEST_SECRET,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    gw = start_gateway(POLICIES / "churn.yaml", tmp_path_factory.mktemp("deployment-placement"), env)
    yield gw
    assert gw.stop() == 0, gw.diagnostics()


def test_with_placement_deployment_a_prediction_is_one_trace_across_the_ray_serve_hop(gateway, collector):
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    with gateway.client() as c:
        r = c.post(f"/v1/experiments/{EXPERIMENT}/predict", json={"instances": [ROW]},
                   headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    assert r.status_code == 200, r.text
    trace = collector.wait_for_trace(trace_id, {PREDICT_SPAN, "variant.predict"})
    server, variant = trace[PREDICT_SPAN], trace["variant.predict"]
    assert server["resource"]["gateway.component"] == "router"
    assert variant["parent_span_id"] == server["span_id"]
    assert variant["resource"]["gateway.component"] == "variant", (variant, trace)  # it ran in the variant's replica
    assert variant["attributes"]["gateway.variant"] == r.json()["variant"]


def test_a_killed_variant_replica_comes_back_and_nothing_is_lost_or_counted_twice(gateway):
    started = time.monotonic()
    rng = np.random.default_rng(SEED)
    with gateway.client() as c:
        state = experiment_state(c)
        before = {v["name"]: v for v in state["variants"]}
        # Of the variants with a deployment of their own (not challengers added at run time, which
        # the challenger pool serves), the one with the largest share of traffic.
        own = {v["name"]: replica_processes(gateway, deployment_name(EXPERIMENT, v["name"])) for v in state["variants"]}
        candidates = [v for v in state["variants"] if own[v["name"]]]
        assert candidates, f"no ServeReplica:{APP_NAME}:{EXPERIMENT}--* process under gateway pid {gateway.process.pid}"
        victim_variant = max(candidates, key=lambda v: (v["traffic_share"], v["name"]))["name"]
        deployment = deployment_name(EXPERIMENT, victim_variant)
        procs = own[victim_variant]
        old_pids = {p.pid for p in procs}
        victim = procs[0]

        concurrency = 160  # enough for ~10 s stalls at 20/s
        load = RetryingClient(gateway.url, f"{os.getpid()}-{int(time.time() * 1000)}", concurrency)
        stop = threading.Event()
        pool = ThreadPoolExecutor(concurrency)
        futures = []

        def scheduler() -> None:
            t0, i = time.monotonic(), 0
            while not stop.is_set():
                futures.append(pool.submit(load.logical, i, t0 + i / RATE_PER_S))
                i += 1
                stop.wait(max(0.0, t0 + i / RATE_PER_S - time.monotonic()))

        feeder = threading.Thread(target=scheduler, daemon=True)
        load_started = time.monotonic()
        feeder.start()
        killed_at = back_at = serving_at = None
        new_pid = None
        try:
            time.sleep(KILL_AFTER_S)
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            while time.monotonic() - killed_at < RECOVERY_BOUND_S:
                if back_at is None:
                    fresh = [p for p in replica_processes(gateway, deployment) if p.pid not in old_pids]
                    if fresh:
                        back_at, new_pid = time.monotonic(), fresh[0].pid
                if back_at is not None and serving_at is None:
                    with load.lock:
                        served = [
                            x.done_at for x in load.results
                            if x.success and x.success["variant"] == victim_variant and x.done_at > back_at
                        ]
                    if served:
                        serving_at = min(served)
                if serving_at is not None and time.monotonic() - killed_at >= MIN_LOAD_AFTER_KILL_S:
                    break
                time.sleep(0.2)
        finally:
            stop.set()
            feeder.join()
            load_stopped = time.monotonic()
            # In-flight requests may finish, within the time budget; those that do not count as failed.
            _, unfinished = wait(futures, timeout=max(1.0, started + BUDGET_S - 15.0 - time.monotonic()))
            pool.shutdown(wait=False, cancel_futures=True)
            if not unfinished:
                load.http.close()
        load_s = time.monotonic() - started

        with load.lock:
            results = sorted(load.results, key=lambda x: x.index)
        successes = [x.success for x in results if x.success]
        per_variant = Counter(o["variant"] for o in successes)
        reward_of: dict[str, float] = {}
        for v in per_variant:
            rids = [o["request_id"] for o in successes if o["variant"] == v]
            reward_of.update(zip(rids, rng.permutation(np.arange(len(rids)) % 2).astype(float).tolist()))
        items = [{"request_id": o["request_id"], "token": o["reward_token"], "reward": reward_of[o["request_id"]]} for o in successes]
        first, second = reward_all(c, items), reward_all(c, items)
        after = {v["name"]: v for v in experiment_state(c)["variants"]}

    after_kill = [x for x in results if killed_at is not None and x.done_at >= killed_at]
    latencies = np.array([x.done_at - x.started for x in results]) if results else np.zeros(1)
    failures = Counter(f for x in results for f in x.failures)
    figures = {
        "victim": f"{deployment} pid {victim.pid} -> {new_pid}",
        "logical_requests": len(results) + len(unfinished),
        "offered_rate_per_s": round((len(results) + len(unfinished)) / (load_stopped - load_started), 1),
        "succeeded": len(successes),
        "success_rate": round(len(successes) / max(1, len(results) + len(unfinished)), 4),
        "failed_logical": sum(1 for x in results if not x.success),
        "unfinished_logical": len(unfinished),
        "refused_4xx": [x.refused for x in results if x.refused][:3],
        "attempts": sum(x.attempts for x in results),
        "retried_logical": sum(1 for x in results if x.attempts > 1),
        "failed_attempts": dict(failures),
        "served_by": dict(per_variant),
        "completed_after_kill": len(after_kill),
        "latency_s_p50_p99_max": [round(float(q), 2) for q in np.percentile(latencies, [50, 99, 100])],
        "logical_over_5s": int(np.sum(latencies > 5.0)),
        "replica_back_after_s": None if back_at is None else round(back_at - killed_at, 1),
        "serving_again_after_s": None if serving_at is None else round(serving_at - killed_at, 1),
        "rewards_first_pass": dict(first),
        "rewards_second_pass": dict(second),
        "load_s": round(load_s, 1),
        "test_s": round(time.monotonic() - started, 1),
    }
    print("replica crash:", json.dumps(figures, sort_keys=True))

    assert back_at is not None, (
        f"Ray Serve did not bring {deployment} back within {RECOVERY_BOUND_S}s of the SIGKILL "
        f"(no new ServeReplica:{APP_NAME}:{deployment} process): {figures}"
    )
    assert serving_at is not None, (
        f"{deployment}'s replica came back after {back_at - killed_at:.1f}s but the variant served no "
        f"prediction within {RECOVERY_BOUND_S}s of the kill: {figures}"
    )
    assert not any(x.refused for x in results), f"predictions refused with a 4xx: {figures['refused_4xx']}"
    assert len(after_kill) >= RATE_PER_S * MIN_LOAD_AFTER_KILL_S / 2, f"the load did not go on after the kill: {figures}"
    assert len(successes) >= MIN_SUCCESS_RATE * (len(results) + len(unfinished)), (
        f"success rate below {MIN_SUCCESS_RATE:.0%}: {figures}"
    )
    assert first == Counter(accepted=len(successes)), f"first reward of each success: {dict(first)}"
    assert second == Counter(duplicate=len(successes)), f"second reward of each success: {dict(second)}"
    for v in after:
        delta = after[v]["rewards"] - before.get(v, {}).get("rewards", 0)
        assert delta == per_variant.get(v, 0), f"{v}: rewards grew by {delta} for {per_variant.get(v, 0)} successful predictions"
        assert after[v]["requests"] - before.get(v, {}).get("requests", 0) >= per_variant.get(v, 0)
        sum_delta = after[v]["reward_sum"] - before.get(v, {}).get("reward_sum", 0.0)
        expected = sum(reward_of[o["request_id"]] for o in successes if o["variant"] == v)
        assert abs(sum_delta - expected) < 1e-6, f"{v}: reward_sum grew by {sum_delta}, expected {expected}"
