"""What the clients return (Prediction, RewardResult) and take as feedback (Feedback), with
their JSON forms."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Prediction:
    """One prediction: what the gateway answered to POST /v1/experiments/{e}/predict."""

    request_id: str
    experiment: str
    variant: str
    predictions: list[Any]
    propensity: float
    reward_token: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Prediction:
        return cls(
            request_id=body["request_id"],
            experiment=body["experiment"],
            variant=body["variant"],
            predictions=list(body["predictions"]),
            propensity=float(body["propensity"]),
            reward_token=body["reward_token"],
        )


@dataclass(frozen=True)
class RewardResult:
    """The outcome of one feedback item: `status` is accepted, duplicate or rejected (a batch
    item only; a single rejected item raises). A rejected item carries the error."""

    request_id: str | None
    status: str
    variant: str | None = None
    reward: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    http_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("accepted", "duplicate")

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> RewardResult:
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        return cls(
            request_id=body.get("request_id"),
            status=str(body.get("status")),
            variant=body.get("variant"),
            reward=body.get("reward"),
            error_code=error.get("code"),
            error_message=error.get("message"),
            http_status=body.get("http_status"),
        )


@dataclass(frozen=True)
class Feedback:
    """One item for `rewards()`: a prediction (or its request id and token) with a reward
    and/or the true label."""

    prediction: Prediction | str
    reward: float | None = None
    label: Any = None
    token: str | None = None

    def to_json(self) -> dict[str, Any]:
        return feedback_item(self.prediction, self.reward, self.label, self.token)


def feedback_item(prediction: Prediction | str, reward: float | None, label: Any, token: str | None) -> dict[str, Any]:
    """One feedback item as the gateway takes it; a Prediction brings its own token."""
    if reward is None and label is None:
        raise ValueError("feedback needs a reward, a label, or both")
    if isinstance(prediction, Prediction):
        item: dict[str, Any] = {"request_id": prediction.request_id, "token": token or prediction.reward_token}
    else:
        item = {"request_id": prediction}
        if token is not None:
            item["token"] = token
    if reward is not None:
        item["reward"] = reward
    if label is not None:
        item["label"] = label
    return item


def batch_item(item: Feedback | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(item, Feedback):
        return item.to_json()
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(f"a feedback item is a Feedback or a mapping, not {type(item).__name__}")
