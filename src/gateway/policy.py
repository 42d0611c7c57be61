"""Policy files: one YAML per experiment, validated at load with errors that name the field."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.policy_context import LinearPriorSettings, check_context
from gateway.policy_features import Aggregates, DerivedFeature, check_features
from gateway.policy_learning import Bootstrap, Retrain, Shadow

# Names end up in Redis keys, deployment names and URLs: keep them to a safe alphabet.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
# A variant's `model` naming an MLflow model rather than a file (gateway.learning.mlflow_models
# parses the forms; the prefix alone decides which kind a model is, here for every caller).
MLFLOW_SCHEMES = ("models:/", "runs:/")


def is_mlflow_uri(model: str) -> bool:
    return model.startswith(MLFLOW_SCHEMES)


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    name: Name
    type: Literal["numeric", "categorical"] = "numeric"
    values: tuple[str, ...] | None = None
    # error: a null (or, for a categorical feature, a value outside `values`) is refused with
    # 422; impute: it is accepted, and the model's pipeline fills it in (a numeric null becomes
    # NaN: the median for linear models, a learned branch for tree models; an unknown category
    # encodes as none of the known ones).
    missing: Literal["error", "impute"] = "error"

    @model_validator(mode="after")
    def _categorical_needs_values(self) -> Feature:
        if self.type == "categorical" and not self.values:
            raise ValueError("a categorical feature needs a non-empty 'values' list")
        if self.type == "numeric" and self.values:
            raise ValueError("'values' is only for categorical features")
        return self


class GaussianPrior(_Strict):
    """Normal-Inverse-Gamma prior of a gaussian reward: sigma^2 ~ InvGamma(alpha, beta) and
    mean | sigma^2 ~ N(mu, sigma^2 / kappa). The default is weak: the prior mean is worth 1% of
    one reward and the variance guess (beta / alpha) two rewards; set mu near the expected
    reward and beta / alpha near its variance when rewards are on another scale."""

    mu: float = Field(default=0.0, allow_inf_nan=False)
    kappa: float = Field(default=0.01, gt=0, allow_inf_nan=False)
    # > 1/2: the posterior mean's Student-t marginal then has a finite mean even before any
    # reward, so the expected loss is defined.
    alpha: float = Field(default=1.0, gt=0.5, allow_inf_nan=False)
    beta: float = Field(default=1.0, gt=0, allow_inf_nan=False)


# A gaussian reward without a `range` takes this one: finite, so that a posterior's sums of
# rewards and of their squares stay finite (|r| up to 1e12 leaves room for ~1e284 rewards).
GAUSSIAN_DEFAULT_RANGE = (-1e12, 1e12)


class Reward(_Strict):
    # bernoulli: rewards in [0, 1], Beta posteriors (the top-level 'prior'); gaussian: any real
    # reward (revenue, negative latency), Normal-Inverse-Gamma posteriors (reward.prior).
    type: Literal["bernoulli", "gaussian"] = "bernoulli"
    range: tuple[float, float] | None = None
    # How a label becomes a reward: 'match' gives the share of rows whose label matches the
    # prediction (gateway.learning.labels: by value, so 1, 1.0, "1" and true are one class).
    from_label: Literal["match"] = "match"
    # Feedback later than this after the prediction is refused (the request id expires).
    window_s: float = Field(default=86_400.0, gt=0)
    # Applied to a request with no feedback once window_s has passed (e.g. 0: silence means no
    # conversion). Feedback arriving after that is kept for retraining but not learned from.
    # null: a request without feedback never counts.
    default: float | None = None
    # At most this many rewards are accepted per unit_id within window_s, so that a few clients
    # sending many requests cannot steer the bandit. null: no quota.
    max_per_unit: int | None = Field(default=None, ge=1)
    # The Normal-Inverse-Gamma prior of a gaussian reward (null: GaussianPrior's defaults).
    prior: GaussianPrior | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        if self.range is not None:
            return self.range
        return (0.0, 1.0) if self.type == "bernoulli" else GAUSSIAN_DEFAULT_RANGE

    @property
    def gaussian_prior(self) -> GaussianPrior:
        return self.prior if self.prior is not None else GaussianPrior()

    @model_validator(mode="after")
    def _range_is_ordered(self) -> Reward:
        if self.range is not None:
            lo, hi = self.range
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError("range must be finite: the posterior's sums of rewards and their squares are kept")
            if not lo < hi:
                raise ValueError("range must be [low, high] with low < high")
            if self.type == "bernoulli" and (lo < 0 or hi > 1):
                raise ValueError("a bernoulli reward's range must lie within [0, 1]")
        if self.default is not None:
            lo, hi = self.bounds
            if not lo <= self.default <= hi:
                raise ValueError(f"default {self.default} is outside the reward's range [{lo}, {hi}]")
        if self.prior is not None and self.type != "gaussian":
            # Refused rather than ignored: a bernoulli reward's Beta prior is the top-level one.
            raise ValueError("prior is only for gaussian rewards; a bernoulli reward uses the top-level 'prior' (alpha, beta)")
        return self


class Prior(_Strict):
    alpha: float = Field(default=1.0, gt=0)
    beta: float = Field(default=1.0, gt=0)


class Holdout(_Strict):
    variant: Name
    fraction: float = Field(gt=0, lt=1)


class Promotion(_Strict):
    prob_best: float = Field(default=0.95, gt=0.5, le=1)
    max_expected_loss: float = Field(default=0.0025, ge=0)
    min_samples: int = Field(default=500, ge=1)
    min_duration_s: float = Field(default=0, ge=0)
    # The anytime-valid test (mixture SPRT) that must also reject "the leader is not best": the
    # chance of ever promoting a variant that is not best stays below alpha, however often the
    # rule is checked. tau2 tunes its power (0.004: strongest near 4,000 rewards per variant).
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    tau2: float = Field(default=0.004, gt=0)


class Guardrails(_Strict):
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_p99_latency_ms: float = Field(default=200, gt=0)
    # The champion's accuracy over its newest labelled feedback (monitoring.window of them);
    # judged once it has min_labels. null: not a guardrail.
    min_accuracy: float | None = Field(default=None, gt=0, le=1)
    min_labels: int = Field(default=200, ge=1)


class Monitoring(_Strict):
    # Online KPIs use each variant's newest `window` labelled items; drift (PSI) compares the
    # newest `window` predictions with the champion's training data.
    window: int = Field(default=1000, ge=50)
    # Live predictions needed before a PSI is reported (fewer give noisy values).
    min_drift_rows: int = Field(default=200, ge=20)


class Variant(_Strict):
    name: Name
    # A model artifact (.skops or .ubj/.json; a relative path is looked up beside the policy
    # file, then in the state dir), or an MLflow model: models:/<name>/<version>,
    # models:/<name>@<alias> or runs:/<run_id>/<path> (extra `mlflow`, MLFLOW_TRACKING_URI).
    model: str
    # How to build the artifact when it is missing (the default policy trains on first start).
    train: Literal["logistic_regression", "xgboost", "hist_gradient_boosting"] | None = None
    # shadow: gets a copy of live requests (shadow.fraction of them) off the request path; its
    # answers are logged and scored against labels but never returned, and it takes no traffic.
    role: Literal["live", "shadow"] = "live"
    # The names (the policy's features or derived features) this variant's model takes, in the
    # order of its columns; null: all the policy's features (gateway.policy_features).
    features: tuple[Name, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _check_mlflow_uri(self) -> Variant:
        if is_mlflow_uri(self.model):
            # Lazy: the parser lives with the MLflow loader, which imports this module.
            from gateway.learning.mlflow_models import parse_mlflow_uri

            parse_mlflow_uri(self.model)  # its error (a ValueError) names the accepted forms
            if self.train is not None:
                raise ValueError("train: an MLflow model is loaded from MLflow, there is nothing to train")
        return self


class VarianceReduction(_Strict):
    """CUPED: the promotion test compares rewards adjusted by a covariate known before the
    request is served (a numeric feature), so it needs fewer rewards when the covariate predicts
    the reward (about 1 - rho^2 of them with 50/50 traffic; bench/cuped.py)."""

    covariate: Name


class Policy(_Strict):
    experiment: Name
    features: tuple[Feature, ...] = Field(min_length=1)
    # Features computed from the request's features (gateway.policy_features); a variant uses one
    # by naming it in its `features`.
    derived: tuple[DerivedFeature, ...] = ()
    # Per-unit aggregates kept in Redis by unit_id (gateway.policy_features); null: none, and no
    # extra round trip per request.
    aggregates: Aggregates | None = None
    reward: Reward = Reward()
    # thompson: least regret; top_two_thompson (beta 0.5): identifies the best far sooner;
    # discounted_thompson: forgets old rewards (weight discount^age, age counted in rewards), for
    # rewards that drift; contextual_thompson: a posterior per segment of `context` (the values of
    # some categorical features), so each segment can find, and promote, its own best variant;
    # linear_thompson: a Bayesian linear model of the reward per variant in `context` (numeric
    # features), so each request goes where its own numbers predict the most reward.
    algorithm: Literal["thompson", "top_two_thompson", "discounted_thompson", "contextual_thompson",
                       "linear_thompson"] = "thompson"
    # contextual_thompson: the categorical features whose values make a request's segment;
    # linear_thompson: the numeric features the reward is modelled on (gateway.policy_context).
    context: tuple[Name, ...] = ()
    # linear_thompson: the prior of each variant's linear model (null: LinearPriorSettings'
    # defaults). Null rather than a default object, so that a policy dumped and read back (as the
    # deployments receive it) still says whether it was given.
    linear_prior: LinearPriorSettings | None = None
    # contextual_thompson: a variant's overall posterior mean, worth this many rewards, is the
    # prior of its posterior in each segment: a segment with little data borrows from the whole.
    context_strength: float = Field(default=20.0, gt=0)
    # contextual_thompson: rewards a variant needs in a segment before the segment's own
    # posteriors route it (uniform there until then), and before the segment's promotion test
    # may decide. Small, since each segment pays it again: 200 per segment cost ~187 of the
    # 219 conversions of regret in bench/contextual.py; 20 keeps A/A promotions under 1%.
    segment_burn_in: int = Field(default=20, ge=0)
    # discounted_thompson only: the weight of a reward falls by this factor with every later
    # reward, so the posteriors remember about 1 / (1 - discount) rewards (0.9999: 10,000).
    discount: float = Field(default=0.9999, gt=0, le=1)
    # The Beta prior of bernoulli rewards (gaussian rewards: reward.prior).
    prior: Prior = Prior()
    min_weight: float = Field(default=0.01, ge=0, lt=0.5)
    # The floor is min_weight until every live variant has promotion.min_samples rewards, then
    # decays with the evidence (min_weight * sqrt(k * min_samples / total rewards)) down to this
    # share, never to 0 (null: min_weight / 10; at most min_weight; min_weight: a constant floor).
    min_weight_final: float | None = Field(default=None, ge=0, lt=0.5)
    # Traffic stays uniform until every variant has this many rewards (defaults to min_samples),
    # so that the promotion rule's per-variant minimum is reached without starving an arm.
    burn_in: int | None = Field(default=None, ge=0)
    holdout: Holdout | None = None
    promotion: Promotion = Promotion()
    guardrails: Guardrails = Guardrails()
    monitoring: Monitoring = Monitoring()
    variants: tuple[Variant, ...] = Field(min_length=1)
    bootstrap: Bootstrap | None = None
    retrain: Retrain = Retrain()
    shadow: Shadow = Shadow()
    variance_reduction: VarianceReduction | None = None

    @field_validator("features")
    @classmethod
    def _unique_features(cls, features: tuple[Feature, ...]) -> tuple[Feature, ...]:
        names = [f.name for f in features]
        if len(names) != len(set(names)):
            raise ValueError(f"feature names must be unique, got {names}")
        return features

    @model_validator(mode="after")
    def _check_variants(self) -> Policy:
        names = [v.name for v in self.variants]
        if len(names) != len(set(names)):
            raise ValueError(f"variants: names must be unique, got {names}")
        if self.holdout is not None:
            if self.holdout.variant not in names:
                raise ValueError(f"holdout.variant {self.holdout.variant!r} is not one of the variants {names}")
            if len(names) < 2:
                raise ValueError("variants: a holdout needs at least one other variant")
            if self.holdout.variant in self.shadow_variants:
                raise ValueError(f"holdout.variant {self.holdout.variant!r} cannot be a shadow variant")
        if not self.bandit_arms:
            raise ValueError("variants: at least one variant must be live (not the holdout, not role: shadow)")
        check_context(self)
        check_features(self)
        if self.min_weight * len(self.bandit_arms) > 1:
            raise ValueError(f"min_weight {self.min_weight} times {len(self.bandit_arms)} variants exceeds 1")
        return self

    @property
    def variant_names(self) -> list[str]:
        return [v.name for v in self.variants]

    @property
    def bandit_arms(self) -> list[str]:
        """The variants the bandit chooses among: all but the holdout and the shadow ones (as
        the file says; an operator may move a variant in or out of shadow at run time)."""
        held = self.holdout.variant if self.holdout else None
        return [v.name for v in self.variants if v.name != held and v.role == "live"]

    @property
    def shadow_variants(self) -> list[str]:
        return [v.name for v in self.variants if v.role == "shadow"]

    @property
    def burn_in_rewards(self) -> int:
        return self.promotion.min_samples if self.burn_in is None else self.burn_in


def _format_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid policy"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def parse_policy(data: object, source: str = "<policy>") -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy must be a mapping, got {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as err:
        raise PolicyError(_format_validation_error(source, err)) from None


def load_policy_file(path: str | Path) -> Policy:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise PolicyError(f"{path}: not UTF-8 text: {err}") from None
    except OSError as err:
        raise PolicyError(f"{path}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise PolicyError(f"{path}: not valid YAML: {err}") from None
    return parse_policy(data, str(path))


def policy_files(path: str | Path) -> list[Path]:
    """A policy path is one file or a folder of *.yaml / *.yml files."""
    path = Path(path)
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise PolicyError(f"{path}: no *.yaml policy files in this folder")
        return files
    if not path.exists():
        raise PolicyError(f"{path}: no such policy file or folder")
    return [path]


def load_policies(path: str | Path) -> dict[str, tuple[Policy, Path]]:
    """All policies under `path`, keyed by experiment, each with the file it came from."""
    out: dict[str, tuple[Policy, Path]] = {}
    for file in policy_files(path):
        policy = load_policy_file(file)
        if policy.experiment in out:
            raise PolicyError(f"{file}: experiment {policy.experiment!r} is also defined in {out[policy.experiment][1]}")
        out[policy.experiment] = (policy, file.resolve())
    return out
