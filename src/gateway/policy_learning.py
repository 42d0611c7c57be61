"""How an experiment learns, apart from policy.py to keep it small: shadow traffic and shadow
first, the bootstrap data for missing artifacts, and retraining."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.policy_features import RetrainCandidate

__all__ = ["Bootstrap", "Retrain", "Shadow", "ShadowFirst"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Shadow(_Strict):
    """How live requests are mirrored to the experiment's shadow variants."""

    # Share of live requests copied to each shadow variant, chosen by a hash of the request id
    # (the same requests whichever replica serves them).
    fraction: float = Field(default=1.0, gt=0, le=1)
    # Copies waiting for a shadow answer; beyond this, new ones are dropped (and counted) so that
    # a slow shadow model never holds live requests or memory.
    queue: int = Field(default=1000, ge=1)
    # Shadow calls in flight at once, per router replica and experiment.
    concurrency: int = Field(default=4, ge=1, le=64)
    # Seconds a shadow call may take before it is abandoned (counted as failed).
    timeout_s: float = Field(default=10.0, gt=0)
    # Seconds copies are gathered before one model call and one round trip answer them all: a
    # shadow's answer is never waited for, and per call the model and Redis cost far more than
    # per row (~1.6 ms a batch against ~0.035 ms a copy in the router), so the wait sets the
    # cost of a thin stream of copies: at 10% of ~650 req/s, 0.05 s made batches of ~3 and cost
    # the router ~4%; 0.25 s makes ~16 (bench/shadow_cost.py). 0: each copy as soon as a worker
    # is free.
    batch_wait_s: float = Field(default=0.25, ge=0, le=5)


class ShadowFirst(_Strict):
    """A new challenger starts in shadow and goes live only once it beats the best live model."""

    # Labelled requests answered by both the challenger (in shadow) and the best live model
    # within which it must show itself more accurate, or be retired; it goes live as soon as the
    # evidence is in (an anytime-valid paired test at retrain.max_p_value).
    labels: int = Field(default=500, ge=20)
    # What graduating does: 'promote' (it becomes the champion: the paired evidence on the same
    # live requests is an anytime-valid test at max_p_value, and a champion's posterior that
    # predates a drift cannot outvote it; guardrails still roll it back) or 'explore' (it joins the
    # bandit as a live challenger). Either way its posterior starts from the rewards it earned in
    # shadow where rewards come from labels (thompson and top_two_thompson without
    # variance_reduction). bench/learning.py measures both.
    on_graduation: Literal["promote", "explore"] = "promote"


class Bootstrap(_Strict):
    """Data for training missing artifacts on first start: a seeded generator in gateway.sim."""

    dataset: Literal["churn"] = "churn"
    rows: int = Field(default=4000, ge=100)
    seed: int = 0


class Retrain(_Strict):
    enabled: bool = False
    every_labels: int = Field(default=1000, ge=1)
    # Train on the newest labelled requests: the last quarter of them (by time) is the holdout.
    window_labels: int = Field(default=2000, ge=50)
    # A challenger must beat the champion's holdout accuracy by this much to be added.
    margin: float = Field(default=0.01, ge=0, le=1)
    # And the win must be significant (one-sided exact McNemar test); null turns the test off.
    max_p_value: float | None = Field(default=0.05, gt=0, le=1)
    # An algorithm (on the policy's features) or {algorithm, features}: a feature set to try,
    # with derived features among them (gateway.policy_features.RetrainCandidate).
    candidates: tuple[Literal["xgboost", "logistic_regression", "hist_gradient_boosting"] | RetrainCandidate, ...] = (
        "xgboost",
        "logistic_regression",
    )
    max_variants: int = Field(default=4, ge=2)
    # A feature's (or the predictions') PSI above this triggers a retrain; null turns it off.
    drift_psi: float | None = Field(default=0.25, gt=0)
    # null: a new challenger takes live traffic at once (burning in beside the bandit).
    shadow_first: ShadowFirst | None = None
    # true: each admitted challenger is also logged to MLflow (extra `mlflow`, the server in
    # MLFLOW_TRACKING_URI): a run in the MLflow experiment `gateway-<experiment>` with its holdout
    # metrics, data window and model (skops / UBJSON, never a pickle), registered as a new
    # version of the model `gateway-<experiment>`. A failure to log is a warning in the
    # challenger's history entry; the challenger is added all the same.
    mlflow: bool = False
