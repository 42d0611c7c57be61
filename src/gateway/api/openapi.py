"""The OpenAPI 3 document of the gateway's HTTP API, served at GET /openapi.json.

It describes every route that `create_app` registers: our JSON API (predictions, feedback,
experiments, the admin verbs behind a bearer token), the Open Inference Protocol (KServe V2)
routes, the operations routes (/healthz, /metrics, /dashboard and its scripts) and this
document itself; with the request and response bodies and every status a route can answer.
Each schema follows the code that builds the body (dataplane.py, state.py, control.py,
oip.py): when one of them changes, change this file with it (tests/unit/test_openapi.py and
the schemathesis fuzz test in tests/integration hold the two together).
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.dashboard import DASHBOARD_JS, PLOTLY_JS
from gateway.api.http import DEFAULT_MAX_BODY_BYTES
from gateway.api.oip import (
    HEADER_LENGTH,
    OUTPUT_NAME,
    SERVER_NAME,
    SUPPORTED_DATATYPES,
    server_version,
)
from gateway.dataplane import MAX_ID_LEN, MAX_REWARDS_PER_BATCH, REQUEST_ID
from gateway.policy import NAME_PATTERN

OPENAPI_VERSION = "3.0.3"
OPENAPI_PATH = "/openapi.json"

JSON = "application/json"
ERROR_REF = "#/components/schemas/Error"
OIP_ERROR_REF = "#/components/schemas/OipError"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# -- schemas -------------------------------------------------------------------------------


def _schemas() -> dict[str, Any]:
    number = {"type": "number"}
    count = {"type": "integer", "minimum": 0}
    error_detail = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "A stable, machine-readable code, e.g. `experiment_not_found`."},
            "message": {"type": "string", "description": "What went wrong, for a person."},
        },
    }
    feature_value = {
        "description": "A number for a numeric feature, one of the declared values for a categorical one.",
        "oneOf": [{"type": "number"}, {"type": "string"}],
    }
    label = {
        "description": "The true outcome: a value, or a list of values with one per instance of the "
        "prediction. The policy turns it into a reward (1 when it equals the prediction).",
        "anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}, {"type": "array", "items": {}}],
    }
    unit = {"type": "number", "minimum": 0, "maximum": 1}
    positive = {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    interval = {
        "type": "array",
        "minItems": 2,
        "maxItems": 2,
        "items": number,
        "description": "The 95% credible interval.",
    }
    # A ratio of the confusion counts: null while its denominator is zero.
    ratio = {"type": "number", "nullable": True, "minimum": 0, "maximum": 1}
    # Inline, not a component: in OpenAPI 3.0 `nullable` beside a $ref is ignored.
    drift_report = {
        "type": "object",
        "description": "Population stability index of every feature, the newest `monitoring.window` "
        "predictions against the reference, and of each variant's predictions against its own in the "
        "reference. Null until this router replica's first monitoring pass (every 10 s).",
        "required": ["reference", "reference_rows", "live_rows", "features", "predictions", "max_psi", "level",
                     "status"],
        "properties": {
            "reference": {
                "type": "string",
                "description": "`training window of <champion>`, or `first predictions served`.",
            },
            "reference_rows": count,
            "live_rows": count,
            "features": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
                         "description": "PSI per feature."},
            "predictions": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
                            "description": "PSI of the predictions, per variant."},
            "max_psi": {"type": "number", "nullable": True, "minimum": 0},
            "level": {
                "type": "string",
                "nullable": True,
                "enum": ["stable", "moderate", "significant", None],
                "description": "The reading of `max_psi`: below 0.1 stable, below 0.25 moderate, else "
                "significant.",
            },
            "status": {
                "type": "string",
                "enum": ["ok", "insufficient_data"],
                "description": "insufficient_data: too few rows on either side (`monitoring.min_drift_rows`); "
                "no PSI is given then.",
            },
        },
    }
    tensor_data = {
        "type": "array",
        "description": "The elements in row-major order, flat or nested.",
        "items": {},
    }
    return {
        # ---- errors
        "Error": {
            "type": "object",
            "description": "Every error of the gateway's own API.",
            "required": ["error"],
            "properties": {"error": _ref("ErrorDetail")},
        },
        "ErrorDetail": error_detail,
        "OipError": {
            "type": "object",
            "description": "An error of the Open Inference Protocol routes, in the protocol's own format.",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        # ---- predictions
        "PredictRequest": {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "description": "Rows: each a list of values in the policy's feature order, or an object "
                    "keyed by feature name. At most the gateway's `max_instances` (1000 by default).",
                    "items": {
                        "oneOf": [
                            {"type": "array", "items": feature_value},
                            {"type": "object", "additionalProperties": feature_value},
                        ]
                    },
                },
                "unit_id": {
                    "type": "string",
                    "nullable": True,
                    "minLength": 1,
                    "maxLength": MAX_ID_LEN,
                    "description": "Sticky assignment: the same unit keeps the same variant while the "
                    "experiment's weights stand.",
                },
            },
        },
        "PredictResponse": {
            "type": "object",
            "required": ["request_id", "experiment", "variant", "predictions", "propensity", "reward_token"],
            "properties": {
                "request_id": {
                    "type": "string",
                    "description": "The id to send feedback for (also in `x-request-id`).",
                },
                "experiment": {"type": "string"},
                "variant": {"type": "string", "description": "The variant the bandit picked."},
                "predictions": {"type": "array", "items": {}, "description": "One prediction per instance."},
                "propensity": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": "The probability with which the variant was picked.",
                },
                "reward_token": {"type": "string", "description": "Send it back with the feedback for this request."},
            },
        },
        # ---- feedback
        "RewardItem": {
            "type": "object",
            "description": "Feedback for one prediction: `reward`, `label`, or both.",
            "required": ["request_id", "token"],
            "anyOf": [{"required": ["reward"]}, {"required": ["label"]}],
            "properties": {
                "request_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN},
                "token": {"type": "string", "description": "The `reward_token` returned with the prediction."},
                "reward": {
                    "type": "number",
                    "description": "Within the policy's range ([0, 1] for a bernoulli reward).",
                },
                "label": label,
            },
        },
        "RewardBatch": {
            "type": "object",
            "required": ["rewards"],
            "properties": {
                "rewards": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_REWARDS_PER_BATCH,
                    "items": _ref("RewardItem"),
                }
            },
        },
        "RewardResult": {
            "type": "object",
            "description": "Feedback taken (`accepted`), already taken before (`duplicate`, which changes "
            "nothing), or `late`: it came after the reward window, once the policy's default reward had been "
            "applied; it is kept for retraining but the bandit does not learn from it. `queued` (HTTP 202 for "
            "a single item): the state store is unreachable and the item is durably spooled on the router's disk; "
            "it is applied, exactly once, when the store is back.",
            "required": ["request_id", "status", "variant", "reward"],
            "properties": {
                "request_id": {"type": "string"},
                "status": {"type": "string", "enum": ["accepted", "duplicate", "late", "queued"]},
                "variant": {"type": "string", "description": "The variant that served the request."},
                "reward": {"type": "number", "nullable": True,
                           "description": "The reward applied (from `label` if none was given); null for a queued "
                           "label, whose reward is worked out when it is applied."},
            },
        },
        "RejectedReward": {
            "type": "object",
            "description": "A batch item that was refused, with the error and status it would have had alone.",
            "required": ["request_id", "status", "error", "http_status"],
            "properties": {
                "request_id": {"type": "string", "nullable": True},
                "status": {"type": "string", "enum": ["rejected"]},
                "error": _ref("ErrorDetail"),
                "http_status": {"type": "integer", "enum": [403, 404, 422, 429]},
            },
        },
        "RewardResponse": {
            "description": "A single item's result, or a batch's results.",
            "oneOf": [_ref("RewardResult"), _ref("BatchRewardResponse")],
        },
        "BatchRewardResponse": {
            "type": "object",
            "required": ["results", "accepted", "duplicate", "late", "queued", "rejected"],
            "properties": {
                "results": {
                    "type": "array",
                    "description": "One result per item, in order.",
                    "items": {"oneOf": [_ref("RewardResult"), _ref("RejectedReward")]},
                },
                "accepted": count,
                "duplicate": count,
                "late": count,
                "queued": count,
                "rejected": count,
            },
        },
        # ---- experiments
        "VariantState": {
            "type": "object",
            "required": [
                "name", "role", "posterior", "mean", "credible_interval", "prob_best", "expected_loss",
                "traffic_share", "requests", "rewards", "reward_sum",
            ],
            "properties": {
                "name": {"type": "string"},
                "role": {"type": "string", "enum": ["arm", "holdout"]},
                "posterior": {
                    "description": "Beta(alpha, beta) of the reward rate for a bernoulli reward; "
                    "Normal-Inverse-Gamma(mu, kappa, alpha, beta) for a gaussian one (see `reward_type`).",
                    "oneOf": [_ref("BetaPosterior"), _ref("NormalInverseGammaPosterior")],
                },
                "mean": {"type": "number", "description": "Posterior mean reward."},
                "credible_interval": {**interval, "description": "The 95% credible interval of the mean reward."},
                "prob_best": {
                    "type": "number",
                    "nullable": True,
                    "minimum": 0,
                    "maximum": 1,
                    "description": "Probability to be the best arm; null for the holdout.",
                },
                "expected_loss": {"type": "number", "nullable": True, "description": "Null for the holdout."},
                "traffic_share": {"type": "number", "minimum": 0, "maximum": 1},
                "requests": count,
                "rewards": count,
                "reward_sum": number,
            },
        },
        "BetaPosterior": {
            "type": "object",
            "description": "Beta(alpha, beta): the posterior of a bernoulli reward rate.",
            "required": ["alpha", "beta"],
            "additionalProperties": False,
            "properties": {"alpha": positive, "beta": positive},
        },
        "NormalInverseGammaPosterior": {
            "type": "object",
            "description": "Normal-Inverse-Gamma(mu, kappa, alpha, beta) of a gaussian reward: sigma^2 ~ "
            "InvGamma(alpha, beta), mean | sigma^2 ~ N(mu, sigma^2 / kappa). The mean reward's marginal is a "
            "Student t with 2 alpha degrees of freedom, location mu and scale sqrt(beta / (alpha kappa)).",
            "required": ["mu", "kappa", "alpha", "beta"],
            "additionalProperties": False,
            "properties": {"mu": number, "kappa": positive, "alpha": positive, "beta": positive},
        },
        "HistoryEntry": {
            "type": "object",
            "description": "A decision: a promotion (by the rule or an operator), a rollback (by an operator or "
            "a guardrail), a pause, a resume, a retired variant, a retraining run and the challenger it "
            "added, a drift alarm (by the monitor; `evidence` has the largest PSI per feature, or per "
            "`prediction:<variant>`, the `reference` window and the `reference_rows` and `live_rows` "
            "compared). Fields beyond these depend on the action (`previous`, `from_variant`, `weights`, "
            "`resume_to`, `outcome`, `trigger`, `rows`, ...).",
            "required": ["action", "at", "by", "reason"],
            "properties": {
                "action": {
                    "type": "string",
                    "description": "promote, rollback, pause, resume, retire, retrain, challenger_added, "
                    "drift_alarm, ...",
                },
                "at": {"type": "number", "description": "Unix time in seconds."},
                "by": {"type": "string", "description": "rule, admin, guardrail, retrainer or monitor."},
                "reason": {"type": "string", "nullable": True},
                "variant": {"type": "string", "nullable": True},
                "evidence": {"type": "object", "additionalProperties": True},
            },
        },
        "PromotionRule": {
            "type": "object",
            "required": ["prob_best", "max_expected_loss", "min_samples", "min_duration_s", "alpha", "tau2"],
            "properties": {
                "prob_best": number,
                "max_expected_loss": number,
                "min_samples": {"type": "integer"},
                "min_duration_s": number,
                "alpha": {"type": "number", "description": "Error level of the anytime-valid test."},
                "tau2": {"type": "number", "description": "Mixture variance of the anytime-valid test."},
            },
        },
        "ExperimentState": {
            "type": "object",
            "required": [
                "name", "experiment", "status", "champion", "reward_type", "allocation", "started_at",
                "promotion_rule", "variants", "holdout_uplift", "discount", "history", "totals", "srm", "kpis",
                "drift",
            ],
            "properties": {
                "name": {"type": "string"},
                "experiment": {"type": "string", "description": "The same as `name`."},
                "status": {"type": "string", "enum": ["exploring", "promoted", "paused"]},
                "champion": {"type": "string", "nullable": True},
                "reward_type": {
                    "type": "string",
                    "enum": ["bernoulli", "gaussian"],
                    "description": "bernoulli: rewards in [0, 1], Beta posteriors; gaussian: real rewards, "
                    "Normal-Inverse-Gamma posteriors.",
                },
                "allocation": {
                    "type": "string",
                    "enum": ["burn_in", "burn_in_challenger", "thompson", "top_two_thompson", "discounted_thompson",
                             "promoted", "paused"],
                    "description": "How traffic is split now: uniformly until every arm has its burn-in rewards, "
                    "then by the policy's algorithm (burn_in_challenger: a newer arm still burns in with the "
                    "uniform share beside the others); all to the champion once promoted; frozen while paused.",
                },
                "started_at": {"type": "number", "nullable": True},
                "promotion_rule": _ref("PromotionRule"),
                "variants": {"type": "array", "items": _ref("VariantState")},
                "holdout_uplift": {
                    "type": "object",
                    "nullable": True,
                    "description": "With a holdout: the posterior of (mean reward of `variant`) - (mean reward of "
                    "the holdout), for the champion or else the arm most likely to be best. Null without a holdout.",
                    "required": ["variant", "holdout", "uplift", "credible_interval", "prob_positive"],
                    "properties": {
                        "variant": {"type": "string"},
                        "holdout": {"type": "string"},
                        "uplift": {"type": "number", "description": "Difference of the posterior means."},
                        "credible_interval": interval,
                        "prob_positive": {**unit, "description": "Posterior probability that the uplift is positive."},
                    },
                },
                "discount": {
                    "type": "object",
                    "nullable": True,
                    "description": "discounted_thompson only (null otherwise): the discount per reward and, per "
                    "live arm, the discounted number of rewards the traffic split is based on.",
                    "required": ["gamma", "effective_rewards"],
                    "properties": {
                        "gamma": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
                        "effective_rewards": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
                    },
                },
                "history": {"type": "array", "items": _ref("HistoryEntry")},
                "totals": {
                    "type": "object",
                    "required": ["requests", "rewards"],
                    "properties": {"requests": count, "rewards": count},
                },
                "srm": {
                    "type": "object",
                    "description": "Sample-ratio mismatch: requests served vs expected under the weights in force "
                                   "over time (this router replica's view since it started); mismatch at p < 0.001.",
                    "required": ["expected", "observed", "p_value", "mismatch"],
                    "properties": {
                        "expected": {"type": "object", "additionalProperties": {"type": "number"}},
                        "observed": {"type": "object", "additionalProperties": {"type": "number"}},
                        "p_value": {"type": "number", "nullable": True},
                        "mismatch": {"type": "boolean"},
                    },
                },
                "kpis": {
                    "type": "object",
                    "nullable": True,
                    "description": "Online KPIs per variant from labelled feedback: over its whole life (from the "
                    "confusion counts) and over its newest `monitoring.window` labels. Null until this router "
                    "replica's first monitoring pass (every 10 s).",
                    "additionalProperties": _ref("VariantKPIs"),
                },
                "drift": {**drift_report, "nullable": True},
            },
        },
        "VariantKPIs": {
            "type": "object",
            "required": ["lifetime", "window"],
            "properties": {
                "lifetime": _ref("KPIFigures"),
                "window": {
                    "allOf": [_ref("KPIFigures"), {"required": ["roc_auc", "n_scored"]}],
                    "description": "The newest `monitoring.window` labels; with a ROC AUC when the model gave scores.",
                },
            },
        },
        "KPIFigures": {
            "type": "object",
            "description": "Binary classification figures, class 1 positive; a ratio is null while undefined.",
            "required": ["n", "accuracy", "precision", "recall", "f1", "positives", "tp", "fp", "tn", "fn"],
            "properties": {
                "n": {**count, "description": "Labelled predictions counted."},
                "accuracy": ratio,
                "precision": ratio,
                "recall": ratio,
                "f1": ratio,
                "roc_auc": {**ratio, "description": "Null without scores or with a single class among them."},
                "positives": {**count, "description": "Labels of the positive class (tp + fn)."},
                "tp": count,
                "fp": count,
                "tn": count,
                "fn": count,
                "n_scored": {**count, "description": "Labelled predictions that came with a score."},
            },
        },
        "ExperimentList": {
            "type": "object",
            "required": ["experiments"],
            "properties": {"experiments": {"type": "array", "items": _ref("ExperimentState")}},
        },
        "SeriesVariant": {
            "type": "object",
            "required": ["traffic_share", "prob_best", "mean", "credible_interval", "requests", "rewards"],
            "properties": {
                "traffic_share": number,
                "prob_best": {"type": "number", "nullable": True},
                "mean": number,
                "credible_interval": {"type": "array", "minItems": 2, "maxItems": 2, "items": number},
                "requests": count,
                "rewards": count,
            },
        },
        "SeriesPoint": {
            "type": "object",
            "required": ["t", "status", "champion", "variants"],
            "properties": {
                "t": {"type": "number", "description": "Unix time in seconds."},
                "status": {"type": "string", "enum": ["exploring", "promoted", "paused"]},
                "champion": {"type": "string", "nullable": True},
                "variants": {"type": "object", "additionalProperties": _ref("SeriesVariant")},
            },
        },
        "Series": {
            "type": "object",
            "required": ["experiment", "points", "history"],
            "properties": {
                "experiment": {"type": "string"},
                "points": {
                    "type": "array",
                    "items": _ref("SeriesPoint"),
                    "description": "In time order, at most 2000.",
                },
                "history": {"type": "array", "items": _ref("HistoryEntry")},
            },
        },
        "Health": {
            "type": "object",
            "description": "`degraded` while the state store is unreachable (predictions are served from cached "
            "weights, writes spooled to local disk) or spooled writes are still being replayed.",
            "required": ["status", "store", "spooled", "experiments"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "store": {"type": "string", "enum": ["ok", "unreachable"]},
                "spooled": {"type": "integer", "minimum": 0, "description": "Writes waiting in the local spool."},
                "experiments": {"type": "array", "items": {"type": "string"}},
            },
        },
        # ---- admin
        "AdminRequest": {
            "type": "object",
            "description": "Optional: why the operator decided (recorded in the history).",
            "properties": {"reason": {"type": "string", "maxLength": 500, "nullable": True}},
        },
        "AddVariantRequest": {
            "type": "object",
            "required": ["name", "model"],
            "properties": {
                "name": {"type": "string", "pattern": NAME_PATTERN},
                "model": {"type": "string", "minLength": 1,
                          "description": "Path of a .skops, .ubj or .json artifact on the gateway's file system."},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                           "description": "Expected digest; the artifact is refused when it differs."},
                "reason": {"type": "string", "maxLength": 500},
            },
        },
        "PromoteRequest": {
            "type": "object",
            "required": ["variant"],
            "properties": {
                "variant": {"type": "string", "description": "A live variant (not the holdout, not retired)."},
                "reason": {"type": "string", "maxLength": 500, "nullable": True},
            },
        },
        "RetrainResult": {
            "type": "object",
            "description": "The outcome of one retraining run: `admitted` (a challenger was added: `variant`, and "
            "the variants retired to make room), `rejected` (no candidate beat the champion) or `skipped` (too "
            "few labelled requests).",
            "required": ["outcome", "rows"],
            "properties": {
                "outcome": {"type": "string", "enum": ["admitted", "rejected", "skipped"]},
                "reason": {"type": "string", "nullable": True},
                "rows": count,
                "variant": {"type": "string"},
                "retired": {"type": "array", "items": {"type": "string"}},
                "result": {"type": "object", "additionalProperties": True},
            },
        },
        # ---- Open Inference Protocol
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "TensorMetadata": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}, "description": "The variants."},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                "outputs": {"type": "array", "items": _ref("TensorMetadata")},
            },
        },
        "LiveResponse": {
            "type": "object",
            "required": ["live"],
            "properties": {"live": {"type": "boolean"}},
        },
        "ServerReadyResponse": {
            "type": "object",
            "required": ["ready"],
            "properties": {"ready": {"type": "boolean"}},
        },
        "ModelReadyResponse": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "Tensor": {
            "type": "object",
            "description": "An input tensor: one per policy feature named like it (shape [n] or [n, 1]), or a "
            "single [n, n_features] tensor in the policy's feature order. Its elements are in `data`, or "
            "(binary tensor data extension) in the binary part of the body, `parameters.binary_data_size` "
            "bytes long.",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "datatype": {"type": "string", "enum": list(SUPPORTED_DATATYPES)},
                "parameters": {
                    "type": "object",
                    "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                },
                "data": tensor_data,
            },
        },
        "RequestedOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "enum": [OUTPUT_NAME]},
                "parameters": {"type": "object"},
            },
        },
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string", "description": "The client's id; answered as `parameters.client_id`."},
                "parameters": {
                    "type": "object",
                    "properties": {
                        "unit_id": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_ID_LEN,
                            "description": "Sticky assignment, as `unit_id` of the predict route.",
                        }
                    },
                },
                "inputs": {"type": "array", "minItems": 1, "items": _ref("Tensor")},
                "outputs": {"type": "array", "items": _ref("RequestedOutput")},
            },
        },
        "OutputTensor": {
            "type": "object",
            "required": ["name", "datatype", "shape", "data"],
            "properties": {
                "name": {"type": "string", "enum": [OUTPUT_NAME]},
                "datatype": {"type": "string", "enum": ["INT64", "FP64", "BOOL", "BYTES"]},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "data": {"type": "array", "items": {}},
            },
        },
        "InferResponse": {
            "type": "object",
            "required": ["model_name", "model_version", "id", "parameters", "outputs"],
            "properties": {
                "model_name": {"type": "string", "description": "The experiment."},
                "model_version": {"type": "string", "description": "The variant that answered."},
                "id": {"type": "string", "description": "The gateway's request id (send feedback for it)."},
                "parameters": {
                    "type": "object",
                    "required": ["variant"],
                    "properties": {
                        "variant": {"type": "string"},
                        "propensity": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 1,
                            "description": "Only when the bandit routed the request.",
                        },
                        "reward_token": {"type": "string", "description": "Only when the bandit routed the request."},
                        "client_id": {"type": "string", "description": "The request's `id`, if it had one."},
                    },
                },
                "outputs": {"type": "array", "minItems": 1, "items": _ref("OutputTensor")},
            },
        },
        "OpenAPIDocument": {
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": {
                "openapi": {"type": "string"},
                "info": {"type": "object"},
                "paths": {"type": "object"},
            },
        },
    }


# -- responses and parameters ---------------------------------------------------------------

REQUEST_ID_HEADER = {
    "description": "The request id: the client's own `x-request-id`, or one the gateway made.",
    "schema": {"type": "string"},
}


def _json_response(description: str, schema_ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
        "content": {JSON: {"schema": {"$ref": schema_ref}}},
    }


def _ok(schema: str, description: str = "OK") -> dict[str, Any]:
    return _json_response(description, f"#/components/schemas/{schema}")


def _error(description: str) -> dict[str, Any]:
    return _json_response(description, ERROR_REF)


def _oip_error(description: str) -> dict[str, Any]:
    return _json_response(description, OIP_ERROR_REF)


TOO_LARGE = f"The body is larger than {DEFAULT_MAX_BODY_BYTES} bytes (`payload_too_large`)."
ADMIN_401 = "No bearer token (`unauthorized`), or the admin API is off: no GATEWAY_ADMIN_TOKEN (`admin_disabled`)."
ADMIN_403 = "The bearer token is wrong (`forbidden`)."


def _experiment_parameter(experiments: Sequence[str] | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if experiments:
        schema["enum"] = list(experiments)
    return {
        "name": "experiment",
        "in": "path",
        "required": True,
        "description": "The experiment (in the Open Inference Protocol: the model).",
        "schema": schema,
    }


def _components(experiments: Sequence[str] | None) -> dict[str, Any]:
    return {
        "schemas": _schemas(),
        "parameters": {
            "Experiment": _experiment_parameter(experiments),
            "Variant": {
                "name": "variant",
                "in": "path",
                "required": True,
                "description": "A variant of the experiment (in the Open Inference Protocol: a model version).",
                "schema": {"type": "string"},
            },
            "ClientRequestId": {
                "name": "x-request-id",
                "in": "header",
                "required": False,
                "description": "Bring your own request id (1 to 128 of letters, digits and `._:-`); it must not "
                "have been used before in the experiment (409).",
                "schema": {"type": "string", "pattern": f"^{REQUEST_ID.pattern}$"},
            },
        },
        "headers": {"RequestId": REQUEST_ID_HEADER},
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "The admin token (GATEWAY_ADMIN_TOKEN).",
            }
        },
    }


# -- operations ----------------------------------------------------------------------------

EXPERIMENT = {"$ref": "#/components/parameters/Experiment"}
VARIANT = {"$ref": "#/components/parameters/Variant"}
CLIENT_REQUEST_ID = {"$ref": "#/components/parameters/ClientRequestId"}


def _body(schema: dict[str, Any], *, required: bool = True, description: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"required": required, "content": {JSON: {"schema": schema}}}
    if description:
        body["description"] = description
    return body


def _predict() -> dict[str, Any]:
    return {
        "post": {
            "tags": ["predictions"],
            "operationId": "predict",
            "summary": "A prediction from the variant the bandit picks",
            "parameters": [EXPERIMENT, CLIENT_REQUEST_ID],
            "requestBody": _body(_ref("PredictRequest")),
            "responses": {
                "200": _ok("PredictResponse"),
                "400": _error("The body is not JSON (`invalid_json`) or not an object (`invalid_body`), or the "
                              "`x-request-id` is not a usable id (`invalid_request_id`)."),
                "404": _error("No such experiment (`experiment_not_found`)."),
                "409": _error("The `x-request-id` was already used (`request_id_in_use`)."),
                "413": _error(TOO_LARGE),
                "422": _error("`instances` missing or not matching the policy's features (`invalid_instances`), "
                              "too many rows (`too_many_instances`), or a bad `unit_id` (`invalid_unit_id`)."),
                "503": _error("The picked variant failed or timed out (`variant_unavailable`), no variant is "
                              "healthy (`no_healthy_variant`), or the experiment is not loaded yet (`not_ready`). "
                              "Retry."),
            },
        }
    }


def _rewards(alias: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": ["feedback"],
        "operationId": "rewardAlias" if alias else "rewards",
        "summary": ("Alias of POST /v1/rewards" if alias else "Feedback for predictions: one item or a batch"),
        "description": "One item answers with its own status. A batch (`rewards`, up to "
        f"{MAX_REWARDS_PER_BATCH} items) answers 200 with a result per item; each item is applied once, a "
        "repeated one is answered `duplicate` and changes nothing. Feedback after the reward window, once the "
        "policy's default reward was applied, is answered `late`: kept for retraining, not learned.",
        "requestBody": _body({"anyOf": [_ref("RewardItem"), _ref("RewardBatch")]}),
        "responses": {
            "200": _json_response(
                "The item's result, or the batch's results",
                "#/components/schemas/RewardResponse",
            ),
            "202": _json_response(
                "A single item spooled while the state store is unreachable (`queued`); applied when it is back",
                "#/components/schemas/RewardResult",
            ),
            "400": _error("The body is not JSON (`invalid_json`) or not an object (`invalid_body`)."),
            "403": _error("The token is missing (`token_missing`), malformed, forged, or for another request "
                          "or variant (`token_invalid`)."),
            "404": _error("Unknown request id (`request_not_found`), its reward window is over "
                          "(`request_expired`), or the token names an experiment no longer served "
                          "(`experiment_not_found`)."),
            "413": _error(TOO_LARGE),
            "503": _error("The state store is unreachable and the item could not be spooled (`store_unavailable`). "
                          "Retry: feedback is applied once, however often it is sent."),
            "422": _error("A bad field: `request_id`, `reward` (not a number, not finite, or outside the policy's "
                          "range), `label`, neither reward nor label (`invalid_feedback`); or a bad batch "
                          "(`invalid_rewards`, `too_many_rewards`)."),
            "429": _error("The request's unit already sent the policy's `reward.max_per_unit` rewards within "
                          "`reward.window_s` (`reward_quota_exceeded`)."),
        },
    }
    return {"post": operation}


def _admin(operation_id: str, summary: str, body_schema: str, conflicts: str, *, variant: bool = False,
           method: str = "post", unprocessable: str = "A bad `reason` (`invalid_reason`).") -> dict[str, Any]:
    parameters = [EXPERIMENT, VARIANT] if variant else [EXPERIMENT]
    not_found = "No such experiment (`experiment_not_found`)"
    if variant or operation_id == "promote":
        not_found += " or variant (`variant_not_found`)"
    return {
        method: {
            "tags": ["admin"],
            "operationId": operation_id,
            "summary": summary,
            "security": [{"bearerAuth": []}],
            "parameters": parameters,
            "requestBody": _body(_ref(body_schema), required=operation_id in ("promote", "addVariant")),
            "responses": {
                "200": _ok("ExperimentState", "The experiment's state after the decision"),
                "400": _error("The body is not JSON (`invalid_json`)."),
                "401": _error(ADMIN_401),
                "403": _error(ADMIN_403),
                "404": _error(not_found + "."),
                "409": _error(conflicts),
                "413": _error(TOO_LARGE),
                "422": _error(unprocessable),
            },
        }
    }


def _retrain() -> dict[str, Any]:
    return {
        "post": {
            "tags": ["admin"],
            "operationId": "retrain",
            "summary": "Run a retraining now: a challenger may be added",
            "security": [{"bearerAuth": []}],
            "parameters": [EXPERIMENT],
            "requestBody": _body({"type": "object"}, required=False, description="Ignored; may be empty."),
            "responses": {
                "200": _ok("RetrainResult", "The run's outcome"),
                "400": _error("The body is not JSON (`invalid_json`)."),
                "401": _error(ADMIN_401),
                "403": _error(ADMIN_403),
                "404": _error("No such experiment (`experiment_not_found`)."),
                "409": _error("A retraining of the experiment is already running (`retrain_running`)."),
                "413": _error(TOO_LARGE),
                "503": _error("The gateway runs without a retrainer (`no_retrainer`), or the run failed "
                              "(`retrain_failed`)."),
            },
        }
    }


def _oip_get(operation_id: str, summary: str, schema: str, *, parameters: list | None = None,
             not_found: str | None = None, unavailable: str | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _ok(schema)}
    if not_found:
        responses["404"] = _oip_error(not_found)
    if unavailable:
        responses["503"] = _oip_error(unavailable)
    operation: dict[str, Any] = {"tags": ["inference (V2)"], "operationId": operation_id, "summary": summary,
                                 "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


def _oip_infer(operation_id: str, summary: str, *, named: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": _ok("InferResponse"),
        "400": _oip_error("Not JSON, not the protocol, or inputs that fit neither layout."),
        "404": _oip_error("No such model" + (" or version." if named else ".")),
    }
    if not named:
        responses["409"] = _oip_error("The `x-request-id` was already used.")
    responses.update(
        {
            "413": _oip_error(TOO_LARGE),
            "422": _oip_error("Values that do not match the policy's features (a category not declared, a "
                              "non-finite number), too many rows, or a bad `parameters.unit_id`."),
            "503": _oip_error("The variant failed or timed out, or no variant is healthy. Retry."),
        }
    )
    binary = {
        "type": "string",
        "format": "binary",
        "description": f"Binary tensor data extension: the JSON InferRequest ({HEADER_LENGTH} bytes), then "
        "the tensors' bytes.",
    }
    return {
        "post": {
            "tags": ["inference (V2)"],
            "operationId": operation_id,
            "summary": summary,
            "parameters": [
                EXPERIMENT,
                *([VARIANT] if named else [CLIENT_REQUEST_ID]),
                {
                    "name": HEADER_LENGTH,
                    "in": "header",
                    "required": False,
                    "description": "Binary tensor data extension: the length of the JSON header of the body.",
                    "schema": {"type": "integer", "minimum": 0},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref("InferRequest")}, "application/octet-stream": {"schema": binary}},
            },
            "responses": responses,
        }
    }


def _text_get(operation_id: str, tag: str, summary: str, media_type: str, *, asset: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": [tag],
        "operationId": operation_id,
        "summary": summary,
        "responses": {"200": {"description": "OK", "content": {media_type: {"schema": {"type": "string"}}}}},
    }
    if asset:
        operation["parameters"] = [
            {
                "name": "v",
                "in": "query",
                "required": False,
                "description": "The content hash the page asks for: with it the answer is cached for a year.",
                "schema": {"type": "string"},
            },
            {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
        ]
        operation["responses"]["304"] = {"description": "Not modified: the ETag matches."}
    return {"get": operation}


def openapi_document(experiments: list[str] | None = None) -> dict[str, Any]:
    """The OpenAPI 3 document of every route; with `experiments`, the `experiment` path
    parameter is constrained to them."""
    components = _components(experiments)
    experiment_404 = _error("No such experiment (`experiment_not_found`).")
    paths: dict[str, Any] = {
        "/v1/experiments/{experiment}/predict": _predict(),
        "/v1/rewards": _rewards(alias=False),
        "/reward": _rewards(alias=True),
        "/v1/experiments": {
            "get": {
                "tags": ["experiments"],
                "operationId": "listExperiments",
                "summary": "Every experiment's state",
                "responses": {"200": _ok("ExperimentList")},
            }
        },
        "/v1/experiments/{experiment}": {
            "get": {
                "tags": ["experiments"],
                "operationId": "getExperiment",
                "summary": "Status, champion, per-variant posteriors and traffic, decision history",
                "parameters": [EXPERIMENT],
                "responses": {"200": _ok("ExperimentState"), "404": experiment_404},
            }
        },
        "/v1/experiments/{experiment}/series": {
            "get": {
                "tags": ["experiments"],
                "operationId": "getSeries",
                "summary": "The experiment's recorded time series (one point every 2 s) and history",
                "parameters": [
                    EXPERIMENT,
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "description": "Only points after this unix time, in seconds.",
                        "schema": {"type": "number"},
                    },
                ],
                "responses": {
                    "200": _ok("Series"),
                    "400": _error("`since` is not a finite number (`invalid_since`)."),
                    "404": experiment_404,
                },
            }
        },
        "/v1/experiments/{experiment}/promote": _admin(
            "promote", "Make a variant the champion", "PromoteRequest",
            "The variant is the holdout or retired (`variant_not_live`).",
            unprocessable="`variant` missing (`invalid_variant`) or a bad `reason` (`invalid_reason`).",
        ),
        "/v1/experiments/{experiment}/rollback": _admin(
            "rollback", "Back to the previous champion (or to exploring)", "AdminRequest",
            "Nothing is promoted (`not_promoted`).",
        ),
        "/v1/experiments/{experiment}/pause": _admin(
            "pause", "Freeze the traffic split", "AdminRequest", "Already paused (`already_paused`).",
        ),
        "/v1/experiments/{experiment}/resume": _admin(
            "resume", "Undo a pause", "AdminRequest", "Not paused (`not_paused`).",
        ),
        "/v1/experiments/{experiment}/variants/{variant}": _admin(
            "retireVariant", "Take a variant out of rotation for good", "AdminRequest",
            "The variant is the holdout or already retired (`variant_not_live`), the last live one "
            "(`last_variant`), or the champion (`variant_is_champion`).",
            variant=True, method="delete",
        ),
        "/v1/experiments/{experiment}/retrain": _retrain(),
        "/v1/experiments/{experiment}/variants": _admin(
            "addVariant", "Add a challenger from a model artifact; it is served at once", "AddVariantRequest",
            "A variant of that name exists (`variant_exists`), or the gateway has no registry (`no_registry`).",
            unprocessable="A bad `name`, `model` or `sha256` (`invalid_variant`), or an artifact that cannot be "
                          "loaded safely: missing, tampered (sha256) or holding untrusted types (`invalid_artifact`).",
        ),
        # ---- Open Inference Protocol (KServe V2, REST)
        "/v2": _oip_get("oipServerMetadata", "Server metadata", "ServerMetadata"),
        "/v2/health/live": _oip_get("oipServerLive", "Server liveness", "LiveResponse"),
        "/v2/health/ready": _oip_get(
            "oipServerReady", "Server readiness", "ServerReadyResponse",
            unavailable="Some models are not loaded yet.",
        ),
        "/v2/models/{experiment}": _oip_get(
            "oipModelMetadata", "Model metadata (the experiment)", "ModelMetadata",
            parameters=[EXPERIMENT], not_found="No such model.",
        ),
        "/v2/models/{experiment}/ready": _oip_get(
            "oipModelReady", "Model readiness", "ModelReadyResponse",
            parameters=[EXPERIMENT], not_found="No such model.", unavailable="The model is not loaded yet.",
        ),
        "/v2/models/{experiment}/infer": _oip_infer(
            "oipInfer", "Inference routed by the bandit (counts toward learning)", named=False,
        ),
        "/v2/models/{experiment}/versions/{variant}": _oip_get(
            "oipVersionMetadata", "Model version metadata (a variant)", "ModelMetadata",
            parameters=[EXPERIMENT, VARIANT], not_found="No such model or version.",
        ),
        "/v2/models/{experiment}/versions/{variant}/ready": _oip_get(
            "oipVersionReady", "Model version readiness", "ModelReadyResponse",
            parameters=[EXPERIMENT, VARIANT], not_found="No such model or version.",
            unavailable="The model is not loaded yet.",
        ),
        "/v2/models/{experiment}/versions/{variant}/infer": _oip_infer(
            "oipVersionInfer", "Inference by a named variant (outside the experiment: not learned from)",
            named=True,
        ),
        # ---- operations
        "/healthz": {
            "get": {
                "tags": ["operations"],
                "operationId": "healthz",
                "summary": "Liveness, and the experiments served",
                "responses": {"200": _ok("Health")},
            }
        },
        "/metrics": _text_get("metrics", "operations", "Prometheus metrics (text exposition format)", "text/plain"),
        "/dashboard": _text_get("dashboard", "operations", "The live dashboard (a web page)", "text/html"),
        f"/dashboard/{PLOTLY_JS}": _text_get(
            "dashboardPlotly", "operations", "plotly.js, for the dashboard", "text/javascript", asset=True
        ),
        f"/dashboard/{DASHBOARD_JS}": _text_get(
            "dashboardScript", "operations", "The dashboard's script", "text/javascript", asset=True
        ),
        OPENAPI_PATH: {
            "get": {
                "tags": ["operations"],
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {JSON: {"schema": _ref("OpenAPIDocument")}},
                    }
                },
            }
        },
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Model-serving gateway",
            "version": server_version(),
            "description": f"{SERVER_NAME}: predictions routed by a Thompson-sampling bandit, feedback applied "
            "exactly once, automatic promotion; the Open Inference Protocol (KServe V2) on the same "
            "experiments. Errors of the gateway's own API are `{\"error\": {\"code\", \"message\"}}`; those of "
            "the V2 routes `{\"error\": \"message\"}`, as the protocol has them.",
        },
        "tags": [
            {"name": "predictions"},
            {"name": "feedback"},
            {"name": "experiments"},
            {"name": "admin", "description": "Operator verbs: `Authorization: Bearer <GATEWAY_ADMIN_TOKEN>`."},
            {"name": "inference (V2)", "description": "The Open Inference Protocol, REST."},
            {"name": "operations"},
        ],
        "paths": paths,
        "components": components,
    }


@functools.lru_cache(maxsize=8)
def _rendered(experiments: tuple[str, ...]) -> bytes:
    return json.dumps(openapi_document(list(experiments)), separators=(",", ":")).encode()


def openapi_routes(experiment_names: Callable[[], list[str]]) -> list[Route]:
    """GET /openapi.json, the document with the served experiments' names."""

    async def openapi_endpoint(request: Request) -> Response:
        return Response(_rendered(tuple(experiment_names())), media_type=JSON)

    return [Route(OPENAPI_PATH, openapi_endpoint, methods=["GET"], name="openapi")]
