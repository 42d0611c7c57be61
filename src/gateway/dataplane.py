"""The data plane: predictions routed by the bandit, rewards applied exactly once, experiment
state. It knows nothing of HTTP or Ray: the router deployment wires it to Starlette routes and
to the variants' DeploymentHandles."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from opentelemetry import trace
from ulid import ULID

from gateway import allocation, monitoring
from gateway.bandit.selection import unit_uniform
from gateway.bandit.srm import SrmTracker
from gateway.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    TooManyRequests,
    Unavailable,
    Unprocessable,
)
from gateway.guardrails import VariantHealth, accuracy_breach, breach, renormalise
from gateway.learning.features import FeatureEncoder, FeatureError
from gateway.policy import Policy
from gateway.state import experiment_state
from gateway.store.experiments import ExperimentStore, RewardItem, RewardRules, Snapshot
from gateway.store.spool import Spool
from gateway.store.writer import STORE_DOWN, StoreWriter
from gateway.telemetry.metrics import GatewayMetrics
from gateway.telemetry.tracing import context_from_carrier, current_carrier, tracer
from gateway.tokens import RewardTokens, TokenClaims

log = logging.getLogger("gateway.dataplane")

MAX_REWARDS_PER_BATCH = 1000
# How long a retraining run may hold its experiment's lock before another may start.
RETRAIN_LOCK_S = 600.0
MAX_ID_LEN = 128
# A label is kept in the request's record and the feedback stream: bounded like an id is.
MAX_LABEL_BYTES = 64 * 1024
# Request ids become part of Redis keys and tokens; a client may bring its own via x-request-id.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class VariantClient(Protocol):
    async def predict(self, matrix: np.ndarray, carrier: dict[str, str]) -> dict[str, Any]: ...


def new_request_id() -> str:
    return str(ULID())


@dataclass
class _ExperimentRuntime:
    policy: Policy  # the policy file's, plus challengers added at run time
    encoder: FeatureEncoder
    variants: dict[str, VariantClient]
    base_policy: Policy | None = None
    champion_seen: str | None = None
    # Sample-ratio mismatch as seen by this replica since it started (weights change over time).
    srm: SrmTracker = field(default_factory=SrmTracker)
    snapshot: Snapshot | None = None
    allocation: allocation.Allocation | None = None
    evaluated_counts: tuple | None = None
    # The last full state (with history), refreshed with the series; read by the gauges.
    state: dict[str, Any] | None = None
    # Online KPIs per variant and the drift report, refreshed by the monitor.
    kpis: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    # discounted_thompson: this replica's discounted counters, folded in at every refresh.
    discount: allocation.DiscountState | None = None

    @property
    def reward_rules(self) -> RewardRules:
        r = self.policy.reward
        return RewardRules(default=r.default, max_per_unit=r.max_per_unit, window_s=r.window_s)


class DataPlane:
    def __init__(
        self,
        policies: Mapping[str, Policy],
        store: ExperimentStore,
        variants: Mapping[str, Mapping[str, VariantClient]],
        tokens: RewardTokens,
        *,
        max_instances: int = 1000,
        refresh_s: float = 0.1,
        series_every_s: float = 2.0,
        monitor_every_s: float = 10.0,
        expire_every_s: float = 1.0,
        variant_timeout_s: float = 10.0,
        challenger_client: Callable[[str, str, str], VariantClient] | None = None,
        retrainer: Callable[[str, str], Awaitable[dict[str, Any]]] | None = None,
        clock: Callable[[], float] = time.time,
        rng: np.random.Generator | None = None,
        spool: Spool | None = None,
        retrain_lock_s: float = RETRAIN_LOCK_S,
    ):
        self.store = store
        self.tokens = tokens
        # While Redis is unreachable, records and rewards are acknowledged once durably spooled
        # and replayed when it is back; without a spool such calls fail with 503.
        self.writer = StoreWriter(store, spool, clock)
        self.max_instances = max_instances
        self.refresh_s = refresh_s
        self.series_every_s = series_every_s
        self._series_at = float("-inf")
        self.monitor_every_s = monitor_every_s
        self._monitor_at = float("-inf")
        self._monitoring: asyncio.Task | None = None
        self.expire_every_s = expire_every_s
        self._expire_at = float("-inf")
        self.clock = clock
        self.rng = rng or np.random.default_rng()
        self.experiments = {
            name: _ExperimentRuntime(p, FeatureEncoder(p.features), dict(variants[name]), p)
            for name, p in policies.items()
        }
        self.challenger_client = challenger_client
        self.retrainer = retrainer
        self.retrain_lock_s = retrain_lock_s
        self._background: set[asyncio.Task] = set()
        self._refresher: asyncio.Task | None = None
        self._refresh_lock = asyncio.Lock()
        self.variant_timeout_s = variant_timeout_s
        self.health: dict[tuple[str, str], VariantHealth] = {}
        self.metrics = GatewayMetrics(lambda: [rt.state for rt in self.experiments.values() if rt.state])

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def spool(self) -> Spool | None:
        return self.writer.spool

    @property
    def store_ok(self) -> bool:
        return self.writer.store_ok

    @store_ok.setter
    def store_ok(self, ok: bool) -> None:
        if ok:
            self.writer.back()
        else:
            self.writer.lost()

    async def start(self) -> None:
        now = self.clock()
        for name in self.experiments:
            await self.store.ensure_experiment(name, now)
        await self.refresh()
        await self.writer.replay(self._replay_reward)
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def stop(self) -> None:
        tasks = [*self._background, *([self._refresher] if self._refresher else [])]
        for task in tasks:
            task.cancel()
        self._refresher = None
        # Wait for them to unwind, so none is left holding a Redis connection mid-command.
        await asyncio.wait(tasks, timeout=5) if tasks else None

    async def _refresh_forever(self) -> None:
        # redis-py can turn a cancellation that lands mid-command into its own TimeoutError, which
        # the handlers below would swallow: a requested cancellation always ends the loop.
        me = asyncio.current_task()
        while not me.cancelling():
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
                self.writer.back()
                await self.writer.replay(self._replay_reward)
            except STORE_DOWN:
                self.writer.lost()
            except Exception:  # keep serving from the last allocation
                log.warning("posterior refresh failed; serving from cached weights", exc_info=True)

    def readiness(self) -> dict[str, Any]:
        return self.writer.readiness()

    async def _replay_reward(self, payload: dict[str, Any]) -> str:
        """One spooled feedback item, judged as of when it was received."""
        (result,) = await self._apply([payload["item"]], now=payload["received_at"], replaying=True)
        if result["status"] == "rejected":
            log.error("spooled feedback for %s refused on replay: %s", result["request_id"], result["error"]["message"])
        return "unknown" if result["status"] == "unknown" else "done"

    async def refresh(self) -> None:
        """Reload counters; when they or the experiment's status moved, recompute the traffic
        weights and apply the promotion rule. Bounded staleness: the request path never waits
        on this. One refresh at a time, so an older snapshot never overwrites a newer one."""
        async with self._refresh_lock:
            await self._refresh()

    async def _refresh(self) -> None:
        snaps = await self.store.snapshots(list(self.experiments))
        now = self.clock()
        for name, rt in self.experiments.items():
            snap = snaps[name]
            rt.snapshot = snap
            rt.discount = allocation.discount(rt.policy, snap.arms, snap.meta, rt.discount)
            self._sync_challengers(name, rt, snap)
            self._maybe_retrain(name, rt, snap)
            key = (
                tuple(sorted((v, c.rewards, c.reward_sum) for v, c in snap.arms.items())),
                tuple(sorted(snap.meta.items())),
            )
            if key != rt.evaluated_counts:
                rt.evaluated_counts = key
                rt.allocation = allocation.allocate(rt.policy, snap.arms, snap.meta, rt.discount)
                await self._maybe_promote(name, rt, snap, now)
            if await self._check_guardrails(rt):
                rt.evaluated_counts = None  # the champion changed: recompute on the next refresh
        if now - self._expire_at >= self.expire_every_s:
            self._expire_at = now
            await self._expire_rewards(now)
        if now - self._monitor_at >= self.monitor_every_s and (self._monitoring is None or self._monitoring.done()):
            self._monitor_at = now
            # Off the refresh path: reading and binning thousands of log entries takes a while.
            self._monitoring = self._spawn(self._monitor_all())
        if now - self._series_at >= self.series_every_s:
            self._series_at = now
            await self._record_series(now)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _expire_rewards(self, now: float) -> None:
        """Requests whose feedback window ended without feedback take the policy's default."""
        for name, rt in self.experiments.items():
            default = rt.policy.reward.default
            if default is not None:
                applied = await self.store.expire_rewards(name, default, now)
                if applied:
                    self.metrics.rewards.add(applied, {"outcome": "defaulted"})

    async def monitor_now(self) -> None:
        """One monitoring pass (KPIs, drift, the drift alarm) now, as the refresh loop runs them."""
        await self._monitor_all()

    async def _monitor_all(self) -> None:
        for name, rt in self.experiments.items():
            if asyncio.current_task().cancelling():
                return
            try:
                await self._monitor(name, rt)
            except Exception:
                log.warning("monitoring %s failed; KPIs and drift keep their last values", name, exc_info=True)

    async def _monitor(self, name: str, rt: _ExperimentRuntime) -> None:
        """Online KPIs and drift from Redis; a drift past the policy's threshold is recorded in
        the history once and triggers a retrain."""
        window = rt.policy.monitoring.window
        snap = rt.snapshot
        if snap is None:
            return
        names = rt.policy.variant_names
        counts = (await self.store.kpi_counts([name]))[name]
        feedback = await self.store.newest_feedback(name, names, window, max_entries=window * 20)
        windowed = monitoring.window_kpis(feedback, window)
        rt.kpis = monitoring.variant_kpis(names, counts, windowed)

        champion = snap.meta.get("champion")
        trained = (snap.dynamic.get(champion) or {}).get("window") if champion else None
        if trained and trained.get("from_t") is not None:
            reference = await self.store.decisions_between(name, trained["from_t"], trained["to_t"], window)
            kind = f"training window of {champion}"
        else:
            started = float(snap.meta.get("started_at", 0))
            reference = await self.store.decisions_since(name, started, window)
            kind = "first predictions served"
        live = await self.store.recent_decisions(name, window)
        rt.drift = await asyncio.to_thread(monitoring.drift_report, rt.policy, reference, live, kind)
        await self._drift_alarm(name, rt, snap)

    async def _drift_alarm(self, name: str, rt: _ExperimentRuntime, snap: Snapshot) -> None:
        spec = rt.base_policy.retrain
        threshold = spec.drift_psi
        worst = rt.drift.get("max_psi") if rt.drift else None
        if threshold is None or worst is None:
            return
        alarmed = snap.meta.get("drift_alarm") == "1"
        if worst > threshold and not alarmed:
            top = sorted({**rt.drift["features"], **{f"prediction:{v}": x for v, x in rt.drift["predictions"].items()}}.items(),
                         key=lambda kv: -kv[1])[:5]
            entry = {"action": "drift_alarm", "at": self.clock(), "by": "monitor",
                     "reason": f"PSI {worst:.3f} exceeds retrain.drift_psi {threshold}",
                     "evidence": {"psi": dict(top), "reference": rt.drift["reference"],
                                  "reference_rows": rt.drift["reference_rows"], "live_rows": rt.drift["live_rows"]}}
            if not await self.store.annotate(name, "drift_alarm", "1", entry, only_if_changed=True):
                return  # another pass or replica raised it first
            log.warning("drift in %s: %s", name, entry["reason"])
            if self.retrainer is not None and spec.enabled:
                # Some fresh labels are needed, or the retrainer would learn the old world again.
                self._spawn(self._claim_and_retrain(name, max(1, spec.every_labels // 4), "drift"))
        elif worst < threshold / 2 and alarmed:
            # Hysteresis: the alarm re-arms only once the drift has clearly gone.
            await self.store.set_meta(name, "drift_alarm", "0")

    async def _record_series(self, now: float) -> None:
        for name, rt in self.experiments.items():
            state = experiment_state(rt.policy, rt.snapshot, await self.store.history(name), rt.discount)
            rt.srm.update(rt.allocation.shares if rt.allocation else {}, {v["name"]: v["requests"] for v in state["variants"]})
            state["srm"] = rt.srm.result()
            state["kpis"], state["drift"] = rt.kpis, rt.drift
            rt.state = state
            point = {
                "t": now,
                "status": state["status"],
                "champion": state["champion"],
                "variants": {
                    v["name"]: {
                        k: v[k]
                        for k in ("traffic_share", "prob_best", "mean", "credible_interval", "requests", "rewards")
                    }
                    for v in state["variants"]
                },
            }
            await self.store.append_series(name, point, self.series_every_s)

    def _sync_challengers(self, name: str, rt: _ExperimentRuntime, snap: Snapshot) -> None:
        """Pick up challengers the retrainer added (by any replica) since the last refresh."""
        new = [v for v in snap.dynamic.values() if v["name"] not in rt.variants]
        if not new or self.challenger_client is None:
            return
        for v in new:
            rt.variants[v["name"]] = self.challenger_client(name, v["name"], v["sha256"])
        rt.policy = allocation.effective_policy(rt.base_policy, snap.dynamic)
        rt.evaluated_counts = None  # recompute the allocation with the new arm
        log.info("serving challenger(s) %s in %s", [v["name"] for v in new], name)

    def _maybe_retrain(self, name: str, rt: _ExperimentRuntime, snap: Snapshot) -> None:
        """Every retrain.every_labels new labels, one replica claims the turn and asks the
        retrainer; the request path never waits for it."""
        spec = rt.base_policy.retrain
        if self.retrainer is None or not spec.enabled:
            return
        if int(snap.meta.get("labels_since_retrain", 0)) < spec.every_labels:
            return
        self._spawn(self._claim_and_retrain(name, spec.every_labels, "labels"))

    async def _claim_and_retrain(self, name: str, labels_needed: int, trigger: str) -> dict[str, Any] | None:
        owner = secrets.token_hex(8)
        if not await self.store.claim_retrain(name, labels_needed, self.retrain_lock_s, owner):
            return None
        # The lock is this run's while it runs, however long: renewed, and freed only by us.
        keeper = self._spawn(self._keep_retrain_lock(name, owner))
        try:
            return await self.retrainer(name, trigger)
        except Exception:
            log.exception("retraining %s failed; serving goes on with the current variants", name)
            raise
        finally:
            keeper.cancel()
            with contextlib.suppress(*STORE_DOWN):
                await self.store.release_retrain(name, owner)

    async def _keep_retrain_lock(self, name: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self.retrain_lock_s / 3)
            try:
                if not await self.store.renew_retrain(name, owner, self.retrain_lock_s):
                    log.error("the retraining lock of %s was lost; another run may start", name)
                    return
            except STORE_DOWN:
                continue  # tried again; the lock's ttl covers a short outage

    async def retrain_now(self, experiment: str) -> dict[str, Any]:
        self._runtime(experiment)
        if self.retrainer is None:
            raise Unavailable("this gateway runs without a retrainer", code="no_retrainer")
        try:
            outcome = await self._claim_and_retrain(experiment, 0, "admin")
        except Exception:
            raise Unavailable("the retraining run failed; see the retrainer's log", code="retrain_failed") from None
        if outcome is None:
            raise Conflict(f"a retraining of {experiment!r} is already running", code="retrain_running")
        await self.refresh()
        return outcome

    async def _maybe_promote(self, name: str, rt: _ExperimentRuntime, snap: Snapshot, now: float) -> None:
        decision = allocation.promotion_decision(rt.policy, snap.arms, snap.meta, now)
        if decision is None or decision.outcome != "promote":
            return
        entry = {
            "action": "promote",
            "variant": decision.variant,
            "at": now,
            "reason": decision.reason,
            "evidence": decision.evidence,
            "by": "rule",
        }
        with tracer().start_as_current_span("experiment.promote") as span:
            span.set_attributes({"gateway.experiment": name, "gateway.variant": decision.variant})
            done = await self.store.transition(
                name, expected_status="exploring", new_status="promoted", champion=decision.variant, entry=entry, now=now
            )
        if done:
            log.info("promoted %s in %s: %s", decision.variant, name, decision.reason)
            snaps = await self.store.snapshots([name])
            rt.snapshot = snaps[name]
            rt.discount = allocation.discount(rt.policy, rt.snapshot.arms, rt.snapshot.meta, rt.discount)
            rt.allocation = allocation.allocate(rt.policy, rt.snapshot.arms, rt.snapshot.meta, rt.discount)

    # -- predictions -----------------------------------------------------------------------

    def _runtime(self, experiment: str) -> _ExperimentRuntime:
        rt = self.experiments.get(experiment)
        if rt is None:
            raise NotFound(f"no experiment named {experiment!r}", code="experiment_not_found")
        return rt

    def encode(self, rt: _ExperimentRuntime, instances: Any) -> np.ndarray:
        if isinstance(instances, list) and len(instances) > self.max_instances:
            raise Unprocessable(
                f"instances: at most {self.max_instances} rows per request, got {len(instances)}", code="too_many_instances"
            )
        try:
            return rt.encoder.encode(instances)
        except FeatureError as err:
            raise Unprocessable(str(err), code="invalid_instances") from None

    async def predict(self, experiment: str, body: Any, request_id: str) -> dict[str, Any]:
        rt = self._runtime(experiment)
        if not REQUEST_ID.fullmatch(request_id):
            raise BadRequest(
                "x-request-id: 1 to 128 characters from letters, digits and . _ : -", code="invalid_request_id"
            )
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with 'instances'", code="invalid_body")
        if "instances" not in body:
            raise Unprocessable("instances: this field is required", code="invalid_instances")
        unit_id = body.get("unit_id")
        if unit_id is not None and (not isinstance(unit_id, str) or not 0 < len(unit_id) <= MAX_ID_LEN):
            raise Unprocessable(f"unit_id: a string of 1 to {MAX_ID_LEN} characters", code="invalid_unit_id")
        if unit_id is None and rt.policy.reward.max_per_unit is not None:
            # The per-unit reward quota counts by unit: without one, a client could bypass it.
            raise Unprocessable(
                f"unit_id: required, since experiment {experiment!r} limits rewards per unit "
                f"(reward.max_per_unit = {rt.policy.reward.max_per_unit})", code="invalid_unit_id")
        matrix = self.encode(rt, body["instances"])
        variant, propensity = self._select(experiment, rt, unit_id)
        started = time.perf_counter()
        result = await self._call_variant(rt, variant, matrix)
        labels = {"experiment": experiment, "variant": variant}
        self.metrics.predict_duration.record(time.perf_counter() - started, labels)
        predictions = result["predictions"]
        now = self.clock()
        window = rt.policy.reward.window_s
        has_default = rt.policy.reward.default is not None
        # With a default reward, late feedback is still taken (kept, not learned) for one more window.
        keep_s = 2 * window if has_default else window
        carrier = current_carrier()
        record = {
            "t": repr(now), "pred": json.dumps(predictions), "prop": repr(propensity), "tp": carrier.get("traceparent", ""),
        }
        if result.get("scores") is not None:
            record["scores"] = json.dumps(result["scores"])
        if unit_id:
            record["unit"] = unit_id
        log_entry = {
            "rid": request_id,
            "t": repr(now),
            "variant": variant,
            "prop": repr(propensity),
            "x": json.dumps(body["instances"]),
            "pred": json.dumps(predictions),
            "traceparent": carrier.get("traceparent", ""),
        }
        with tracer().start_as_current_span("redis.record_prediction") as span:
            span.set_attribute("db.system", "redis")
            fresh = await self.writer.record(
                dict(experiment=experiment, request_id=request_id, variant=variant, record=record, ttl_s=keep_s,
                     log_entry=log_entry, deadline=now + window if has_default else None, nonce=secrets.token_hex(8))
            )
        if not fresh:
            raise Conflict(f"request id {request_id!r} was already used; send a new x-request-id", code="request_id_in_use")
        token = self.tokens.sign(request_id, TokenClaims(experiment, variant, now + keep_s))
        self.metrics.requests.add(1, labels)
        return {
            "request_id": request_id,
            "experiment": experiment,
            "variant": variant,
            "predictions": predictions,
            "propensity": propensity,
            "reward_token": token,
        }

    def _health(self, experiment: str, variant: str) -> VariantHealth:
        return self.health.setdefault((experiment, variant), VariantHealth())

    def _select(self, experiment: str, rt: _ExperimentRuntime, unit_id: str | None) -> tuple[str, float]:
        with tracer().start_as_current_span("bandit.select") as span:
            alloc = rt.allocation
            if alloc is None:
                raise Unavailable("the experiment's state is not loaded yet", code="not_ready")
            u = unit_uniform(experiment, unit_id) if unit_id else float(self.rng.random())
            now = self.clock()
            usable = {v for v in alloc.shares if self._health(experiment, v).available(now)}
            if len(usable) < len(alloc.shares):
                # A breaker is open: draw among the healthy variants with their shares
                # renormalised, and log that probability, the one each was really served with.
                shares = renormalise(alloc.shares, usable)
                if not shares:
                    raise Unavailable(f"no variant of {experiment!r} is healthy; retry later", code="no_healthy_variant")
                alloc = allocation.Allocation(shares, alloc.mode)
                span.set_attribute("gateway.breaker_rerouted", True)
            variant, propensity = alloc.pick(u)
            self._health(experiment, variant).begin_call(now)
            span.set_attributes(
                {
                    "gateway.experiment": experiment,
                    "gateway.variant": variant,
                    "gateway.propensity": propensity,
                    "gateway.allocation_mode": alloc.mode,
                    "gateway.sticky": bool(unit_id),
                }
            )
            return variant, propensity

    async def _call_variant(
        self, rt: _ExperimentRuntime, variant: str, matrix: np.ndarray, judged: bool = True
    ) -> dict[str, Any]:
        """The variant's answer. `judged`: the outcome counts toward its breaker and guardrails
        (not for calls outside the experiment, which anyone may send)."""
        client = rt.variants[variant]
        health = self._health(rt.policy.experiment, variant)
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(client.predict(matrix, current_carrier()), self.variant_timeout_s)
        except (Unavailable, asyncio.CancelledError):
            # The client's own verdict (e.g. the variant's queue is full: overload, not a fault
            # of the model) or a caller that went away: no evidence either way, but a half-open
            # breaker's trial is over, so the next call may try again.
            if judged:
                health.abandon_trial()
            raise
        except Exception as err:
            if judged:
                await self._record_health(rt, variant, False, time.perf_counter() - started)
            kind = "timed out" if isinstance(err, (asyncio.TimeoutError, TimeoutError)) else "failed"
            log.error("variant %s of %s %s: %s", variant, rt.policy.experiment, kind, type(err).__name__)
            raise Unavailable(f"variant {variant!r} {kind}; retry the request", code="variant_unavailable") from None
        if judged:
            await self._record_health(rt, variant, True, time.perf_counter() - started)
        return result

    async def _record_health(self, rt: _ExperimentRuntime, variant: str, ok: bool, latency_s: float) -> None:
        self._health(rt.policy.experiment, variant).record(ok, latency_s, self.clock())
        if await self._check_guardrails(rt):
            await self.refresh()

    async def _check_guardrails(self, rt: _ExperimentRuntime) -> bool:
        """A promoted champion that breaks its guardrails (or whose breaker opened) is rolled
        back to the previous champion, with the evidence in the history."""
        meta = rt.snapshot.meta if rt.snapshot else {}
        champion = meta.get("champion")
        if meta.get("status") != "promoted" or not champion:
            return False
        experiment = rt.policy.experiment
        health = self._health(experiment, champion)
        if champion != rt.champion_seen:
            # A new champion (by the rule, an operator, a rollback, on any replica) is judged by
            # what it does as champion: its guardrail window starts now.
            rt.champion_seen = champion
            health.outcomes.clear()
        why = breach(health, rt.policy.guardrails)
        kpi_window = (rt.kpis or {}).get(champion, {}).get("window")
        why = why or accuracy_breach(kpi_window, rt.policy.guardrails)
        if why is None:
            return False
        from gateway.control import rollback_champion  # control builds on the data plane

        entry = {"action": "rollback", "at": self.clock(), "by": "guardrail", "reason": why,
                 "evidence": {"variant": champion, **health.stats(), "kpis": kpi_window,
                              "guardrails": rt.policy.guardrails.model_dump()}}
        done = await rollback_champion(self, experiment, dict(meta), entry)
        if done:
            log.warning("rolled back %s in %s: %s", champion, experiment, why)
            blocked = sorted(allocation.guardrail_blocked(meta) | {champion})
            await self.store.set_meta(experiment, "guardrail_blocked", json.dumps(blocked))
        return done

    async def predict_variant(self, experiment: str, variant: str, matrix: np.ndarray) -> dict[str, Any]:
        """A named variant, outside the experiment: nothing is logged for learning."""
        rt = self._runtime(experiment)
        if variant not in rt.variants:
            raise NotFound(f"experiment {experiment!r} has no variant {variant!r}", code="variant_not_found")
        return await self._call_variant(rt, variant, matrix, judged=False)

    # -- rewards ---------------------------------------------------------------------------

    async def rewards(self, body: Any) -> tuple[int, dict[str, Any]]:
        """One item answers with its own status; a batch answers 200 with a result per item."""
        if isinstance(body, dict) and "rewards" in body:
            items = body["rewards"]
            if not isinstance(items, list) or not items:
                raise Unprocessable("rewards: a non-empty list of feedback items", code="invalid_rewards")
            if len(items) > MAX_REWARDS_PER_BATCH:
                raise Unprocessable(
                    f"rewards: at most {MAX_REWARDS_PER_BATCH} items per batch, got {len(items)}", code="too_many_rewards"
                )
            results = await self._apply(items)
            for r in results:
                r.pop("_error", None)
            summary = {
                s: sum(1 for r in results if r["status"] == s) for s in ("accepted", "duplicate", "late", "queued", "rejected")
            }
            return 200, {"results": results, **summary}
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object: one feedback item or {'rewards': [...]}", code="invalid_body")
        (result,) = await self._apply([body])
        if result["status"] == "rejected":
            err = result.pop("_error")
            raise err
        return (202 if result["status"] == "queued" else 200), result

    def _validate_item(self, item: Any, now: float) -> tuple[str, TokenClaims, float | None, Any]:
        if not isinstance(item, dict):
            raise Unprocessable("each feedback item must be an object", code="invalid_feedback")
        rid = item.get("request_id")
        if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_LEN:
            raise Unprocessable(f"request_id: a string of 1 to {MAX_ID_LEN} characters", code="invalid_request_id")
        claims = self.tokens.verify(rid, item.get("token"), now)
        rt = self._runtime(claims.experiment)
        has_reward, has_label = "reward" in item, "label" in item
        if not has_reward and not has_label:
            raise Unprocessable("a feedback item needs 'reward' or 'label'", code="invalid_feedback")
        reward = None
        if has_reward:
            value = item["reward"]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise Unprocessable("reward: must be a number", code="invalid_reward")
            lo, hi = rt.policy.reward.bounds
            if not math.isfinite(value) or not lo <= value <= hi:
                raise Unprocessable(f"reward: {value!r} is outside the policy's range [{lo}, {hi}]", code="invalid_reward")
            reward = float(value)
        label = item.get("label")
        if has_label and (label is None or isinstance(label, (dict,))):
            raise Unprocessable("label: a value or a list of values, one per instance", code="invalid_label")
        if has_label and len(json.dumps(label)) > MAX_LABEL_BYTES:
            raise Unprocessable(f"label: at most {MAX_LABEL_BYTES} bytes as JSON", code="invalid_label")
        return rid, claims, reward, label

    async def _apply(self, items: list[Any], now: float | None = None, replaying: bool = False) -> list[dict[str, Any]]:
        """Each item's result. Replaying a spooled item, a request not (yet) in Redis comes back
        with the internal status 'unknown' (the writer keeps it for another try)."""
        now = self.clock() if now is None else now
        results: list[dict[str, Any]] = [{} for _ in items]
        pending: list[tuple[int, str, TokenClaims, float | None, Any]] = []
        for i, item in enumerate(items):
            rid = item.get("request_id") if isinstance(item, dict) else None
            try:
                pending.append((i, *self._validate_item(item, now)))
            except GatewayError as err:
                results[i] = _rejected(rid, err)
        if self.writer.spooling and not replaying:
            return await self._queue(items, [p for p in pending if not results[p[0]]], results, now)
        unknown: list[tuple[int, str, TokenClaims, float | None, Any]] = []
        try:
            unknown = await self._rewards_from_labels(pending, results)
            waiting = {p[0] for p in unknown}
            ready = [p for p in pending if not results[p[0]] and p[0] not in waiting]
            with tracer().start_as_current_span("redis.apply_rewards") as span:
                span.set_attributes({"db.system": "redis", "gateway.reward_items": len(ready)})
                outcomes = await self.store.apply_rewards(
                    [
                        RewardItem(c.experiment, rid, c.variant, r, "" if label is None else json.dumps(label))
                        for _, rid, c, r, label in ready
                    ],
                    now,
                    {name: rt.reward_rules for name, rt in self.experiments.items()},
                )
        except STORE_DOWN:
            if self.spool is None or replaying:
                raise
            self.writer.lost()
            # The reward script claims each request once: any item applied before the cut is
            # a harmless duplicate when replayed.
            return await self._queue(items, [p for p in pending if results[p[0]].get("status") != "rejected"],
                                     [r if r.get("status") == "rejected" else {} for r in results], now)
        server_span = trace.get_current_span()
        for p, (outcome, traceparent) in zip(ready, outcomes):
            i, rid, claims, reward, _ = p
            if outcome == "accepted" and traceparent:
                # The feedback's span points at the prediction it rewards (another trace).
                link = trace.get_current_span(context_from_carrier({"traceparent": traceparent})).get_span_context()
                if link.is_valid:
                    server_span.add_link(link, {"gateway.request_id": rid})
            if outcome == "accepted":
                self.metrics.reward_sum.add(reward, {"experiment": claims.experiment, "variant": claims.variant})
            if outcome in ("accepted", "duplicate", "late"):
                results[i] = {"request_id": rid, "status": outcome, "variant": claims.variant, "reward": reward}
            elif outcome == "quota":
                limit = self.experiments[claims.experiment].policy.reward
                results[i] = _rejected(rid, TooManyRequests(
                    f"this unit already sent {limit.max_per_unit} rewards within {limit.window_s:g} s",
                    code="reward_quota_exceeded"))
            elif outcome == "invalid":
                results[i] = _rejected(rid, Unprocessable(
                    f"reward: {reward!r} would make the variant's reward sums overflow", code="invalid_reward"))
            elif outcome == "unknown":
                unknown.append(p)
            else:
                results[i] = _rejected(rid, Forbidden("the token is for another variant", code="token_invalid"))
        if unknown:
            await self._unknown(items, unknown, results, now, replaying)
        for r in results:
            self.metrics.rewards.add(1, {"outcome": r["status"]})
        return results

    async def _unknown(self, items: list[Any], unknown: list, results: list[dict[str, Any]], now: float, replaying: bool) -> None:
        """Feedback with a valid token for a request Redis does not know: its record may still
        be in a spool (this replica's or another's), so a 202 now keeps it until it arrives."""
        if replaying:
            for i, rid, claims, reward, _ in unknown:
                results[i] = {"request_id": rid, "status": "unknown", "variant": claims.variant, "reward": reward}
        elif await self.writer.record_may_be_spooled():
            await self._queue(items, unknown, results, now, count=False)
        else:
            for i, rid, *_ in unknown:
                results[i] = _rejected(rid, NotFound(f"no served request {rid!r} (unknown or expired)", code="request_not_found"))

    async def _queue(self, items: list[Any], entries: list, results: list[dict[str, Any]], now: float,
                     count: bool = True) -> list[dict[str, Any]]:
        """Spool these items (durably, then acknowledged as 'queued'); the rest keep their
        results."""
        await self.writer.queue_rewards(
            [{"item": items[i], "received_at": now, "until": claims.expires_at} for i, _, claims, _, _ in entries])
        for i, rid, claims, reward, _ in entries:
            results[i] = {"request_id": rid, "status": "queued", "variant": claims.variant, "reward": reward}
        if count:
            for r in results:
                self.metrics.rewards.add(1, {"outcome": r["status"]})
        return results

    async def _rewards_from_labels(self, pending: list, results: list[dict[str, Any]]) -> list:
        """Turn labels into rewards by comparing them with what was served ('match'); the
        entries whose request Redis does not know (yet) are returned."""
        need = [(k, p) for k, p in enumerate(pending) if p[3] is None and not results[p[0]]]
        unknown = []
        by_exp: dict[str, list[tuple[int, Any]]] = {}
        for k, p in need:
            by_exp.setdefault(p[2].experiment, []).append((k, p))
        for exp, group in by_exp.items():
            records = await self.store.read_requests(exp, [p[1] for _, p in group])
            for (k, p), record in zip(group, records):
                i, rid, claims, _, label = p
                if not record or "pred" not in record:
                    unknown.append(p)
                    continue
                predictions = json.loads(record["pred"])
                labels = label if isinstance(label, list) else [label]
                if len(labels) != len(predictions):
                    results[i] = _rejected(
                        rid,
                        Unprocessable(
                            f"label: {len(labels)} labels for {len(predictions)} predictions", code="invalid_label"
                        ),
                    )
                    continue
                matches = sum(_same(a, b) for a, b in zip(labels, predictions))
                pending[k] = (i, rid, claims, matches / len(predictions), label)
        return unknown

    # -- state -----------------------------------------------------------------------------

    def experiment_names(self) -> list[str]:
        return list(self.experiments)

    async def state(self, experiment: str) -> dict[str, Any]:
        rt = self._runtime(experiment)
        snap = (await self.store.snapshots([experiment]))[experiment]
        history = await self.store.history(experiment)
        state = experiment_state(rt.policy, snap, history, rt.discount)
        state["srm"] = rt.srm.result()
        state["kpis"], state["drift"] = rt.kpis, rt.drift
        return state

    async def series(self, experiment: str, since: float | None = None) -> dict[str, Any]:
        self._runtime(experiment)
        return {
            "experiment": experiment,
            "points": await self.store.series(experiment, since),
            "history": await self.store.history(experiment),
        }

    async def states(self) -> list[dict[str, Any]]:
        return [await self.state(name) for name in self.experiments]


def _same(label: Any, prediction: Any) -> bool:
    if isinstance(label, (int, float)) and not isinstance(label, bool) and isinstance(prediction, (int, float)):
        return float(label) == float(prediction)
    return str(label) == str(prediction)


def _rejected(request_id: Any, err: GatewayError) -> dict[str, Any]:
    return {
        "request_id": request_id if isinstance(request_id, str) else None,
        "status": "rejected",
        "error": err.to_body()["error"],
        "http_status": err.status,
        "_error": err,
    }
