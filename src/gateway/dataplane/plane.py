"""The data plane: predictions routed by the bandit, feedback applied exactly once, experiment
state. It knows nothing of HTTP or Ray: the router deployment wires it to Starlette routes and
to the variants. This façade holds the predict path and the lifecycle; feedback, upkeep, the
Redis-or-spool writer and the experiments' runtimes are its parts."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np
from ulid import ULID

from gateway.decisions import allocation, linear, segments
from gateway.bandit.selection import unit_uniform
from gateway.dataplane import evaluation
from gateway.dataplane.feedback import Feedback
from gateway.dataplane.runtime import ExperimentRuntime, Experiments, VariantClient
from gateway.dataplane.shadow import ShadowMirror
from gateway.dataplane.upkeep import RETRAIN_LOCK_S, Upkeep
from gateway.errors import BadRequest, Conflict, NotFound, Unavailable, Unprocessable
from gateway.decisions.guardrails import VariantHealth, renormalise
from gateway.learning import aggregates
from gateway.learning.features import FeatureError
from gateway.policy import Policy
from gateway.decisions.state import experiment_state
from gateway.schemas import PredictRequest, RewardBatch
from gateway.schemas.feedback import SentItem
from gateway.store.experiments import ExperimentStore
from gateway.store.spool import Spool
from gateway.store.writer import REFUSED, STORE_DOWN, WRITTEN, StoreWriter
from gateway.telemetry.metrics import GatewayMetrics
from gateway.telemetry.tracing import child_span, current_carrier
from gateway.dataplane.tokens import RewardTokens, TokenClaims

log = logging.getLogger("gateway.dataplane")

# Request ids become part of Redis keys and tokens; a client may bring its own via x-request-id.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    return str(ULID())


def covariate_of(policy: Policy, instances: list) -> float | None:
    """variance_reduction: the request's covariate, the mean of its rows' values of the feature
    (validated numbers already); None without one, or beyond +-1e100 (its square must stay finite)."""
    spec = policy.variance_reduction
    if spec is None:
        return None
    index = [f.name for f in policy.features].index(spec.covariate)
    values = [float(row[spec.covariate] if isinstance(row, Mapping) else row[index]) for row in instances]
    x = sum(values) / len(values)
    return x if abs(x) <= 1e100 else None


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
        self.clock = clock
        self.rng = rng or np.random.default_rng()
        self.max_instances = max_instances
        self.variant_timeout_s = variant_timeout_s
        self.experiments = Experiments.build(policies, variants)
        self.health: dict[tuple[str, str], VariantHealth] = {}
        self.metrics = GatewayMetrics(lambda: [rt.state for rt in self.experiments.values() if rt.state])
        # While Redis is unreachable, records and rewards are acknowledged once durably spooled
        # and replayed when it is back; without a spool such calls fail with 503.
        self.writer = StoreWriter(store, spool, clock)
        self.feedback = Feedback(self.experiments, store, self.writer, tokens, self.metrics, clock)
        self.upkeep = Upkeep(
            self.experiments, store, self.writer, self.metrics, self._health, self.feedback.replay, clock=clock,
            refresh_s=refresh_s, series_every_s=series_every_s, monitor_every_s=monitor_every_s,
            expire_every_s=expire_every_s, challenger_client=challenger_client, retrainer=retrainer,
            retrain_lock_s=retrain_lock_s,
        )
        self.shadow = ShadowMirror(self.experiments, store, self.metrics, clock)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        now = self.clock()
        for name in self.experiments:
            await self.store.ensure_experiment(name, now)
        await self.upkeep.start()

    async def stop(self) -> None:
        await self.shadow.stop()
        await self.upkeep.stop()

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

    @property
    def challenger_client(self) -> Callable[[str, str, str], VariantClient] | None:
        return self.upkeep.challenger_client

    def readiness(self) -> dict[str, Any]:
        return self.writer.readiness()

    async def refresh(self) -> None:
        await self.upkeep.refresh()

    async def monitor_now(self) -> None:
        await self.upkeep.monitor_now()

    async def retrain_now(self, experiment: str) -> dict[str, Any]:
        return await self.upkeep.retrain_now(experiment)

    async def rewards(self, feedback: RewardBatch | SentItem | Any) -> tuple[int, dict[str, Any]]:
        return await self.feedback.rewards(feedback)

    def runtime(self, experiment: str) -> ExperimentRuntime:
        """The experiment's runtime; 404 for one this gateway does not serve."""
        return self.experiments.runtime(experiment)

    # -- predictions -----------------------------------------------------------------------

    def encode(self, rt: ExperimentRuntime, instances: Any) -> np.ndarray:
        """The request's frame without aggregates (missing): derived features included."""
        return rt.view.complete(self._rows(rt, instances))

    def _rows(self, rt: ExperimentRuntime, instances: Any) -> np.ndarray:
        """The request's rows checked and encoded (the request features' columns only)."""
        if isinstance(instances, list) and len(instances) > self.max_instances:
            raise Unprocessable(
                f"instances: at most {self.max_instances} rows per request, got {len(instances)}", code="too_many_instances"
            )
        try:
            return rt.view.encoder.encode(instances)
        except FeatureError as err:
            raise Unprocessable(str(err), code="invalid_instances") from None

    def admit(self, experiment: str, request_id: str) -> ExperimentRuntime:
        """What a prediction is judged by before its body: the experiment (404) and the request id
        (400)."""
        rt = self.runtime(experiment)
        if not REQUEST_ID.fullmatch(request_id):
            raise BadRequest(
                "x-request-id: 1 to 128 characters from letters, digits and . _ : -", code="invalid_request_id"
            )
        return rt

    async def predict(
        self, experiment: str, request: PredictRequest | Mapping[str, Any], request_id: str
    ) -> dict[str, Any]:
        """`request` as the HTTP edge parsed it; callers inside the process (the V2 routes, scripts)
        may hand the JSON body instead, parsed here by the same model after the same checks."""
        rt = self.admit(experiment, request_id)
        if not isinstance(request, PredictRequest):
            request = PredictRequest.parse(request)
        unit_id = request.unit_id
        if unit_id is None and rt.policy.reward.max_per_unit is not None:
            # The per-unit reward quota counts by unit: without one, a client could bypass it.
            raise Unprocessable(
                f"unit_id: required, since experiment {experiment!r} limits rewards per unit "
                f"(reward.max_per_unit = {rt.policy.reward.max_per_unit})", code="invalid_unit_id")
        view = rt.view
        rows = self._rows(rt, request.instances)
        if view.needs_unit and unit_id is None:
            raise Unprocessable(
                f"unit_id: required, since a variant of {experiment!r} uses the per-unit aggregates "
                f"{list(view.needs_unit)}", code="invalid_unit_id")
        # Contextual routing: the request's segment (its first row's context values) picks the shares.
        segment = segments.segment_of(rt.policy, request.instances[0]) if segments.is_contextual(rt.policy) else None
        # Linear Thompson sampling: its context vector (from the first row) picks them.
        lx = linear.context_of(rt.policy, request.instances[0]) if linear.is_linear(rt.policy) else None
        agg, agg_logged = None, None
        if view.needs_unit:
            # A variant takes them: read before the draw, which opens a breaker's trial call that
            # only the variant's answer closes. The read only reads: the request is counted with
            # its record (record.lua).
            counters = await self._unit_counters(experiment, rt, unit_id)
            agg, agg_logged = aggregates.values(rt.policy, counters), aggregates.logged(counters)
        elif view.aggregates:
            # None does: nothing read here; record.lua logs the unit's counters as it counts the request.
            agg_logged = aggregates.AT_RECORD if unit_id else aggregates.MISSING
        matrix = view.complete(rows, agg)  # the aggregates and the derived features, once
        variant, propensity = self._select(experiment, rt, unit_id, segment, lx)
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
        if segment is not None:
            record["seg"] = segment  # the reward counts in the segment's posterior too
        if lx is not None:
            record["lx"] = linear.encode(lx)  # the reward adds to the variant's linear model
        covariate = covariate_of(rt.policy, request.instances)
        if covariate is not None:
            record["cx"] = repr(covariate)  # summed with the reward for the adjusted promotion test
        log_entry = {
            "rid": request_id,
            "t": repr(now),
            "variant": variant,
            "prop": repr(propensity),
            "x": json.dumps(request.instances),
            "pred": json.dumps(predictions),
            "traceparent": carrier.get("traceparent", ""),
            **({"seg": segment} if segment is not None else {}),
            # The aggregates as served: training reads these, never later values.
            **({"agg": agg_logged} if agg_logged is not None else {}),
        }
        # The unit's request count goes up with the record: once per request id, never for a
        # request refused here (409) or failed above, and for a spooled record when it is replayed.
        unit_window = {"unit_window_s": rt.policy.aggregates.window_s} if unit_id and rt.policy.aggregates else {}
        nonce = secrets.token_hex(8)  # the record's, and its token's: a reward finds its own prediction
        args = dict(experiment=experiment, request_id=request_id, variant=variant, record=record, ttl_s=keep_s,
                    log_entry=log_entry, deadline=now + window if has_default else None, nonce=nonce,
                    **unit_window)
        # Filled at a later replay, the unit's counters could hold labels sent after this request.
        spooled = (lambda: {**args, "log_entry": {**log_entry, "agg": aggregates.MISSING}}) \
            if agg_logged == aggregates.AT_RECORD else None
        with child_span("redis.record_prediction") as span:
            span.set_attribute("db.system", "redis")
            recorded = await self.writer.record(args, spooled)
        if recorded == REFUSED:
            raise Conflict(f"request id {request_id!r} was already used; send a new x-request-id", code="request_id_in_use")
        # After the record exists, so that the shadows' answers can be put on it: not for a
        # spooled one (until its replay the answers would find no record, or, under a request id
        # reused meanwhile, another prediction's). Nor when a variant joined meanwhile: the frame
        # was built for the view before (a new shadow may take columns, aggregates, it lacks).
        if recorded == WRITTEN and rt.view is view:
            self.shadow.offer(rt, request_id, matrix, carrier)
        token = self.tokens.sign(request_id, TokenClaims(experiment, variant, now + keep_s, nonce))
        self.metrics.requests.add(1, labels)
        # A plain dict, not a PredictResponse: every field is the gateway's own and already of its
        # type, and this is the hot path; the model documents the body (and a test holds the two).
        return {
            "request_id": request_id,
            "experiment": experiment,
            "variant": variant,
            "predictions": predictions,
            "propensity": propensity,
            "reward_token": token,
        }

    async def _unit_counters(self, experiment: str, rt: ExperimentRuntime, unit_id: str | None) -> list | None:
        """The unit's counters before this request (one round trip); None without a unit, or
        while Redis is unreachable (the aggregates are then missing, and logged so). While the
        writes go to the spool, Redis is not asked at all: a request must not wait out a
        timeout for values it would be served without anyway."""
        if unit_id is None or rt.policy.aggregates is None or self.writer.spooling:
            return None
        with child_span("redis.unit_aggregates", {"db.system": "redis"}):
            try:
                return await self.store.unit_counters(experiment, unit_id)
            except STORE_DOWN:
                if self.writer.spool is not None:
                    self.writer.lost()  # its record goes straight to the spool, without a second timeout
                return None

    def _health(self, experiment: str, variant: str) -> VariantHealth:
        return self.health.setdefault((experiment, variant), VariantHealth())

    def _select(self, experiment: str, rt: ExperimentRuntime, unit_id: str | None,
                segment: str | None = None, lx: np.ndarray | None = None) -> tuple[str, float]:
        with child_span("bandit.select") as span:
            alloc = rt.allocation
            if alloc is None:
                raise Unavailable("the experiment's state is not loaded yet", code="not_ready")
            # An operator's promotion or pause governs all traffic, contexts included.
            contextual = alloc.mode not in ("promoted", "paused")
            if contextual and segment is not None and rt.segments is not None:
                mode = rt.segments.modes.get(segment, rt.segments.default_mode)
                alloc = allocation.Allocation(rt.segments.for_segment(segment), mode)
                span.set_attribute("gateway.segment", segment)
            elif contextual and lx is not None and rt.linear is not None:
                # The shares at this request's context; the propensity logged is the one drawn.
                alloc = rt.linear.allocation(lx)
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
        self, rt: ExperimentRuntime, variant: str, matrix: np.ndarray, judged: bool = True
    ) -> dict[str, Any]:
        """The variant's answer. `judged`: the outcome counts toward its breaker and guardrails
        (not for calls outside the experiment, which anyone may send)."""
        client = rt.variants[variant]
        health = self._health(rt.policy.experiment, variant)
        matrix = rt.view.select(variant, matrix)  # the frame's columns this variant takes
        started = time.perf_counter()
        try:
            # A timeout scope, not wait_for: on Python 3.11 that runs the call in a task of its
            # own (a task and a turn of the loop per request, for an in-process model mostly).
            async with asyncio.timeout(self.variant_timeout_s):
                result = await client.predict(matrix, current_carrier())
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

    async def _record_health(self, rt: ExperimentRuntime, variant: str, ok: bool, latency_s: float) -> None:
        self._health(rt.policy.experiment, variant).record(ok, latency_s, self.clock())
        if await self.upkeep.check_guardrails(rt):
            await self.refresh()

    async def predict_variant(self, experiment: str, variant: str, matrix: np.ndarray) -> dict[str, Any]:
        """A named variant, outside the experiment: nothing is logged for learning."""
        rt = self.runtime(experiment)
        if variant not in rt.variants:
            raise NotFound(f"experiment {experiment!r} has no variant {variant!r}", code="variant_not_found")
        return await self._call_variant(rt, variant, matrix, judged=False)

    # -- state -----------------------------------------------------------------------------

    def experiment_names(self) -> list[str]:
        return list(self.experiments)

    async def state(self, experiment: str) -> dict[str, Any]:
        rt = self.runtime(experiment)
        snap = (await self.store.snapshots([experiment], self.experiments.linear_contexts()))[experiment]
        history = await self.store.history(experiment)
        return rt.as_served(experiment_state(rt.policy, snap, history, rt.discount, rt.segments))

    async def series(self, experiment: str, since: float | None = None) -> dict[str, Any]:
        self.runtime(experiment)
        return {
            "experiment": experiment,
            "points": await self.store.series(experiment, since),
            "history": await self.store.history(experiment),
        }

    async def off_policy(self, experiment: str, target: str | None, rows: int = evaluation.DEFAULT_ROWS) -> dict[str, Any]:
        """The estimated value of a target policy from this experiment's log (IPS, SNIPS, DR)."""
        return await evaluation.evaluate(self.store, self.runtime(experiment), target, rows, self.clock())

    async def states(self) -> list[dict[str, Any]]:
        return [await self.state(name) for name in self.experiments]
