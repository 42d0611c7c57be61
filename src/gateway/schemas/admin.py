"""The operator verbs' bodies (promote, rollback, pause, resume, retire, add a variant) and the
answer of a retraining run. Every verb but retrain answers the experiment's state."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SkipValidation, StringConstraints, field_validator

from gateway.errors import Unprocessable
from gateway.policy import NAME_PATTERN
from gateway.schemas.base import MAX_REASON_LEN, Body, Refusal

Reason = Annotated[str, StringConstraints(max_length=MAX_REASON_LEN)] | None
REASON = Refusal(Unprocessable, "invalid_reason", f"reason: a string of at most {MAX_REASON_LEN} characters")


class AdminRequest(Body):
    """Optional: why the operator decided (recorded in the history)."""

    reason: Reason = None

    # Any body that is not an object (none at all, a list, ...) carries no reason: taken as {}.
    not_an_object = None
    refusals = {"reason": REASON}


class PromoteRequest(Body):
    # A name that is not a string is not refused here: it names no variant, which the control
    # answers (404 variant_not_found, once the experiment is found), as it always has.
    variant: Annotated[str, SkipValidation] = Field(description="A live variant (not the holdout, not retired).")
    reason: Reason = None

    not_an_object = Refusal(Unprocessable, "invalid_variant", "variant: this field is required")
    refusals = {"variant": not_an_object, "reason": REASON}

    @field_validator("variant", mode="before")
    @classmethod
    def _given(cls, variant: Any) -> Any:
        if variant is None:
            raise ValueError("variant: this field is required")
        return variant


class AddVariantRequest(Body):
    name: Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
    model: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="Path of a .skops, .ubj or .json artifact on the gateway's file system, or an MLflow model URI "
        "(models:/<name>/<version>, models:/<name>@<alias>, runs:/<run_id>/<path>; the gateway's MLFLOW_TRACKING_URI).")
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, description="Expected digest; the artifact is refused when it differs.")
    features: Annotated[list[Annotated[str, StringConstraints(pattern=NAME_PATTERN)]], Field(min_length=1)] | None = Field(
        default=None, description="The features (of the policy's features and derived ones) the model takes, in its "
        "column order; unset: the artifact's metadata (<model>.meta.json) says, else all the policy's features.")
    reason: Reason = None

    not_an_object = Refusal(Unprocessable, "invalid_variant",
                            "the body must be {'name': ..., 'model': <artifact path>, 'sha256': ...}")
    refusals = {
        "name": Refusal(Unprocessable, "invalid_variant", f"name: must match {NAME_PATTERN}"),
        "model": Refusal(Unprocessable, "invalid_variant", "model: the path of a .skops, .ubj or .json artifact, or an MLflow model URI"),
        "sha256": Refusal(Unprocessable, "invalid_variant", "sha256: 64 lowercase hex digits"),
        "features": Refusal(Unprocessable, "invalid_features", f"features: a non-empty list of names matching {NAME_PATTERN}"),
        "reason": REASON,
    }


class RetrainResult(BaseModel):
    """The outcome of one retraining run: `admitted` (a challenger was added: `variant`, and the variants retired
    to make room), `rejected` (no candidate beat the champion) or `skipped` (too few labelled requests)."""

    outcome: Literal["admitted", "rejected", "skipped"]
    reason: str | None = None
    rows: Annotated[int, Field(ge=0)]
    variant: str = Field(default=None)
    retired: list[str] = Field(default=None)
    result: dict[str, Any] = Field(default=None)
