"""Contextual routing's decisions (algorithm contextual_thompson), from a snapshot: each context
segment's traffic shares, its promotion verdict, and the routing table the state shows. Pure;
the math is gateway.bandit.contextual's.

A request's segment is its first row's values of the policy's `context` features. Every
segment x variant has its own posterior (its counters are in the snapshot's `segments`), shrunk
toward the variant's overall posterior by `context_strength` pseudo-rewards, and is routed by
allocate()'s rule on it. A segment is promoted on its own raw counters by the anytime-valid
test at alpha / (number of possible segments): the chance that any segment ever promotes a
variant that is not its best stays below alpha (Bonferroni over the segments the context's
declared values allow, fixed in advance)."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gateway.bandit import contextual, segment_promotion
from gateway.bandit.promotion import Decision, PromotionRule
from gateway.decisions import allocation
from gateway.policy import Policy
from gateway.store.snapshot import ArmCounts, Snapshot


def is_contextual(policy: Policy) -> bool:
    return policy.algorithm == "contextual_thompson"


def segment_of(policy: Policy, row: Any) -> str:
    """The segment of a request's first row (its values of the context features)."""
    return contextual.segment_of(row, [f.name for f in policy.features], policy.context)


def champions(meta: Mapping[str, str]) -> dict[str, str]:
    """Segments promoted so far: segment -> champion."""
    return json.loads(meta["segment_champions"]) if meta.get("segment_champions") else {}


def possible_segments(policy: Policy) -> int:
    """How many segments the context's declared values allow: the Bonferroni divisor."""
    values = {f.name: len(f.values or ()) for f in policy.features}
    return max(1, math.prod(values[name] for name in policy.context))


def _counts(arms: Mapping[str, ArmCounts], names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    c = allocation.counters(arms, names)
    return c[:, 0], c[:, 1]


def routing(policy: Policy, snap: Snapshot) -> contextual.SegmentAllocation:
    """Every seen segment's shares (a promoted segment's champion takes all), and the overall
    allocation for a segment not seen yet."""
    live = allocation.live_arms(policy, snap.meta)
    won = {s: v for s, v in champions(snap.meta).items() if v in live}
    return contextual.segment_shares(
        live, _counts(snap.arms, live), {s: _counts(per, live) for s, per in snap.segments.items()},
        prior_alpha=policy.prior.alpha, prior_beta=policy.prior.beta, min_weight=policy.min_weight,
        burn_in=policy.segment_burn_in, strength=policy.context_strength, champions=won,
    )


def promotions(policy: Policy, snap: Snapshot, now: float) -> dict[str, Decision]:
    """The promotion verdict of every segment not promoted yet (while the experiment explores)."""
    if snap.meta.get("status", "exploring") != "exploring":
        return {}
    live = allocation.live_arms(policy, snap.meta)
    # A champion retired since no longer holds its segment (routing drops it too).
    done = {s for s, v in champions(snap.meta).items() if v in live}
    open_segments = {s: _counts(per, live) for s, per in snap.segments.items() if s not in done}
    started = max(float(snap.meta.get("started_at", now)), float(snap.meta.get("challenger_at", "-inf")))
    p = policy.promotion
    rule = PromotionRule(prob_best=p.prob_best, max_expected_loss=p.max_expected_loss,
                         min_samples=policy.segment_burn_in, min_duration_s=p.min_duration_s)
    decisions = segment_promotion.segment_decisions(
        live, open_segments, rule, now - started, prior_alpha=policy.prior.alpha, prior_beta=policy.prior.beta,
        alpha=p.alpha, tau2=p.tau2, n_segments=max(possible_segments(policy), len(snap.segments)),
    )
    # As for the whole experiment: a variant a guardrail rolled back is promoted by an operator only.
    blocked = allocation.guardrail_blocked(snap.meta)
    return {s: d for s, d in decisions.items() if not (d.outcome == "promote" and d.variant in blocked)}


def table(policy: Policy, snap: Snapshot, routed: contextual.SegmentAllocation | None = None) -> dict[str, Any]:
    """The routing table the state shows: per segment its champion (or none), how its shares were
    decided, the shares, and each variant's rewards and mean reward there."""
    routed = routed or routing(policy, snap)
    won = champions(snap.meta)
    out: dict[str, Any] = {}
    for segment in sorted(snap.segments):
        per = snap.segments[segment]
        out[segment] = {
            "champion": won.get(segment),
            "mode": routed.modes.get(segment, routed.default_mode),
            "shares": routed.for_segment(segment),
            "rewards": {v: per.get(v, ArmCounts()).rewards for v in routed.names},
            "means": {v: (c.reward_sum / c.rewards if c.rewards else None)
                      for v, c in ((v, per.get(v, ArmCounts())) for v in routed.names)},
        }
    return out
