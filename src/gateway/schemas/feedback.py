"""POST /v1/rewards (and /reward): one feedback item or a batch, and the answers.

An item is judged in two steps, in the order the gateway has always judged it: who sends it (its
request id and token, `RewardClaim`), then, once the token is verified against the request it
names, what it says (`RewardItem`: a reward, a label or both). A bad item in a batch is refused
alone, so the batch parses its items no further than "a list"; the data plane parses each."""
from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints, ValidationInfo, WithJsonSchema
from pydantic import field_validator, model_validator
from pydantic_core import ErrorDetails

from gateway.errors import BadRequest, Forbidden, GatewayError, Unprocessable
from gateway.schemas.base import MAX_ID_LEN, MAX_LABEL_BYTES, MAX_REWARDS_PER_BATCH, Body, ErrorDetail, Refusal
from gateway.schemas.base import one_of, ref

TOKEN_MISSING = "a reward needs the 'token' returned with the prediction"

# What a JSON number may be here: an int stays an int (a reward's message shows it as sent).
Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
Label = bool | int | float | str | list[Any]


class RewardClaim(Body):
    """Who a feedback item is from: judged first (a bad request id is 422, a missing token 403)."""

    request_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LEN)]
    token: str = Field(description="The `reward_token` returned with the prediction.")

    not_an_object = Refusal(Unprocessable, "invalid_feedback", "each feedback item must be an object")
    refusals = {
        "request_id": Refusal(Unprocessable, "invalid_request_id",
                              f"request_id: a string of 1 to {MAX_ID_LEN} characters"),
        "token": Refusal(Forbidden, "token_missing", TOKEN_MISSING),
    }


class RewardItem(RewardClaim):
    """Feedback for one prediction: `reward`, `label`, or both."""

    # Parsed with context {"reward_bounds": (lo, hi)}, the policy's range, by the data plane once
    # the token has named the experiment: a reward is judged whole before the label is.

    model_config = ConfigDict(json_schema_extra={"anyOf": [{"required": ["reward"]}, {"required": ["label"]}]})

    # Absent or a number: null is refused (None is only "not sent").
    reward: Number = Field(default=None, description="Within the policy's range ([0, 1] for a bernoulli reward).")
    label: Label = Field(
        default=None,
        description="The true outcome: a value, or a list of values with one per instance of the prediction. The "
        "policy turns it into a reward: the share of instances whose label matches the prediction, by value "
        "(1, 1.0, \"1\" and true are the same class; null, lists and objects never match).",
    )

    refusals = {
        **RewardClaim.refusals,
        "reward": Refusal(Unprocessable, "invalid_reward", "reward: must be a number"),
        "label": Refusal(Unprocessable, "invalid_label", "label: a value or a list of values, one per instance"),
        "": Refusal(Unprocessable, "invalid_feedback", "a feedback item needs 'reward' or 'label'"),
    }

    @field_validator("reward")
    @classmethod
    def _in_range(cls, reward: int | float, info: ValidationInfo) -> int | float:
        bounds = (info.context or {}).get("reward_bounds")
        if bounds is not None and not _within(reward, *bounds):
            raise ValueError(f"reward: {reward!r} is outside the policy's range [{bounds[0]}, {bounds[1]}]")
        return reward

    @field_validator("label")
    @classmethod
    def _bounded(cls, label: Label) -> Label:
        text = json.dumps(label, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: Redis's Lua could not read it, Python could
            raise ValueError("label: a string that is not valid Unicode (a lone surrogate)") from None
        if len(json.dumps(label)) > MAX_LABEL_BYTES:
            raise ValueError(f"label: at most {MAX_LABEL_BYTES} bytes as JSON")
        return label

    @model_validator(mode="after")
    def _reward_or_label(self) -> RewardItem:
        if not {"reward", "label"} & self.model_fields_set:
            raise ValueError("a feedback item needs 'reward' or 'label'")
        return self


def _within(value: float, lo: float, hi: float) -> bool:
    try:
        return math.isfinite(value) and lo <= value <= hi
    except OverflowError:  # an integer too large for a float
        return False


def _batch_refusal(detail: ErrorDetails) -> GatewayError:
    if detail["type"] == "too_long":
        n = detail.get("ctx", {}).get("actual_length")
        return Unprocessable(f"rewards: at most {MAX_REWARDS_PER_BATCH} items per batch, got {n}",
                             code="too_many_rewards")
    return Unprocessable("rewards: a non-empty list of feedback items", code="invalid_rewards")


class RewardBatch(Body):
    # Items stay JSON here: each is judged alone (see the module's docstring).
    rewards: list[Annotated[Any, WithJsonSchema(ref("RewardItem"))]] = Field(
        min_length=1, max_length=MAX_REWARDS_PER_BATCH)

    refusals = {"rewards": _batch_refusal}


# One item as sent: a JSON object, judged by the data plane (RewardClaim, then RewardItem).
SentItem = dict[str, Any]


def parse_feedback(body: Any) -> RewardBatch | SentItem:
    """The body of POST /v1/rewards: a batch, or one item."""
    if isinstance(body, dict) and "rewards" in body:
        return RewardBatch.parse(body)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object: one feedback item or {'rewards': [...]}",
                         code="invalid_body")
    return body


# -- answers --------------------------------------------------------------------------------


class RewardResult(BaseModel):
    """Feedback taken (`accepted`), already taken before (`duplicate`, which changes nothing), or `late`: it
    came after the reward window, once the policy's default reward had been applied; it is kept for retraining
    but the bandit does not learn from it. `queued` (HTTP 202 for a single item): the state store is
    unreachable and the item is durably spooled on the router's disk; it is applied, exactly once, when the
    store is back."""

    request_id: str
    status: Literal["accepted", "duplicate", "late", "queued"]
    variant: str = Field(description="The variant that served the request.")
    reward: float | None = Field(description="The reward applied (from `label` if none was given); null for a "
                                 "queued label, whose reward is worked out when it is applied.")


class RejectedReward(BaseModel):
    """A batch item that was refused, with the error and status it would have had alone."""

    request_id: str | None
    status: Literal["rejected"]
    error: ErrorDetail
    http_status: Literal[403, 404, 422, 429]


Count = Annotated[int, Field(ge=0)]


class BatchRewardResponse(BaseModel):
    results: list[RewardResult | RejectedReward] = Field(description="One result per item, in order.",
                                                         json_schema_extra=one_of)
    accepted: Count
    duplicate: Count
    late: Count
    queued: Count
    rejected: Count


class RewardResponse(RootModel[Annotated[RewardResult | BatchRewardResponse, Field(json_schema_extra=one_of)]]):
    """A single item's result, or a batch's results."""
