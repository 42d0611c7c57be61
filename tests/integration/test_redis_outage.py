"""Redis down under load, with one router replica and with two: about 30 predictions/s and 10
rewards/s for 40 s against a gateway whose (external) Redis is SIGKILLed at 10 s and started again
on the same directory (its AOF reloaded) at 20 s.

- At least 99% of the predictions succeed (200, served from the router's cached posteriors).
- While Redis is away a reward is acknowledged only once it is durably spooled on the router's
  disk: 202 {"request_id", "status": "queued", "variant", "reward"}; a batch answers 200 with
  per-item status "queued" and a summary count "queued".
- /healthz answers 200 "degraded" (store "unreachable", the spool's length) while Redis is
  away, and "ok" once it is back and the spool is drained.
- Every acknowledged reward is applied exactly once after Redis returns: per variant, the
  posterior's counters grow by the number of unique acknowledged request ids and by the sum of
  their rewards. The Redis side is then read directly (request records and the feedback
  stream) to name which rewards were lost or counted twice, if any.

This test has its own redis-server and its own `gateway serve`, not the session's gateway; both
are stopped at the end whatever happens. Figures are printed (`pytest -s`) for the closing note.
"""
from __future__ import annotations

import asyncio
import json
import math
import shutil
import signal
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from gateway.store import keys
from gateway.store.embedded import EmbeddedRedis
from tests.integration.conftest import POLICIES, ROW, TEST_SECRET, start_gateway

pytestmark = pytest.mark.integration

EXPERIMENT = "churn"
SEED = 20240606
LOAD_S = 40.0
PREDICT_RATE = 30.0  # per second
REWARD_RATE = 10.0  # reward items per second (some sent as batches of 2)
KILL_AT_S = 10.0
RESTART_AT_S = 20.0
DRAIN_BOUND_S = 30.0  # after the load, the spool must be empty and the store ok within this
ATTEMPT_TIMEOUT_S = 12.0
REWARD_RETRIES = 4  # after the first attempt, same payload (idempotent), for unacknowledged rewards
HEALTH_EVERY_S = 0.25
RECENT = 60  # a reward goes to one of the latest unrewarded predictions (about the last 2 s)
MIN_SUCCESS_RATE = 0.99


# -- the load and what it saw -----------------------------------------------------------------


@dataclass
class Served:
    request_id: str
    variant: str
    token: str
    t: float  # seconds since the load started


@dataclass
class RewardSent:
    request_id: str
    variant: str
    reward: float
    t: float
    batch: bool
    first: str = ""  # first answer: 'accepted', 'duplicate', 'queued', or 'http <code> <detail>'
    final: str = ""  # last answer after retries
    attempts: int = 0

    @property
    def acknowledged(self) -> bool:
        return self.final in ("accepted", "duplicate", "queued")


@dataclass
class Observed:
    predict_codes: Counter = field(default_factory=Counter)
    predict_failures: list = field(default_factory=list)  # (t, detail)
    served: list[Served] = field(default_factory=list)
    rewards: dict[str, RewardSent] = field(default_factory=dict)
    health: list = field(default_factory=list)  # (t, code, body or error)
    violations: list[str] = field(default_factory=list)  # contract breaches, with evidence
    reward_first_codes: Counter = field(default_factory=Counter)
    latencies: list = field(default_factory=list)  # (kind, t sent, seconds) of every first attempt
    queued_single: int = 0
    queued_batch_items: int = 0
    batches: int = 0

    def violation(self, text: str) -> None:
        if len(self.violations) < 400:
            self.violations.append(text)


def _ack_of_item(item: Any) -> str | None:
    if isinstance(item, dict) and item.get("status") in ("accepted", "duplicate", "queued"):
        return item["status"]
    return None


class Load:
    """Paced predictions and rewards from one asyncio loop (run in its own thread, so the main
    thread can kill and start Redis on schedule), plus a /healthz poller."""

    def __init__(self, url: str, t0: float, seed: int):
        self.url = url
        self.t0 = t0
        self.rng = np.random.default_rng(seed)
        self.obs = Observed()
        self.unrewarded: list[Served] = []
        self.error: BaseException | None = None
        self.done = threading.Event()

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def _sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            await asyncio.sleep(delay)

    # predictions

    async def _predict(self, c: httpx.AsyncClient, i: int) -> None:
        t = self.now()
        try:
            r = await c.post(f"/v1/experiments/{EXPERIMENT}/predict", json={"instances": [ROW]})
        except httpx.HTTPError as err:
            self.obs.predict_codes["transport"] += 1
            self.obs.predict_failures.append((round(t, 2), f"{type(err).__name__}: {err}"))
            return
        self.obs.latencies.append(("predict", t, self.now() - t))
        self.obs.predict_codes[r.status_code] += 1
        if r.status_code != 200:
            self.obs.predict_failures.append((round(t, 2), f"{r.status_code} {r.text[:200]}"))
            return
        body = r.json()
        if not all(isinstance(body.get(k), str) and body.get(k) for k in ("request_id", "variant", "reward_token")):
            self.obs.violation(f"t={t:.2f} predict 200 without request_id/variant/reward_token: {body}")
            return
        s = Served(body["request_id"], body["variant"], body["reward_token"], t)
        self.obs.served.append(s)
        self.unrewarded.append(s)

    async def _predictions(self, c: httpx.AsyncClient) -> None:
        tasks = []
        for i in range(int(LOAD_S * PREDICT_RATE)):
            await self._sleep_until(i / PREDICT_RATE)
            tasks.append(asyncio.create_task(self._predict(c, i)))
        await asyncio.gather(*tasks)

    # rewards

    def _pick(self) -> Served | None:
        if not self.unrewarded:
            return None
        lo = max(0, len(self.unrewarded) - RECENT)
        return self.unrewarded.pop(int(self.rng.integers(lo, len(self.unrewarded))))

    def _item(self, sent: RewardSent, served: Served) -> dict:
        return {"request_id": sent.request_id, "token": served.token, "reward": sent.reward}

    def _check_single(self, sent: RewardSent, r: httpx.Response) -> str:
        """The answer to one item sent alone: its status if acknowledged, else 'http ...'."""
        if r.status_code in (200, 202):
            body = r.json()
            status = body.get("status")
            want = 202 if status == "queued" else 200
            if status not in ("accepted", "duplicate", "queued") or r.status_code != want:
                self.obs.violation(f"reward {sent.request_id}: {r.status_code} with status {status!r}: {body}")
                return f"http {r.status_code} {status}"
            if (body.get("request_id"), body.get("variant")) != (sent.request_id, sent.variant) or (
                not isinstance(body.get("reward"), (int, float)) or body["reward"] != sent.reward
            ):
                self.obs.violation(f"reward {sent.request_id} ({sent.variant}, {sent.reward}): answer {body}")
            if status == "queued":
                self.obs.queued_single += 1
            return status
        detail = r.text[:200]
        return f"http {r.status_code} {detail}"

    async def _send(self, c: httpx.AsyncClient, group: list[tuple[RewardSent, Served]]) -> None:
        """One reward alone, or a batch; unacknowledged items are sent again alone, same payload."""
        batch = len(group) > 1
        answers: dict[str, str] = {}
        t = self.now()
        try:
            if batch:
                self.obs.batches += 1
                r = await c.post("/v1/rewards", json={"rewards": [self._item(s, v) for s, v in group]})
                if r.status_code == 200:
                    body = r.json()
                    results = body.get("results") or []
                    if len(results) != len(group):
                        self.obs.violation(f"batch of {len(group)}: {len(results)} results: {body}")
                    queued = 0
                    for (sent, _), item in zip(group, results):
                        ack = _ack_of_item(item)
                        if ack is None:
                            answers[sent.request_id] = f"item {json.dumps(item)[:200]}"
                            continue
                        if item.get("request_id") != sent.request_id or item.get("variant") != sent.variant:
                            self.obs.violation(f"batch item for {sent.request_id} ({sent.variant}): {item}")
                        queued += ack == "queued"
                        answers[sent.request_id] = ack
                    if queued:
                        self.obs.queued_batch_items += queued
                        if body.get("queued") != queued:
                            self.obs.violation(f"batch with {queued} queued items, summary queued={body.get('queued')!r}")
                else:
                    for sent, _ in group:
                        answers[sent.request_id] = f"http {r.status_code} {r.text[:200]}"
            else:
                sent, served = group[0]
                r = await c.post("/v1/rewards", json=self._item(sent, served))
                answers[sent.request_id] = self._check_single(sent, r)
        except httpx.HTTPError as err:
            for sent, _ in group:
                answers[sent.request_id] = f"transport {type(err).__name__}"
        self.obs.latencies.append(("reward", t, self.now() - t))
        for sent, _ in group:
            sent.attempts = 1
            sent.first = sent.final = answers.get(sent.request_id, "no answer")
            self.obs.reward_first_codes[sent.first if sent.acknowledged else " ".join(sent.first.split(" ")[:2])] += 1
        for sent, served in group:
            while not sent.acknowledged and sent.attempts <= REWARD_RETRIES:
                await asyncio.sleep(0.5)
                sent.attempts += 1
                try:
                    r = await c.post("/v1/rewards", json=self._item(sent, served))
                    sent.final = self._check_single(sent, r)
                except httpx.HTTPError as err:
                    sent.final = f"transport {type(err).__name__}"

    async def _rewards(self, c: httpx.AsyncClient) -> None:
        tasks = []
        ticks = int(LOAD_S * REWARD_RATE)
        for j in range(1, ticks):
            await self._sleep_until(j / REWARD_RATE)
            # Every 5th tick sends a batch of two items and the next tick nothing: 10 items/s.
            phase = j % 5
            if phase == 1:
                continue
            size = 2 if phase == 0 else 1
            group = []
            for _ in range(size):
                served = self._pick()
                if served is None:
                    break
                sent = RewardSent(served.request_id, served.variant, float(self.rng.random() < 0.5), self.now(), size > 1)
                self.obs.rewards[sent.request_id] = sent
                group.append((sent, served))
            if group:
                tasks.append(asyncio.create_task(self._send(c, group)))
        await asyncio.gather(*tasks)

    # health

    async def _health(self, c: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            t = self.now()
            try:
                r = await c.get("/healthz", timeout=5)
                try:
                    body = r.json()
                except ValueError:
                    body = r.text[:200]
                self.obs.health.append((round(t, 2), r.status_code, body))
            except httpx.HTTPError as err:
                self.obs.health.append((round(t, 2), None, f"{type(err).__name__}"))
            try:
                await asyncio.wait_for(stop.wait(), HEALTH_EVERY_S)
            except TimeoutError:
                pass

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=96, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=self.url, timeout=ATTEMPT_TIMEOUT_S, limits=limits) as c, \
                httpx.AsyncClient(base_url=self.url, timeout=5) as hc:
            stop = asyncio.Event()
            health = asyncio.create_task(self._health(hc, stop))
            try:
                await asyncio.gather(self._predictions(c), self._rewards(c))
            finally:
                stop.set()
                await health

    def thread_main(self) -> None:
        try:
            asyncio.run(self.run())
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            self.error = err
        finally:
            self.done.set()


# -- Redis: kill and start again on the same directory ----------------------------------------


def sigkill(server: EmbeddedRedis) -> int:
    proc = server.process
    assert proc is not None and proc.poll() is None, "the test's redis-server is not running"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    server.process = None  # its socket file stays behind; start() removes it
    return proc.pid


def health_at_end(url: str, bound_s: float) -> tuple[float, list]:
    """Poll /healthz until ok / store ok / spooled 0; the time it took and what was seen."""
    seen = []
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=5) as c:
        while time.monotonic() - started < bound_s:
            try:
                r = c.get("/healthz")
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text[:200]
            except (httpx.HTTPError, ValueError) as err:
                r, body = None, type(err).__name__
            seen.append((round(time.monotonic() - started, 2), None if r is None else r.status_code, body))
            if r is not None and r.status_code == 200 and isinstance(body, dict) and (
                body.get("status") == "ok" and body.get("store") == "ok" and body.get("spooled") == 0
            ):
                return time.monotonic() - started, seen
            time.sleep(0.25)
    return math.inf, seen


def counters(url: str) -> dict[str, dict]:
    with httpx.Client(base_url=url, timeout=10) as c:
        for _ in range(40):
            r = c.get(f"/v1/experiments/{EXPERIMENT}")
            if r.status_code == 200:
                return {v["name"]: v for v in r.json()["variants"]}
            time.sleep(0.25)
    raise AssertionError(f"GET /v1/experiments/{EXPERIMENT}: {r.status_code} {r.text[:300]}")


def feedback_entries(r: redis.Redis) -> list[dict[str, str]]:
    out = []
    for _, fields in r.xrange(keys.feedback(EXPERIMENT)):
        out.append({k.decode(): v.decode() for k, v in fields.items()})
    return out


# Two router replicas (GATEWAY_ROUTER_REPLICAS=2, HAProxy spreads the requests): a prediction's
# record and its reward land on different replicas, each spooling its own and replaying on its own.
@pytest.mark.parametrize("replicas", [1, 2], ids=["one-router", "two-routers"])
def test_redis_down_under_load(tmp_path: Path, replicas: int) -> None:
    policy_dir = tmp_path / "policy"
    policy_dir.mkdir()
    shutil.copy(POLICIES / "churn.yaml", policy_dir / "churn.yaml")
    store = EmbeddedRedis(tmp_path / "redis")  # appendfsync: the embedded default (everysec)
    gw = None
    load: Load | None = None
    thread: threading.Thread | None = None
    try:
        store.start()
        gw = start_gateway(
            policy_dir / "churn.yaml",
            tmp_path / "gw",
            env={"GATEWAY_REDIS_URL": store.url, "GATEWAY_REWARD_SECRET": TEST_SECRET,
                 "GATEWAY_ROUTER_REPLICAS": str(replicas)},
        )
        before = counters(gw.url)
        with httpx.Client(base_url=gw.url, timeout=5) as c:
            first_health = c.get("/healthz")
        assert first_health.status_code == 200, first_health.text

        t0 = time.monotonic() + 0.5
        load = Load(gw.url, t0, SEED)
        thread = threading.Thread(target=load.thread_main, name="outage-load", daemon=True)
        thread.start()

        # The main thread owns the redis-server (it dies with the thread that started it).
        time.sleep(max(0.0, t0 + KILL_AT_S - time.monotonic()))
        killed_at = time.monotonic() - t0
        killed_pid = sigkill(store)
        time.sleep(max(0.0, t0 + RESTART_AT_S - time.monotonic()))
        restart_began = time.monotonic() - t0
        # The killed server left its socket file; remove it here rather than let start() probe it
        # (redis-py's default retries make that probe take about 4 s).
        store.socket.unlink(missing_ok=True)
        store.start()
        restarted_at = time.monotonic() - t0

        # The last reward may take its first attempt and every retry in full after the load.
        worst_s = LOAD_S + (REWARD_RETRIES + 1) * ATTEMPT_TIMEOUT_S + REWARD_RETRIES * 0.5 + 5
        assert load.done.wait(max(0.0, t0 + worst_s - time.monotonic())), (
            f"the load did not finish within {worst_s}s: predictions {dict(load.obs.predict_codes)}, "
            f"rewards {dict(load.obs.reward_first_codes)}")
        thread.join(5)
        if load.error is not None:
            raise load.error
        load_end = time.monotonic() - t0

        drain_s, end_health = health_at_end(gw.url, DRAIN_BOUND_S)
        after = counters(gw.url)
        body_s = time.monotonic() - t0
        obs = load.obs

        # -- what Redis holds, read directly -----------------------------------------------
        r = redis.Redis(unix_socket_path=str(store.socket), socket_timeout=10)
        entries = feedback_entries(r)
        applied_by_rid = Counter(e["rid"] for e in entries if e.get("late") != "1")
        acked = {rid: s for rid, s in obs.rewards.items() if s.acknowledged}
        pipe = r.pipeline()
        for rid in acked:
            pipe.hgetall(keys.request(EXPERIMENT, rid))
        records = dict(zip(acked, pipe.execute()))
        aof = r.info("persistence")
        r.close()

        lost = sorted(rid for rid in acked if applied_by_rid[rid] == 0)
        doubled = sorted(rid for rid in acked if applied_by_rid[rid] > 1)
        unasked = sorted(rid for rid in applied_by_rid if rid not in acked)  # applied, never acknowledged
        wrong_value = sorted(
            rid for rid in acked
            if b"reward" in records[rid] and float(records[rid][b"reward"]) != acked[rid].reward
        )
        no_record = sorted(rid for rid in lost if not records[rid])  # the prediction itself is gone

        def phase(t: float) -> str:
            return "before" if t < killed_at else "outage" if t < restarted_at else "after"

        expected_n: Counter = Counter()
        expected_s: defaultdict = defaultdict(float)
        for s in acked.values():
            expected_n[s.variant] += 1
            expected_s[s.variant] += s.reward
        variants = sorted(set(after) | set(expected_n))
        per_variant = {
            v: {
                "acknowledged": expected_n[v],
                "applied": after[v]["rewards"] - before.get(v, {}).get("rewards", 0),
                "ack_reward_sum": expected_s[v],
                "applied_reward_sum": after[v]["reward_sum"] - before.get(v, {}).get("reward_sum", 0.0),
            }
            for v in variants
        }

        n_pred = sum(obs.predict_codes.values())
        ok_pred = obs.predict_codes[200]
        rate = ok_pred / n_pred if n_pred else 0.0
        outage_health = [h for h in obs.health if killed_at + 0.5 <= h[0] < restart_began]
        degraded = [h for h in obs.health if h[1] == 200 and isinstance(h[2], dict) and h[2].get("status") == "degraded"]
        # Degraded is also what it says after Redis is back while the spool drains (store ok).
        for t, code, body in degraded:
            if body.get("store") not in ("unreachable", "ok") or not isinstance(body.get("spooled"), int) or not isinstance(
                body.get("experiments"), list
            ):
                obs.violation(f"t={t} degraded /healthz body: {body}")
        for t, code, body in outage_health:
            if code != 200 or not isinstance(body, dict) or (body.get("status"), body.get("store")) != (
                "degraded", "unreachable"
            ):
                obs.violation(f"t={t} /healthz during the outage answered {code}: {body}")
        max_spooled = max((b.get("spooled", 0) for _, c_, b in obs.health if isinstance(b, dict)
                           and isinstance(b.get("spooled"), int)), default=None)
        rewards_by_phase = Counter((phase(s.t), s.first if s.first in ("accepted", "duplicate", "queued") else "not acked")
                                   for s in obs.rewards.values())
        preds_by_phase = Counter(phase(s.t) for s in obs.served)
        fails_by_phase = Counter(phase(t) for t, _ in obs.predict_failures)
        latency = {
            f"{kind}_{p}": [round(float(q), 3) for q in np.percentile(xs, [50, 99, 100])]
            for kind in ("predict", "reward")
            for p in ("before", "outage", "after")
            if (xs := [d for k, t, d in obs.latencies if k == kind and phase(t) == p])
        }
        # Prediction latency (p50, max) by 5 s of the load: how serving fares before, during and after.
        predict_by_5s = {
            f"{b * 5:02d}-{b * 5 + 5:02d}s": [round(float(np.percentile(xs, 50)), 2), round(max(xs), 2)]
            for b in range(int(LOAD_S // 5))
            if (xs := [d for k, t, d in obs.latencies if k == "predict" and b * 5 <= t < b * 5 + 5])
        }
        first_not_acked = [s for s in obs.rewards.values() if s.first not in ("accepted", "duplicate", "queued")]
        never_acked = [s for s in obs.rewards.values() if not s.acknowledged]
        refused_4xx = [s for s in obs.rewards.values() if s.first.startswith("http 4") or s.first.startswith("item")]

        figures = {
            "redis": {"killed_pid": killed_pid, "killed_at_s": round(killed_at, 2), "restart_began_s": round(restart_began, 2),
                      "restarted_at_s": round(restarted_at, 2), "appendfsync": store.appendfsync,
                      "aof_rewrite_in_progress": aof.get("aof_rewrite_in_progress"),
                      "aof_last_write_status": aof.get("aof_last_write_status")},
            "load_end_s": round(load_end, 2), "drain_s": None if math.isinf(drain_s) else round(drain_s, 2),
            "body_s": round(body_s, 2),
            "predictions": {"sent": n_pred, "ok": ok_pred, "success_rate": round(rate, 4),
                            "codes": {str(k): v for k, v in obs.predict_codes.items()},
                            "ok_by_phase": dict(preds_by_phase), "failed_by_phase": dict(fails_by_phase)},
            "rewards": {"sent": len(obs.rewards), "batches": obs.batches, "acknowledged": len(acked),
                        "first_answers": {str(k): v for k, v in obs.reward_first_codes.items()},
                        "by_phase": {f"{p}/{a}": n for (p, a), n in sorted(rewards_by_phase.items())},
                        "queued_single": obs.queued_single, "queued_batch_items": obs.queued_batch_items,
                        "first_attempt_not_acked": len(first_not_acked), "never_acked": len(never_acked),
                        "refused_4xx": len(refused_4xx)},
            "applied": {"unique_rids_in_feedback": len(applied_by_rid), "lost": len(lost), "double_counted": len(doubled),
                        "applied_without_ack": len(unasked), "wrong_value": len(wrong_value),
                        "lost_without_prediction_record": len(no_record)},
            "per_variant": per_variant,
            "latency_s_p50_p99_max": latency,
            "predict_latency_s_p50_max_by_5s": predict_by_5s,
            "healthz": {"polls": len(obs.health), "degraded_polls": len(degraded), "max_spooled": max_spooled,
                        "during_outage": Counter(
                            f"{c_}:{b.get('status') if isinstance(b, dict) else b}" for _, c_, b in outage_health),
                        "end": end_health[-1] if end_health else None},
            "violations": len(obs.violations),
        }
        figures["router_replicas"] = replicas
        print("\nREDIS OUTAGE FIGURES " + json.dumps(figures, indent=1, default=str))
        if obs.predict_failures:
            print("prediction failures (first 10):", obs.predict_failures[:10])
        if first_not_acked:
            print("rewards not acknowledged at first (first 10):",
                  [(round(s.t, 2), s.request_id, s.first, s.final, s.attempts) for s in first_not_acked[:10]])
        if lost:
            print("lost (first 10):", [(rid, round(acked[rid].t, 2), acked[rid].first, acked[rid].final,
                                        {k.decode(): v.decode()[:40] for k, v in records[rid].items()}) for rid in lost[:10]])
        if doubled:
            print("double counted (first 10):", [(rid, applied_by_rid[rid]) for rid in doubled[:10]])
        if obs.violations:
            print("contract violations (first 20):\n  " + "\n  ".join(obs.violations[:20]))
        print("healthz timeline (sampled):", obs.health[:: max(1, len(obs.health) // 40)])

        # -- assertions ---------------------------------------------------------------------
        assert rate >= MIN_SUCCESS_RATE, f"prediction success {rate:.4f} < {MIN_SUCCESS_RATE}: {figures['predictions']}"
        assert degraded and any(killed_at <= t < restarted_at + 1 for t, _, _ in degraded), (
            f"/healthz never said degraded during the outage: {figures['healthz']}")
        assert not math.isinf(drain_s), (
            f"/healthz not ok / store ok / spooled 0 within {DRAIN_BOUND_S}s after the load: {end_health[-5:]}")
        assert obs.queued_single + obs.queued_batch_items > 0, "no reward was queued during the outage"
        assert not refused_4xx, f"rewards refused with a 4xx: {[(s.request_id, s.first) for s in refused_4xx[:10]]}"
        assert not obs.violations, f"{len(obs.violations)} contract violations, first: {obs.violations[:5]}"
        assert not never_acked, (
            f"{len(never_acked)} rewards never acknowledged after {REWARD_RETRIES} retries: "
            f"{[(s.request_id, s.final) for s in never_acked[:10]]}")
        assert len(first_not_acked) <= 0.01 * len(obs.rewards), (
            f"{len(first_not_acked)} of {len(obs.rewards)} rewards not acknowledged at first")
        assert not lost and not doubled and not unasked and not wrong_value, figures["applied"]
        for v, f in per_variant.items():
            assert f["applied"] == f["acknowledged"], f"{v}: {f}"
            assert math.isclose(f["applied_reward_sum"], f["ack_reward_sum"], abs_tol=1e-6), f"{v}: {f}"
    except BaseException:
        # The tmp dirs do not outlive a few pytest runs: keep the evidence in the report.
        for name, path in (("gateway serve", gw.log if gw else None), ("Ray", gw.ray_log if gw else None),
                           ("redis", store.data_dir / "redis.log")):
            if path is not None and path.exists():
                print(f"\n--- tail of the {name} log ({path}) ---\n{path.read_text(errors='replace')[-6000:]}")
        raise
    finally:
        if load is not None and thread is not None and thread.is_alive():
            load.done.wait(30)
        try:
            if gw is not None:
                gw.stop()
        finally:
            store.stop()
