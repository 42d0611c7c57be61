"""Feedback: rewards and labels validated, applied exactly once through the store (or kept by
the writer while Redis is away), and answered per item."""
from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from gateway.dataplane.runtime import Experiments
from gateway.learning.labels import same
from gateway.errors import Forbidden, GatewayError, NotFound, TooManyRequests, Unprocessable
from gateway.schemas import MAX_ID_LEN, MAX_LABEL_BYTES, MAX_REWARDS_PER_BATCH, RewardBatch, RewardClaim, RewardItem
from gateway.schemas import parse_feedback
from gateway.schemas.feedback import SentItem
from gateway.store.experiments import ExperimentStore
from gateway.store.snapshot import RewardItem as StoredReward
from gateway.store.writer import STORE_DOWN, StoreWriter
from gateway.telemetry.metrics import GatewayMetrics
from gateway.telemetry.tracing import context_from_carrier, tracer
from gateway.dataplane.tokens import RewardTokens, TokenClaims

log = logging.getLogger("gateway.feedback")

__all__ = ["MAX_ID_LEN", "MAX_LABEL_BYTES", "MAX_REWARDS_PER_BATCH", "Feedback"]

# One validated item: (index in the request, request id, token claims, reward or None, label).
Pending = tuple[int, str, TokenClaims, float | None, Any]


class Feedback:
    def __init__(self, experiments: Experiments, store: ExperimentStore, writer: StoreWriter, tokens: RewardTokens,
                 metrics: GatewayMetrics, clock: Callable[[], float]):
        self.experiments = experiments
        self.store = store
        self.writer = writer
        self.tokens = tokens
        self.metrics = metrics
        self.clock = clock

    async def rewards(self, feedback: RewardBatch | SentItem | Any) -> tuple[int, dict[str, Any]]:
        """One item answers with its own status; a batch answers 200 with a result per item.
        `feedback` as the HTTP edge parsed it, or the JSON body (parsed here by the same rules)."""
        if not isinstance(feedback, RewardBatch):
            feedback = parse_feedback(feedback)
        if isinstance(feedback, RewardBatch):
            results = await self.apply(feedback.rewards)
            for r in results:
                r.pop("_error", None)
            summary = {
                s: sum(1 for r in results if r["status"] == s) for s in ("accepted", "duplicate", "late", "queued", "rejected")
            }
            return 200, {"results": results, **summary}
        (result,) = await self.apply([feedback])
        if result["status"] == "rejected":
            err = result.pop("_error")
            raise err
        return (202 if result["status"] == "queued" else 200), result

    async def replay(self, payload: dict[str, Any]) -> str:
        """One spooled feedback item, judged as of when it was received."""
        (result,) = await self.apply([payload["item"]], now=payload["received_at"], replaying=True)
        if result["status"] == "rejected":
            log.error("spooled feedback for %s refused on replay: %s", result["request_id"], result["error"]["message"])
        return "unknown" if result["status"] == "unknown" else "done"

    def _validate_item(self, sent: Any, now: float) -> tuple[RewardItem, TokenClaims, float | None]:
        """An item as sent, judged in the order the contract's errors have always come in: who
        sends it (request id 422, token 403 or 404), then what it says (reward, label: 422)."""
        claim = RewardClaim.parse(sent)
        claims = self.tokens.verify(claim.request_id, claim.token, now)
        rt = self.experiments.runtime(claims.experiment)
        item = RewardItem.parse(sent, context={"reward_bounds": rt.policy.reward.bounds})
        return item, claims, None if item.reward is None else float(item.reward)

    async def apply(self, items: list[Any], now: float | None = None, replaying: bool = False) -> list[dict[str, Any]]:
        """Each item's result. Replaying a spooled item, a request not (yet) in Redis comes back
        with the internal status 'unknown' (the writer keeps it for another try)."""
        now = self.clock() if now is None else now
        results: list[dict[str, Any]] = [{} for _ in items]
        pending: list[Pending] = []
        for i, item in enumerate(items):
            rid = item.get("request_id") if isinstance(item, dict) else None
            try:
                parsed, claims, reward = self._validate_item(item, now)
                pending.append((i, parsed.request_id, claims, reward, parsed.label))
            except GatewayError as err:
                results[i] = _rejected(rid, err)
        if self.writer.spooling and not replaying:
            return await self._queue(items, [p for p in pending if not results[p[0]]], results, now)
        unknown: list[Pending] = []
        try:
            made_from_labels = {p[0] for p in pending if p[3] is None}
            unknown = await self._rewards_from_labels(pending, results)
            waiting = {p[0] for p in unknown}
            ready = [p for p in pending if not results[p[0]] and p[0] not in waiting]
            with tracer().start_as_current_span("redis.apply_rewards") as span:
                span.set_attributes({"db.system": "redis", "gateway.reward_items": len(ready)})
                outcomes = await self.store.apply_rewards(
                    [
                        StoredReward(c.experiment, rid, c.variant, r, "" if label is None else json.dumps(label),
                                     from_label=i in made_from_labels, nonce=c.nonce)
                        for i, rid, c, r, label in ready
                    ],
                    now,
                    self.experiments.reward_rules(),
                )
        except STORE_DOWN:
            if self.writer.spool is None or replaying:
                raise
            self.writer.lost()
            # The reward script claims each request once: any item applied before the cut is
            # a harmless duplicate when replayed.
            return await self._queue(items, [p for p in pending if results[p[0]].get("status") != "rejected"],
                                     [r if r.get("status") == "rejected" else {} for r in results], now)
        server_span = trace.get_current_span()
        # Summed per label set and added once each: one add per item was ~5% of the router's time.
        reward_sums: Counter[tuple[str, str]] = Counter()
        for p, (outcome, traceparent) in zip(ready, outcomes):
            i, rid, claims, reward, _ = p
            if outcome == "accepted" and traceparent:
                # The feedback's span points at the prediction it rewards (another trace).
                link = trace.get_current_span(context_from_carrier({"traceparent": traceparent})).get_span_context()
                if link.is_valid:
                    server_span.add_link(link, {"gateway.request_id": rid})
            if outcome == "accepted":
                reward_sums[claims.experiment, claims.variant] += reward
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
                results[i] = _rejected(rid, Forbidden(
                    "the token is for another prediction (another variant, or an earlier use of this request id)",
                    code="token_invalid"))
        for (experiment, variant), total in reward_sums.items():
            self.metrics.reward_sum.add(total, {"experiment": experiment, "variant": variant})
        if unknown:
            await self._unknown(items, unknown, results, now, replaying)
        self._count(results)
        return results

    def _count(self, results: list[dict[str, Any]]) -> None:
        for status, n in Counter(r["status"] for r in results).items():
            self.metrics.rewards.add(n, {"outcome": status})

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
            self._count(results)
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
                # Another prediction's, reusing the id: refused here, before its labels are compared
                # with this record's (reward.lua refuses it by the same rule).
                if claims.nonce and record.get("nonce") != claims.nonce:
                    results[i] = _rejected(rid, Forbidden(
                        "the token is for another prediction (an earlier use of this request id)", code="token_invalid"))
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
                matches = sum(same(a, b) for a, b in zip(labels, predictions))
                pending[k] = (i, rid, claims, matches / len(predictions), label)
        return unknown


def _rejected(request_id: Any, err: GatewayError) -> dict[str, Any]:
    return {
        "request_id": request_id if isinstance(request_id, str) else None,
        "status": "rejected",
        "error": err.to_body()["error"],
        "http_status": err.status,
        "_error": err,
    }
