"""POST /v1/experiments/{experiment}/predict: the request and the answer."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, SkipValidation, StringConstraints

from gateway.errors import BadRequest, Unprocessable
from gateway.schemas.base import DEFAULT_MAX_INSTANCES, MAX_ID_LEN, Body, Refusal, one_of

FeatureValue = Annotated[
    float | str,
    Field(description="A number for a numeric feature, one of the declared values for a categorical one.",
          json_schema_extra=one_of),
]
Row = Annotated[list[FeatureValue] | dict[str, FeatureValue], Field(json_schema_extra=one_of)]


class PredictRequest(Body):
    # Not checked here: the rows are judged against the policy's features (their count, order,
    # types and categories) by the experiment's encoder, which also counts them against the
    # gateway's max_instances; every message of those refusals comes from there.
    instances: Annotated[list[Row], SkipValidation] = Field(
        description="Rows: each a list of values in the policy's feature order, or an object keyed by feature "
        f"name. At most the gateway's `max_instances` ({DEFAULT_MAX_INSTANCES} by default).",
        json_schema_extra={"minItems": 1, "maxItems": DEFAULT_MAX_INSTANCES},
    )
    unit_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LEN)] | None = Field(
        default=None,
        description="Sticky assignment: the same unit keeps the same variant while the experiment's weights stand.",
    )

    not_an_object = Refusal(BadRequest, "invalid_body", "the body must be a JSON object with 'instances'")
    refusals = {
        "instances": Refusal(Unprocessable, "invalid_instances", "instances: this field is required"),
        "unit_id": Refusal(Unprocessable, "invalid_unit_id", f"unit_id: a string of 1 to {MAX_ID_LEN} characters"),
    }


class PredictResponse(BaseModel):
    # The data plane answers with a plain dict of these fields (built once, never validated on
    # the hot path); this model is its documentation and its test.
    request_id: str = Field(description="The id to send feedback for (also in `x-request-id`).")
    experiment: str
    variant: str = Field(description="The variant the bandit picked.")
    predictions: list[Any] = Field(description="One prediction per instance.")
    propensity: float = Field(ge=0, le=1, description="The probability with which the variant was picked.")
    reward_token: str = Field(description="Send it back with the feedback for this request.")
