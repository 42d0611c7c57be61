"""The steps the upkeep takes when the rules decide: a champion by the promotion rule, a champion
per segment (contextual routing), and a shadow challenger graduated or retired (shadow first).
Each store step is conditional on the state it was computed from, so replicas that decide
together act once."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence

from gateway.dataplane.runtime import ExperimentRuntime
from gateway.decisions import allocation, segments, shadow_first
from gateway.store.experiments import ExperimentStore
from gateway.store.snapshot import Snapshot
from gateway.telemetry.tracing import tracer

# The upkeep's logger: these steps are the upkeep's, only kept apart.
log = logging.getLogger("gateway.upkeep")


async def promote_by_rule(store: ExperimentStore, name: str, rt: ExperimentRuntime, snap: Snapshot, now: float,
                          linear_contexts: Mapping[str, Sequence[str]]) -> None:
    """The promotion rule's champion, once; the runtime then serves from the promoted state."""
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
        done = await store.transition(
            name, expected_status="exploring", new_status="promoted", champion=decision.variant, entry=entry, now=now
        )
    if done:
        log.info("promoted %s in %s: %s", decision.variant, name, decision.reason)
        snaps = await store.snapshots([name], linear_contexts)
        rt.snapshot = snaps[name]
        rt.discount = allocation.discount(rt.policy, rt.snapshot.arms, rt.snapshot.meta, rt.discount)
        rt.allocation = allocation.allocate(rt.policy, rt.snapshot.arms, rt.snapshot.meta, rt.discount)


async def promote_segments(store: ExperimentStore, name: str, rt: ExperimentRuntime, snap: Snapshot, now: float) -> None:
    """Contextual routing: each segment whose own evidence passes the rule gets its champion,
    once (the store's step is conditional on the champions it was computed from), and is routed
    to it from then on: the state shows the champion, so requests must not get the old shares."""
    raw = snap.meta.get("segment_champions", "")
    for segment, decision in (await asyncio.to_thread(segments.promotions, rt.policy, snap, now)).items():
        if decision.outcome != "promote":
            continue
        after = json.dumps({**segments.champions({"segment_champions": raw}), segment: decision.variant},
                           sort_keys=True)
        entry = {"action": "promote_segment", "variant": decision.variant, "segment": segment, "at": now,
                 "by": "rule", "reason": decision.reason, "evidence": decision.evidence}
        # Only over the champions this was computed from: another replica's promotion is kept.
        if not await store.annotate(name, "segment_champions", after, entry, expected=raw):
            return  # another replica's promotion: the next refresh reads it
        if rt.segments is not None:
            rt.segments = rt.segments.promoted(segment, decision.variant)
        log.info("promoted %s in segment %s of %s: %s", decision.variant, segment, name, decision.reason)
        raw = after


async def judge_shadows(store: ExperimentStore, name: str, rt: ExperimentRuntime, snap: Snapshot,
                        clock: Callable[[], float]) -> None:
    """Challengers in shadow that have been compared enough go live or are retired, once."""
    found = shadow_first.verdicts(rt.policy, snap.arms, snap.meta, snap.dynamic, await store.paired_counts(name))
    for verdict in found:
        if verdict.outcome == "wait":
            continue
        entry = {"action": verdict.outcome, "variant": verdict.variant, "at": clock(), "by": "shadow_first",
                 "reason": verdict.reason, "evidence": verdict.evidence}
        if verdict.outcome == "graduate":
            done = await store.set_role(name, verdict.variant, "live", expected="shadow", policy_role="shadow",
                                        entry=entry, now=entry["at"],
                                        credit=shadow_first.credits_shadow_rewards(rt.policy))
            if done and shadow_first.promotes_on_graduation(rt.policy, snap.meta, verdict.variant):
                await _promote_graduate(store, name, verdict, clock)
        else:
            gone = sorted(allocation.retired(snap.meta) | {verdict.variant})
            # Only over the list it was computed from: another retirement meanwhile is kept.
            done = await store.annotate(name, "retired", json.dumps(gone), entry,
                                        expected=snap.meta.get("retired", ""))
        if done:
            log.info("shadow first in %s: %s %s: %s", name, verdict.outcome, verdict.variant, verdict.reason)
            rt.evaluated_counts = None


async def _promote_graduate(store: ExperimentStore, name: str, verdict: shadow_first.ShadowVerdict,
                            clock: Callable[[], float]) -> None:
    """retrain.shadow_first.on_graduation 'promote': the graduate becomes the champion."""
    entry = {"action": "promote", "variant": verdict.variant, "at": clock(), "by": "shadow_first",
             "reason": f"graduated from shadow: {verdict.reason}", "evidence": verdict.evidence}
    # Going live reopened exploration (set_role.lua); a paused or rolled-back experiment stays so.
    if await store.transition(name, expected_status="exploring", new_status="promoted",
                              champion=verdict.variant, entry=entry, now=entry["at"]):
        log.info("promoted %s in %s on graduating from shadow", verdict.variant, name)
