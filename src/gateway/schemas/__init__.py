"""The bodies of the HTTP API as pydantic models: the requests, parsed at the edge into typed
objects for the data plane (each refusal one of the gateway's errors, as the contract has
them), and the answers, which document what the data plane builds. The OpenAPI document's
schemas are generated from these (gateway.api.openapi). Below the data plane and the API; it
imports neither."""
from gateway.schemas.admin import AddVariantRequest, AdminRequest, PromoteRequest, RetrainResult
from gateway.schemas.base import (
    MAX_ID_LEN,
    MAX_LABEL_BYTES,
    MAX_REASON_LEN,
    MAX_REWARDS_PER_BATCH,
    Body,
    Error,
    ErrorDetail,
    Refusal,
)
from gateway.schemas.evaluation import OffPolicyEvaluation
from gateway.schemas.experiments import ExperimentList, ExperimentState, Health, Series, SeriesPoint, VariantState
from gateway.schemas.feedback import (
    BatchRewardResponse,
    RejectedReward,
    RewardBatch,
    RewardClaim,
    RewardItem,
    RewardResponse,
    RewardResult,
    parse_feedback,
)
from gateway.schemas.predict import PredictRequest, PredictResponse

__all__ = [
    "AddVariantRequest", "AdminRequest", "BatchRewardResponse", "Body", "Error", "ErrorDetail", "ExperimentList",
    "ExperimentState", "Health", "MAX_ID_LEN", "MAX_LABEL_BYTES", "MAX_REASON_LEN", "MAX_REWARDS_PER_BATCH",
    "OffPolicyEvaluation", "PredictRequest", "PredictResponse", "PromoteRequest", "Refusal", "RejectedReward", "RetrainResult",
    "RewardBatch", "RewardClaim", "RewardItem", "RewardResponse", "RewardResult", "Series", "SeriesPoint",
    "VariantState", "parse_feedback",
]
