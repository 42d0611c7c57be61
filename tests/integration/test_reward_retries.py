"""Retries cannot double-count: 8 concurrent clients each send every reward 5 times while HTTP
attempts are abandoned mid-request and the gateway's Redis connections are killed server-side;
per variant, the posterior's counters grow by exactly the number of unique accepted request ids.

Experiment 'churn' is the one the integration tests write to (see test_schemathesis); the
rewards are balanced (half 0, half 1 within each variant) so they cannot tilt it towards a
promotion that other tests would notice."""
from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import redis

from gateway.store.embedded import EmbeddedRedis
from tests.integration.conftest import ROW

pytestmark = pytest.mark.integration

EXPERIMENT = "churn"
PREDICTIONS = 400
CLIENTS = 8
COPIES = 5  # each client sends each reward this many times
SEED = 6
BUDGET_S = 150.0  # a hang guard for the whole test body (it takes ~30-40 s), not a speed goal
ABANDON_P = 0.2  # share of sends that first try once and hang up without reading
MAX_BATCH = 50


def embedded_redis(gateway) -> redis.Redis:
    """A client of the session gateway's own redis-server (its unix socket in the state dir)."""
    path = EmbeddedRedis(gateway.state_dir).socket
    assert path.exists(), f"no embedded redis socket at {path}"
    r = redis.Redis(unix_socket_path=str(path), socket_timeout=5)
    assert r.ping()
    return r


def counters(client: httpx.Client) -> dict[str, dict]:
    for _ in range(20):
        r = client.get(f"/v1/experiments/{EXPERIMENT}")
        if r.status_code == 200:
            return {v["name"]: v for v in r.json()["variants"]}
        time.sleep(0.2)
    raise AssertionError(f"GET /v1/experiments/{EXPERIMENT}: {r.status_code} {r.text}")


def serve_predictions(url: str, n: int, deadline: float, threads: int = 4) -> list[dict]:
    def some(k: int) -> list[dict]:
        outs: list[dict] = []
        with httpx.Client(base_url=url, timeout=30) as c:
            while len(outs) < len(range(k, n, threads)):
                assert time.monotonic() < deadline, f"only {len(outs)} predictions within the time budget"
                r = c.post(f"/v1/experiments/{EXPERIMENT}/predict", json={"instances": [ROW]})
                if r.status_code == 200:
                    outs.append(r.json())
                else:
                    assert r.status_code >= 500, r.text  # a 4xx here is a bug, not a fault
        return outs

    with ThreadPoolExecutor(threads) as pool:
        return [o for outs in pool.map(some, range(threads)) for o in outs]


def raw_request(url: str, path: str, payload: dict) -> bytes:
    host = urlsplit(url).netloc
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def abandon(url: str, request: bytes, rng: np.random.Generator) -> None:
    """Send the whole request, then hang up without reading the answer: at once with a reset,
    or after a few milliseconds (while the gateway is likely in the middle of applying it)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
        s.sendall(request)
        if rng.random() < 0.5:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
        else:
            time.sleep(float(rng.uniform(0, 0.05)))


@dataclass
class ClientLog:
    answers: list[tuple[str, str, str | None]] = field(default_factory=list)  # (rid, status, variant)
    rejected: list[dict] = field(default_factory=list)
    http_sends: int = 0
    abandoned: int = 0
    retried: Counter = field(default_factory=Counter)  # why an attempt got no answer and was sent again
    unanswered: list[str] = field(default_factory=list)


def reward_client(k: int, url: str, items: list[dict], deadline: float) -> ClientLog:
    """Send every item COPIES times, shuffled, in batches of random size (single items on both
    reward routes); an attempt without an answer is retried until one comes."""
    rng = np.random.default_rng([SEED, k])
    sends = [items[i] for i in rng.permutation(np.repeat(np.arange(len(items)), COPIES))]
    log = ClientLog()
    with httpx.Client(base_url=url, timeout=10) as c:
        i = 0
        while i < len(sends):
            size = 1 if rng.random() < 0.1 else int(rng.integers(2, MAX_BATCH + 1))
            chunk, i = sends[i : i + size], i + size
            if len(chunk) == 1:
                path = "/reward" if rng.random() < 0.5 else "/v1/rewards"
                payload: dict = chunk[0]
            else:
                path, payload = "/v1/rewards", {"rewards": chunk}
            if rng.random() < ABANDON_P:
                try:
                    abandon(url, raw_request(url, path, payload), rng)
                    log.abandoned += 1
                except OSError:
                    log.retried["abandon_failed"] += 1
            while True:
                if time.monotonic() > deadline:
                    log.unanswered.extend(x["request_id"] for x in chunk)
                    break
                log.http_sends += 1
                try:
                    r = c.post(path, json=payload)
                except httpx.HTTPError as err:
                    log.retried[type(err).__name__] += 1
                    time.sleep(0.02)
                    continue
                if r.status_code >= 500:
                    log.retried[f"http_{r.status_code}"] += 1
                    time.sleep(0.02)
                    continue
                body = r.json()
                if len(chunk) == 1:
                    results = [body if r.status_code == 200 else {"status": "rejected", "http_status": r.status_code, **body}]
                else:
                    assert r.status_code == 200, r.text
                    results = body["results"]
                for item, res in zip(chunk, results):
                    # queued: durably spooled while the gateway saw Redis as away (the killed
                    # connections); applied when its refresh loop reconnects.
                    if res["status"] in ("accepted", "duplicate", "queued"):
                        log.answers.append((item["request_id"], res["status"], res.get("variant")))
                    else:
                        log.rejected.append({"request_id": item["request_id"], **res})
                break
    return log


def test_retried_and_cut_rewards_count_exactly_once(gateway):
    started = time.monotonic()
    deadline = started + BUDGET_S
    rng = np.random.default_rng(SEED)
    with gateway.client() as c:
        outs = serve_predictions(gateway.url, PREDICTIONS, deadline)
        served = {o["request_id"]: o for o in outs}
        assert len(served) == PREDICTIONS
        # Balanced rewards within each variant: the bandit learns nothing from this test.
        reward_of: dict[str, float] = {}
        by_variant: dict[str, list[str]] = defaultdict(list)
        for o in outs:
            by_variant[o["variant"]].append(o["request_id"])
        for rids in by_variant.values():
            values = rng.permutation(np.arange(len(rids)) % 2).astype(float)
            reward_of.update(zip(rids, values.tolist()))
        items = [{"request_id": rid, "token": served[rid]["reward_token"], "reward": reward_of[rid]} for rid in served]
        before = counters(c)
        predicted_at = time.monotonic()

        r = embedded_redis(gateway)
        stop = threading.Event()
        kills: list[int] = []

        def killer() -> None:
            krng = np.random.default_rng([SEED, 99])
            while not stop.wait(float(krng.uniform(0.1, 0.4))):
                kills.append(r.client_kill_filter(_type="normal", skipme=True))

        killer_thread = threading.Thread(target=killer, daemon=True)
        killer_thread.start()
        try:
            with ThreadPoolExecutor(CLIENTS) as pool:
                logs = list(pool.map(lambda k: reward_client(k, gateway.url, items, deadline), range(CLIENTS)))
        finally:
            stop.set()
            killer_thread.join()
        rewarded_at = time.monotonic()
        # Spooled rewards are replayed by the router's refresh loop: wait until none is left.
        drain_deadline = time.monotonic() + 30
        while (health := c.get("/healthz").json())["spooled"] or health["status"] != "ok":
            assert time.monotonic() < drain_deadline, f"the spool did not drain: {health}"
            time.sleep(0.2)
        after = counters(c)

    answers = [a for log in logs for a in log.answers]
    rejected = [x for log in logs for x in log.rejected]
    unanswered = sorted({rid for log in logs for rid in log.unanswered})
    statuses = defaultdict(Counter)
    for rid, status, variant in answers:
        statuses[rid][status] += 1
        assert variant == served[rid]["variant"], (rid, variant, served[rid]["variant"])
    ended_accepted = set(statuses)
    double_accepts = {rid: s["accepted"] for rid, s in statuses.items() if s["accepted"] > 1}
    only_duplicate = [rid for rid, s in statuses.items() if s["accepted"] == 0]
    retried = sum((log.retried for log in logs), Counter())
    figures = {
        "predictions": PREDICTIONS,
        "reward_items_sent": CLIENTS * COPIES * PREDICTIONS,
        "http_attempts": sum(log.http_sends for log in logs),
        "abandoned_attempts": sum(log.abandoned for log in logs),
        "redis_kill_rounds": len(kills),
        "redis_connections_killed": sum(kills),
        "retried_attempts": dict(retried),
        "answers": dict(Counter(s for _, s, _ in answers)),
        "ids_applied_without_an_accepted_answer": len(only_duplicate),
        "double_accepts": len(double_accepts),
        "rejected": len(rejected),
        "unanswered": len(unanswered),
        "predict_s": round(predicted_at - started, 1),
        "reward_s": round(rewarded_at - predicted_at, 1),
    }
    print("reward retries:", json.dumps(figures, sort_keys=True))

    assert not unanswered, f"{len(unanswered)} request ids never got an answer within {BUDGET_S}s: {unanswered[:5]}"
    assert not rejected, f"valid rewards were rejected: {rejected[:5]}"
    assert ended_accepted == set(served), "every request id ends applied"
    assert not double_accepts, f"request ids answered 'accepted' more than once: {double_accepts}"
    assert figures["abandoned_attempts"] > 0 and sum(kills) > 0, f"the faults did not happen: {figures}"
    for variant, rids in by_variant.items():
        accepted_ids = [rid for rid in rids if rid in ended_accepted]
        delta = after[variant]["rewards"] - before[variant]["rewards"]
        assert delta == len(accepted_ids), (
            f"{variant}: rewards grew by {delta} for {len(accepted_ids)} unique accepted request ids"
            f" ({delta - len(accepted_ids):+d} double counts or losses)"
        )
        expected_sum = sum(reward_of[rid] for rid in accepted_ids)
        got_sum = after[variant]["reward_sum"] - before[variant]["reward_sum"]
        assert math.isclose(got_sum, expected_sum, abs_tol=1e-6), f"{variant}: reward_sum grew by {got_sum}, expected {expected_sum}"
        assert after[variant]["requests"] == before[variant]["requests"], "rewards do not count as requests"
    for variant in set(after) - set(by_variant):
        assert after[variant]["rewards"] == before[variant]["rewards"], f"{variant} served nothing here, yet its rewards moved"
