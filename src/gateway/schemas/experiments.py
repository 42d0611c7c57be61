"""GET /v1/experiments, /v1/experiments/{experiment} and its series, and /healthz: what they
answer. The data plane builds these bodies as plain dicts (decisions/state.py, monitoring/,
the store); the models document them and the tests hold the two together. Nothing on a
request's path validates them: the figures are the gateway's own."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.schemas.base import one_of

Count = Annotated[int, Field(ge=0)]
Share = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[float, Field(gt=0)]
# A ratio of the confusion counts: null while its denominator is zero.
Ratio = Annotated[float, Field(ge=0, le=1)] | None
Interval = Annotated[list[float], Field(min_length=2, max_length=2)]
Status = Literal["exploring", "promoted", "paused"]


class BetaPosterior(BaseModel):
    """Beta(alpha, beta): the posterior of a bernoulli reward rate."""

    model_config = ConfigDict(extra="forbid")
    alpha: Positive
    beta: Positive


class NormalInverseGammaPosterior(BaseModel):
    """Normal-Inverse-Gamma(mu, kappa, alpha, beta) of a gaussian reward: sigma^2 ~ InvGamma(alpha, beta), mean |
    sigma^2 ~ N(mu, sigma^2 / kappa). The mean reward's marginal is a Student t with 2 alpha degrees of freedom,
    location mu and scale sqrt(beta / (alpha kappa))."""

    model_config = ConfigDict(extra="forbid")
    mu: float
    kappa: Positive
    alpha: Positive
    beta: Positive


class VariantState(BaseModel):
    name: str
    role: Literal["arm", "holdout", "shadow"] = Field(
        description="arm: in the bandit; holdout: the fixed control group; shadow: answers copies of live requests, "
        "scored on their labels, serves no one.")
    posterior: BetaPosterior | NormalInverseGammaPosterior = Field(
        description="Beta(alpha, beta) of the reward rate for a bernoulli reward; Normal-Inverse-Gamma(mu, kappa, "
        "alpha, beta) for a gaussian one (see `reward_type`).",
        json_schema_extra=one_of,
    )
    mean: float = Field(description="Posterior mean reward.")
    credible_interval: Interval = Field(description="The 95% credible interval of the mean reward.")
    prob_best: Share | None = Field(description="Probability to be the best arm; null for the holdout and a shadow.")
    expected_loss: float | None = Field(description="Null for the holdout and a shadow.")
    traffic_share: Share
    requests: Count
    rewards: Count
    reward_sum: float


class HistoryEntry(BaseModel):
    """A decision: a promotion (by the rule or an operator), a rollback (by an operator or a guardrail), a pause,
    a resume, a retired variant, a retraining run and the challenger it added, a drift alarm (by the monitor;
    `evidence` has the largest PSI per feature, or per `prediction:<variant>`, the `reference` window and the
    `reference_rows` and `live_rows` compared). Fields beyond these depend on the action (`previous`,
    `from_variant`, `weights`, `resume_to`, `outcome`, `trigger`, `rows`, ...)."""

    model_config = ConfigDict(extra="allow")
    action: str = Field(description="promote, rollback, pause, resume, retire, retrain, challenger_added, "
                        "drift_alarm, ...")
    at: float = Field(description="Unix time in seconds.")
    by: str = Field(description="rule, admin, guardrail, retrainer or monitor.")
    reason: str | None
    variant: str | None = None
    evidence: dict[str, Any] = Field(default=None)


class PromotionRule(BaseModel):
    prob_best: float
    max_expected_loss: float
    min_samples: int
    min_duration_s: float
    alpha: float = Field(description="Error level of the anytime-valid test.")
    tau2: float = Field(description="Mixture variance of the anytime-valid test.")


class HoldoutUplift(BaseModel):
    """With a holdout: the posterior of (mean reward of `variant`) - (mean reward of the holdout), for the
    champion or else the arm most likely to be best. Null without a holdout."""

    variant: str
    holdout: str
    uplift: float = Field(description="Difference of the posterior means.")
    credible_interval: Interval = Field(description="The 95% credible interval.")
    prob_positive: Share = Field(description="Posterior probability that the uplift is positive.")


class Discount(BaseModel):
    """discounted_thompson only (null otherwise): the discount per reward and, per live arm, the discounted number
    of rewards the traffic split is based on."""

    gamma: Annotated[float, Field(gt=0, le=1)]
    effective_rewards: dict[str, Annotated[float, Field(ge=0)]]


class Totals(BaseModel):
    requests: Count
    rewards: Count


class SampleRatio(BaseModel):
    """Sample-ratio mismatch: requests served vs expected under the weights in force over time (this router
    replica's view since it started); mismatch at p < 0.001."""

    expected: dict[str, float]
    observed: dict[str, float]
    p_value: float | None
    mismatch: bool


class KPIFigures(BaseModel):
    """Binary classification figures, class 1 positive; a ratio is null while undefined."""

    n: Count = Field(description="Labelled predictions counted.")
    accuracy: Ratio
    precision: Ratio
    recall: Ratio
    f1: Ratio
    roc_auc: Ratio = Field(default=None, description="Null without scores or with a single class among them.")
    positives: Count = Field(description="Labels of the positive class (tp + fn).")
    tp: Count
    fp: Count
    tn: Count
    fn: Count
    n_scored: Count = Field(default=None, description="Labelled predictions that came with a score.")


class WindowKPIFigures(KPIFigures):
    """The newest `monitoring.window` labels; with a ROC AUC when the model gave scores."""

    roc_auc: Ratio = Field(description="Null without scores or with a single class among them.")
    n_scored: Count = Field(description="Labelled predictions that came with a score.")


class VariantKPIs(BaseModel):
    lifetime: KPIFigures
    window: WindowKPIFigures


class DriftReport(BaseModel):
    """Population stability index of every feature, the newest `monitoring.window` predictions against the
    reference, and of each variant's predictions against its own in the reference. Null until this router
    replica's first monitoring pass (every 10 s)."""

    reference: str = Field(description="`training window of <champion>`, or `first predictions served`.")
    reference_rows: Count
    live_rows: Count
    features: dict[str, Annotated[float, Field(ge=0)]] = Field(description="PSI per feature.")
    predictions: dict[str, Annotated[float, Field(ge=0)]] = Field(description="PSI of the predictions, per variant.")
    max_psi: Annotated[float, Field(ge=0)] | None
    level: Literal["stable", "moderate", "significant"] | None = Field(
        description="The reading of `max_psi`: below 0.1 stable, below 0.25 moderate, else significant.")
    status: Literal["ok", "insufficient_data"] = Field(
        description="insufficient_data: too few rows on either side (`monitoring.min_drift_rows`); no PSI is "
        "given then.")


class SegmentRoute(BaseModel):
    champion: str | None = Field(description="The segment's champion, once its own evidence promoted one.")
    mode: str = Field(description="burn_in, burn_in_challenger, contextual_thompson or promoted.")
    shares: dict[str, float] = Field(description="The traffic share of each live variant in this segment.")
    rewards: dict[str, int] = Field(description="Rewards per variant in this segment.")
    means: dict[str, float | None] = Field(description="Plain mean reward per variant in this segment.")


class LinearModel(BaseModel):
    rewards: int = Field(ge=0, description="Rewards its linear model has learned from.")
    coefficients: dict[str, float] = Field(
        description="Posterior mean coefficient of each term: the reward it predicts for a request is their sum "
        "weighted by the request's values (the intercept's by 1).")
    coefficient_sd: dict[str, float | None] = Field(description="Posterior standard deviation of each coefficient.")
    noise_sd: float | None = Field(description="Posterior mean of the reward's noise standard deviation.")


class LinearModels(BaseModel):
    terms: list[str] = Field(description="`intercept`, then the policy's `context` features.")
    variants: dict[str, LinearModel]


class CorrectedMean(BaseModel):
    mean: float | None = Field(description="Null for a variant never served.")
    ci_low: float | None = Field(description="The 95% interval (normal approximation; it undercovers for a "
                                 "variant the bandit starves).")
    ci_high: float | None
    n_served: Count
    ess: float | None = Field(description="Effective sample size of its importance weights.")


class ExperimentState(BaseModel):
    name: str
    experiment: str = Field(description="The same as `name`.")
    status: Status
    champion: str | None
    reward_type: Literal["bernoulli", "gaussian"] = Field(
        description="bernoulli: rewards in [0, 1], Beta posteriors; gaussian: real rewards, Normal-Inverse-Gamma "
        "posteriors.")
    allocation: Literal["burn_in", "burn_in_challenger", "thompson", "top_two_thompson", "discounted_thompson",
                        "contextual_thompson", "linear_thompson", "promoted", "paused"] = Field(
        description="How traffic is split now: uniformly until every arm has its burn-in rewards, then by the "
        "policy's algorithm (burn_in_challenger: a newer arm still burns in with the uniform share beside the "
        "others); all to the champion once promoted; frozen while paused.")
    started_at: float | None
    promotion_rule: PromotionRule
    variants: list[VariantState]
    holdout_uplift: HoldoutUplift | None
    discount: Discount | None
    history: list[HistoryEntry]
    totals: Totals
    srm: SampleRatio
    kpis: dict[str, VariantKPIs] | None = Field(
        description="Online KPIs per variant from labelled feedback: over its whole life (from the confusion "
        "counts) and over its newest `monitoring.window` labels. Null until this router replica's first "
        "monitoring pass (every 10 s).")
    drift: DriftReport | None
    segments: dict[str, SegmentRoute] | None = Field(
        default=None, description="contextual_thompson: the routing table, per context segment (e.g. `plan=pro`): "
        "its champion once promoted, else the shares it routes by; null for other algorithms.")
    linear: LinearModels | None = Field(
        default=None, description="linear_thompson: what each variant's linear model of the reward learned, its "
        "coefficients named by the context terms; requests are routed where their values predict the most "
        "reward. Null for other algorithms.")
    corrected_means: dict[str, CorrectedMean] | None = Field(
        default=None, description="Per variant, beside its posterior `mean`: the IPS-corrected mean reward (the "
        "self-normalised estimate of always serving it, from the logged propensities of the newest requests), "
        "unbiased under adaptive allocation where the plain average is not. Null until this replica's first "
        "monitoring pass.")


class ExperimentList(BaseModel):
    experiments: list[ExperimentState]


class SeriesVariant(BaseModel):
    traffic_share: float
    prob_best: float | None
    mean: float
    credible_interval: Interval
    requests: Count
    rewards: Count


class SeriesPoint(BaseModel):
    t: float = Field(description="Unix time in seconds.")
    status: Status
    champion: str | None
    variants: dict[str, SeriesVariant]


class Series(BaseModel):
    experiment: str
    points: list[SeriesPoint] = Field(description="In time order, at most 2000.")
    history: list[HistoryEntry]


class Health(BaseModel):
    """`degraded` while the state store is unreachable (predictions are served from cached weights, writes spooled
    to local disk) or spooled writes are still being replayed."""

    status: Literal["ok", "degraded"]
    store: Literal["ok", "unreachable"]
    spooled: Count = Field(description="Writes waiting in the local spool.")
    experiments: list[str]
