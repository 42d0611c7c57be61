"""Shadow first: a new challenger answers copies of live requests in shadow until it has been
compared with the best live model on `retrain.shadow_first.labels` labelled requests, then goes
live if it is significantly more accurate on those same requests (one-sided exact McNemar test
at `retrain.max_p_value`), and is retired otherwise. Pure: snapshot and paired counts in,
verdicts out."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.bandit.paired import mcnemar_p_value
from gateway.decisions import allocation
from gateway.policy import Policy
from gateway.store.experiments import ArmCounts


@dataclass(frozen=True)
class ShadowVerdict:
    variant: str
    outcome: str  # graduate | retire | wait
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def best_live(policy: Policy, arms: Mapping[str, ArmCounts], meta: Mapping[str, str]) -> str | None:
    """The champion while one is promoted, else the live arm with the highest posterior mean."""
    live = allocation.live_arms(policy, meta)
    if meta.get("status") == "promoted" and meta.get("champion") in live:
        return meta["champion"]
    if not live:
        return None
    means = allocation.posterior_means(policy, arms, live)
    return live[int(means.argmax())]


def verdicts(
    policy: Policy,
    arms: Mapping[str, ArmCounts],
    meta: Mapping[str, str],
    dynamic: Mapping[str, Mapping[str, Any]],
    paired: Mapping[tuple[str, str], Mapping[str, int]],
) -> list[ShadowVerdict]:
    """A verdict for every challenger still in shadow under shadow first."""
    spec = policy.retrain.shadow_first
    if spec is None:
        return []
    in_shadow = set(allocation.shadow_arms(policy, meta))
    waiting = [v for v, d in dynamic.items() if d.get("shadow_first") and v in in_shadow]
    reference = best_live(policy, arms, meta)
    out = []
    for v in sorted(waiting):
        counts = paired.get((v, reference), {}) if reference else {}
        n, wins, losses = counts.get("n", 0), counts.get("sw", 0), counts.get("lw", 0)
        evidence = {"against": reference, "paired_rows": n, "only_challenger_right": wins,
                    "only_live_right": losses, "labels_needed": spec.labels}
        if n < spec.labels:
            out.append(ShadowVerdict(v, "wait", f"{n} of {spec.labels} paired labels", evidence))
            continue
        p = mcnemar_p_value(wins, losses)
        level = policy.retrain.max_p_value
        evidence |= {"p_value": p, "max_p_value": level}
        line = f"on {n} live requests beside {reference}: {wins} right only by {v}, {losses} only by {reference}"
        if wins > losses and (level is None or p <= level):
            out.append(ShadowVerdict(v, "graduate", f"more accurate in shadow {line}, McNemar p={p:.3g}", evidence))
        else:
            out.append(ShadowVerdict(v, "retire", f"not better in shadow {line}, McNemar p={p:.3g}", evidence))
    return out
