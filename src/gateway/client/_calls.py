"""The gateway's routes as calls: what to send and how to read the answer. Both clients send
the same calls, so a route is spelled once, here."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ._models import Feedback, Prediction, RewardResult, batch_item, feedback_item

# The gateway takes at most this many feedback items per request; longer lists are split.
MAX_REWARDS_PER_BATCH = 1000


def _as_is(body: Any) -> Any:
    return body


@dataclass(frozen=True)
class Call:
    """One request, and how its answer becomes what the client method returns."""

    method: str
    path: str
    json: Any = None
    admin: bool = False
    headers: Mapping[str, str] | None = None
    # The answer's JSON body (None when empty) -> the result.
    read: Callable[[Any], Any] = _as_is


def _segment(value: str) -> str:
    return quote(value, safe="")


def _chunks(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [items[i : i + MAX_REWARDS_PER_BATCH] for i in range(0, len(items), MAX_REWARDS_PER_BATCH)]


def _batch_results(body: Any) -> list[RewardResult]:
    return [RewardResult.from_json(r) for r in body["results"]]


def _experiments(body: Any) -> list[dict[str, Any]]:
    return list(body["experiments"]) if isinstance(body, dict) else list(body)


class Routes:
    """The contract's routes, as calls."""

    @staticmethod
    def predict(experiment: str, instances: Sequence[Any], unit_id: str | None, request_id: str | None) -> Call:
        body: dict[str, Any] = {"instances": list(instances)}
        if unit_id is not None:
            body["unit_id"] = unit_id
        headers = {"x-request-id": request_id} if request_id is not None else None
        path = f"/v1/experiments/{_segment(experiment)}/predict"
        return Call("POST", path, body, headers=headers, read=Prediction.from_json)

    @staticmethod
    def reward(prediction: Prediction | str, reward: float | None, label: Any, token: str | None) -> Call:
        item = feedback_item(prediction, reward, label, token)
        return Call("POST", "/v1/rewards", item, read=RewardResult.from_json)

    @staticmethod
    def rewards(items: Iterable[Feedback | Mapping[str, Any]]) -> list[Call]:
        # Every item is checked before the first request goes out.
        body = [batch_item(i) for i in items]
        return [Call("POST", "/v1/rewards", {"rewards": chunk}, read=_batch_results) for chunk in _chunks(body)]

    @staticmethod
    def experiment(name: str) -> Call:
        return Call("GET", f"/v1/experiments/{_segment(name)}")

    @staticmethod
    def experiments() -> Call:
        return Call("GET", "/v1/experiments", read=_experiments)

    @staticmethod
    def action(experiment: str, verb: str, body: Any = None) -> Call:
        # An empty object rather than no body, so that a route reading optional fields parses it.
        return Call("POST", f"/v1/experiments/{_segment(experiment)}/{verb}", {} if body is None else body, admin=True)

    @staticmethod
    def add_variant(experiment: str, name: str, model: str, sha256: str | None,
                    features: list[str] | None = None) -> Call:
        body: dict[str, Any] = {"name": name, "model": model}
        if sha256 is not None:
            body["sha256"] = sha256
        if features is not None:
            body["features"] = list(features)
        return Routes.action(experiment, "variants", body)

    @staticmethod
    def off_policy(experiment: str, target: str | None) -> Call:
        query = f"?target={quote(target, safe='')}" if target is not None else ""
        return Call("GET", f"/v1/experiments/{_segment(experiment)}/ope{query}")

    @staticmethod
    def set_role(experiment: str, variant: str, role: str) -> Call:
        return Routes.action(experiment, f"variants/{_segment(variant)}/{role}")

    @staticmethod
    def retire(experiment: str, variant: str) -> Call:
        return Call("DELETE", f"/v1/experiments/{_segment(experiment)}/variants/{_segment(variant)}", admin=True)
