"""The answer of an off-policy evaluation (GET /v1/experiments/{e}/ope)."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

Count = Annotated[int, Field(ge=0)]


class Estimate(BaseModel):
    estimator: str = Field(description="ips (inverse propensity scoring), snips (self-normalised) or dr (doubly "
                           "robust, with a cross-fitted ridge reward model).")
    value: float | None = Field(description="The target policy's estimated mean reward per request.")
    stderr: float | None
    ci_low: float | None = Field(description="Lower end of the 95% normal-approximation interval.")
    ci_high: float | None
    ess: float | None = Field(description="Effective sample size of the importance weights: (sum w)^2 / sum w^2.")
    n: Count


class Estimates(BaseModel):
    ips: Estimate
    snips: Estimate
    dr: Estimate


class OffPolicyEvaluation(BaseModel):
    """What a target policy would have earned on the logged traffic, estimated from the propensities each request
    was served with (Dudik, Langford and Li 2011), over the newest rewarded requests."""

    experiment: str
    target: str | dict[str, float] = Field(description="`uniform`, a variant (always serve it), or shares by variant.")
    n: Count = Field(description="Logged requests with a known reward that the estimate uses.")
    estimates: Estimates
    max_weight: float = Field(description="The largest importance weight (target probability / logged propensity).")
    ess: float
