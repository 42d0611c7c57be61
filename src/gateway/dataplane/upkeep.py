"""Upkeep: the work a router replica does beside requests. Every refresh reloads the counters,
recomputes the traffic weights, applies the promotion rule (gateway.dataplane.promotions takes
its steps) and the guardrails, replays the spool and sweeps expired rewards; less often it
monitors KPIs and drift, records the dashboard's series and triggers retraining. The request path
never waits on it."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import monitoring
from gateway.dataplane import evaluation, promotions
from gateway.decisions import allocation, linear, segments
from gateway.dataplane.runtime import ExperimentRuntime, Experiments, VariantClient
from gateway.dataplane.transitions import rollback_champion
from gateway.errors import Conflict, Unavailable
from gateway.decisions.guardrails import VariantHealth, accuracy_breach, breach
from gateway.decisions.state import experiment_state
from gateway.store.experiments import ExperimentStore
from gateway.store.snapshot import Snapshot
from gateway.store.writer import STORE_DOWN, ReplayReward, StoreWriter
from gateway.telemetry.metrics import GatewayMetrics

log = logging.getLogger("gateway.upkeep")

# The IPS-corrected means read this many monitoring windows of the newest served requests.
CORRECTED_ROWS_PER_WINDOW = 5

# How often a challenger in shadow is judged (one read of its paired counts): its evidence is
# anytime-valid, so a verdict may come with any label.
SHADOW_FIRST_EVERY_S = 1.0

# How long a retraining run may hold its experiment's lock without renewing it.
RETRAIN_LOCK_S = 600.0


class Upkeep:
    def __init__(
        self,
        experiments: Experiments,
        store: ExperimentStore,
        writer: StoreWriter,
        metrics: GatewayMetrics,
        health: Callable[[str, str], VariantHealth],
        replay_reward: ReplayReward,
        *,
        clock: Callable[[], float],
        refresh_s: float = 0.1,
        series_every_s: float = 2.0,
        monitor_every_s: float = 10.0,
        expire_every_s: float = 1.0,
        challenger_client: Callable[[str, str, str], VariantClient] | None = None,
        retrainer: Callable[[str, str], Awaitable[dict[str, Any]]] | None = None,
        retrain_lock_s: float = RETRAIN_LOCK_S,
    ):
        self.experiments = experiments
        self.store = store
        self.writer = writer
        self.metrics = metrics
        self._health = health
        self.replay_reward = replay_reward
        self.clock = clock
        self.refresh_s = refresh_s
        self.series_every_s = series_every_s
        self._series_at = float("-inf")
        self.monitor_every_s = monitor_every_s
        self._monitor_at = float("-inf")
        self._monitoring: asyncio.Task | None = None
        self.expire_every_s = expire_every_s
        self._expire_at = float("-inf")
        self.challenger_client = challenger_client
        self.retrainer = retrainer
        self.retrain_lock_s = retrain_lock_s
        self._background: set[asyncio.Task] = set()
        self._refresher: asyncio.Task | None = None
        self._refresh_lock = asyncio.Lock()

    async def start(self) -> None:
        await self.refresh()
        await self.writer.replay(self.replay_reward)
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
                await self.writer.replay(self.replay_reward)
            except STORE_DOWN:
                self.writer.lost()
            except Exception:  # keep serving from the last allocation
                log.warning("posterior refresh failed; serving from cached weights", exc_info=True)

    async def refresh(self) -> None:
        """Reload counters; when they or the experiment's status moved, recompute the traffic
        weights and apply the promotion rule. Bounded staleness: the request path never waits
        on this. One refresh at a time, so an older snapshot never overwrites a newer one."""
        async with self._refresh_lock:
            await self._refresh()

    async def _refresh(self) -> None:
        snaps = await self.store.snapshots(list(self.experiments), self.experiments.linear_contexts())
        now = self.clock()
        for name, rt in self.experiments.items():
            snap = snaps[name]
            rt.snapshot = snap
            rt.discount = allocation.discount(rt.policy, snap.arms, snap.meta, rt.discount)
            self._sync_challengers(name, rt, snap)
            gone = frozenset(allocation.retired(snap.meta))
            if gone != rt.view.retired:  # a retired variant's features are no longer required
                rt.set_policy(rt.policy, gone)
            rt.shadows = tuple(v for v in allocation.shadow_arms(rt.policy, snap.meta) if v in rt.variants)
            self._maybe_retrain(name, rt, snap)
            key = (
                tuple(sorted((v, c.rewards, c.reward_sum) for v, c in snap.arms.items())),
                tuple(sorted(snap.meta.items())),
                tuple(sorted((s, v, c.rewards, c.reward_sum) for s, per in snap.segments.items() for v, c in per.items())),
            )
            if key != rt.evaluated_counts:
                rt.evaluated_counts = key
                try:
                    rt.allocation = allocation.allocate(rt.policy, snap.arms, snap.meta, rt.discount)
                    if segments.is_contextual(rt.policy):
                        # Monte-Carlo per segment: off the event loop, which serves the requests.
                        rt.segments = await asyncio.to_thread(segments.routing, rt.policy, snap)
                        await promotions.promote_segments(self.store, name, rt, snap, now)
                    elif linear.is_linear(rt.policy):
                        rt.linear = await asyncio.to_thread(linear.routing, rt.policy, snap)
                    await promotions.promote_by_rule(self.store, name, rt, snap, now,
                                                     self.experiments.linear_contexts())
                except STORE_DOWN:
                    rt.evaluated_counts = None  # a promotion step the store missed runs again once it is back
                    raise
            if await self.check_guardrails(rt):
                rt.evaluated_counts = None  # the champion changed: recompute on the next refresh
            if rt.shadows and now - rt.shadow_checked_at >= SHADOW_FIRST_EVERY_S:
                rt.shadow_checked_at = now
                await promotions.judge_shadows(self.store, name, rt, snap, self.clock)
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
                applied = await self.store.expire_rewards(name, default, now, linear_context=rt.linear_context)
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

    async def _monitor(self, name: str, rt: ExperimentRuntime) -> None:
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
        try:
            rt.corrected = await evaluation.corrected_means(self.store, rt, CORRECTED_ROWS_PER_WINDOW * window,
                                                            self.clock())
        except Exception:  # drift and its alarm below must go on; the corrected means keep their last value
            log.warning("corrected means of %s not computed", name, exc_info=True)

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

    async def _drift_alarm(self, name: str, rt: ExperimentRuntime, snap: Snapshot) -> None:
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
            state = experiment_state(rt.policy, rt.snapshot, await self.store.history(name), rt.discount, rt.segments)
            rt.srm.update(rt.allocation.shares if rt.allocation else {}, {v["name"]: v["requests"] for v in state["variants"]})
            rt.state = state = rt.as_served(state)
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

    def _sync_challengers(self, name: str, rt: ExperimentRuntime, snap: Snapshot) -> None:
        """Pick up challengers the retrainer added (by any replica) since the last refresh."""
        new = [v for v in snap.dynamic.values() if v["name"] not in rt.variants]
        if not new or self.challenger_client is None:
            return
        for v in new:
            rt.variants[v["name"]] = self.challenger_client(name, v["name"], v["sha256"])
        rt.set_policy(allocation.effective_policy(rt.base_policy, snap.dynamic))
        rt.evaluated_counts = None  # recompute the allocation with the new arm
        log.info("serving challenger(s) %s in %s", [v["name"] for v in new], name)

    def _maybe_retrain(self, name: str, rt: ExperimentRuntime, snap: Snapshot) -> None:
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
        self.experiments.runtime(experiment)
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

    async def check_guardrails(self, rt: ExperimentRuntime) -> bool:
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
        entry = {"action": "rollback", "at": self.clock(), "by": "guardrail", "reason": why,
                 "evidence": {"variant": champion, **health.stats(), "kpis": kpi_window,
                              "guardrails": rt.policy.guardrails.model_dump()}}
        done = await rollback_champion(self.store, rt.policy, experiment, dict(meta), entry)
        if done:
            log.warning("rolled back %s in %s: %s", champion, experiment, why)
            blocked = sorted(allocation.guardrail_blocked(meta) | {champion})
            await self.store.set_meta(experiment, "guardrail_blocked", json.dumps(blocked))
        return done
