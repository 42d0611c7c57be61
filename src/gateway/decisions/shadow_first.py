"""Shadow first: a new challenger answers copies of live requests in shadow, and is compared
with the best live model on the same labelled requests. It goes live as soon as the evidence
that it is more accurate is significant at `retrain.max_p_value`, and is retired as soon as the
evidence that it is less accurate is, or once `retrain.shadow_first.labels` paired labels have
not shown it better. The evidence is an anytime-valid e-value on the rows where exactly one of
the two is right (gateway.bandit.paired), so checking after every label keeps the error rate
(the exact McNemar p-value is reported beside it, for reading). Pure: snapshot and paired
counts in, verdicts out."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.bandit.paired import log_e_values, mcnemar_p_value
from gateway.decisions import allocation
from gateway.policy import Policy
from gateway.store.snapshot import ArmCounts


# The level when the policy turns retrain.max_p_value off: shadow first still needs evidence.
DEFAULT_LEVEL = 0.05


@dataclass(frozen=True)
class ShadowVerdict:
    variant: str
    outcome: str  # graduate | retire | wait
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def credits_shadow_rewards(policy: Policy) -> bool:
    """Whether a shadow earns rewards from the labels of the requests it answered, and takes them
    into its posterior when it goes live: only where the posterior is the arm's plain counters (a
    contextual posterior is per segment, a discounted one ages its rewards, CUPED also sums a
    covariate the shadow record lacks), and where no default reward fills the live arms' counters
    for requests without feedback (a shadow sees only the labelled ones, so its mean would not
    compare)."""
    return (policy.algorithm in ("thompson", "top_two_thompson") and policy.variance_reduction is None
            and policy.reward.default is None)


def promotes_on_graduation(policy: Policy, meta: Mapping[str, str], variant: str) -> bool:
    """retrain.shadow_first.on_graduation 'promote', where one champion for all requests is the
    experiment's decision (not with per-request context routing), and not for a variant a
    guardrail rolled back (only an operator promotes it again)."""
    spec = policy.retrain.shadow_first
    return (spec is not None and spec.on_graduation == "promote"
            and policy.algorithm not in ("contextual_thompson", "linear_thompson")
            and variant not in allocation.guardrail_blocked(meta))


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
    level = policy.retrain.max_p_value or DEFAULT_LEVEL
    out = []
    for v in sorted(waiting):
        counts = paired.get((v, reference), {}) if reference else {}
        n, wins, losses = counts.get("n", 0), counts.get("sw", 0), counts.get("lw", 0)
        better, worse = log_e_values(wins, losses)
        evidence = {"against": reference, "paired_rows": n, "only_challenger_right": wins,
                    "only_live_right": losses, "labels_needed": spec.labels, "level": level,
                    "e_value_better": _e(better), "e_value_worse": _e(worse),
                    "p_value": mcnemar_p_value(wins, losses)}
        line = f"on {n} live requests beside {reference}: {wins} right only by {v}, {losses} only by {reference}"
        threshold = math.log(1.0 / level)
        if better >= threshold:
            out.append(ShadowVerdict(v, "graduate", f"more accurate in shadow {line}, e-value {_e(better):.3g} "
                                     f">= {1 / level:g}", evidence))
        elif worse >= threshold:
            out.append(ShadowVerdict(v, "retire", f"less accurate in shadow {line}, e-value {_e(worse):.3g} "
                                     f">= {1 / level:g}", evidence))
        elif n >= spec.labels:
            out.append(ShadowVerdict(v, "retire", f"not shown better in shadow within {spec.labels} labels {line}",
                                     evidence))
        else:
            out.append(ShadowVerdict(v, "wait", f"{n} of {spec.labels} paired labels", evidence))
    return out


def _e(log_e: float) -> float:
    return math.exp(min(log_e, 700.0))
