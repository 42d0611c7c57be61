"""The policy's contextual routing settings and their rules, apart from policy.py to keep it small:
`context` is categorical features for contextual_thompson (segments) and numeric ones for
linear_thompson (linear Thompson sampling, gateway.bandit.linear_ts)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from gateway.policy import Policy

# linear_thompson keeps (d + 1)(d + 2) / 2 + 1 counters per variant for d context features, all
# updated by the reward script: a bound keeps that script short.
MAX_LINEAR_CONTEXT = 16


class LinearPriorSettings(BaseModel):
    """linear_thompson's prior (gateway.bandit.linear_ts.LinearPrior): coefficients ~ N(0, sigma2 /
    ridge), sigma2 ~ InvGamma(a0, b0). The defaults suit rewards in [0, 1] and context features
    of order 1; b0 / a0 near the reward's variance for other rewards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ridge: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    a0: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    b0: float = Field(default=0.25, gt=0, allow_inf_nan=False)


def check_context(policy: Policy) -> None:
    """The rules of `context` and of what the contextual algorithms take (raises ValueError)."""
    algorithm = policy.algorithm
    contextual = algorithm in ("contextual_thompson", "linear_thompson")
    if contextual and not policy.context:
        kind = "categorical features that make a segment" if algorithm == "contextual_thompson" else "numeric features"
        raise ValueError(f"context: {algorithm} needs the {kind}")
    if policy.context and not contextual:
        raise ValueError("context: only for algorithm contextual_thompson or linear_thompson")
    if policy.linear_prior is not None and algorithm != "linear_thompson":
        raise ValueError("linear_prior: only for algorithm linear_thompson")
    if len(set(policy.context)) != len(policy.context):
        raise ValueError(f"context: names must be unique, got {list(policy.context)}")
    by_name = {f.name: f for f in policy.features}
    for name in policy.context:
        f = by_name.get(name)
        if algorithm == "linear_thompson":
            # missing: error, so every request has a number to route (and learn) by.
            if f is None or f.type != "numeric" or f.missing != "error":
                raise ValueError(f"context: {name!r} is not a numeric feature of this policy with missing: error "
                                 "(linear_thompson routes by numbers; contextual_thompson by categories)")
        elif f is None or f.type != "categorical" or f.missing != "error":
            # missing: error keeps the segments to the declared values (the Bonferroni divisor).
            raise ValueError(f"context: {name!r} is not a categorical feature of this policy with missing: error")
    if algorithm == "linear_thompson" and len(policy.context) > MAX_LINEAR_CONTEXT:
        raise ValueError(f"context: linear_thompson takes at most {MAX_LINEAR_CONTEXT} features")
    if algorithm == "contextual_thompson" and policy.reward.type != "bernoulli":
        raise ValueError("contextual_thompson takes bernoulli rewards")
    if contextual and policy.holdout is not None:
        raise ValueError(f"{algorithm} does not take a holdout yet")
    if policy.variance_reduction is not None:
        cov = by_name.get(policy.variance_reduction.covariate)
        if cov is None or cov.type != "numeric" or cov.missing != "error":
            raise ValueError("variance_reduction.covariate: a numeric feature of this policy with missing: error")
        if policy.reward.type != "bernoulli" or contextual:
            raise ValueError("variance_reduction takes bernoulli rewards and a non-contextual algorithm")
