"""The synchronous client."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx

from ._base import ClientBase
from ._calls import Call, Routes
from ._models import Feedback, Prediction, RewardResult


class Client(ClientBase[httpx.BaseTransport]):
    """A synchronous client; use it as a context manager, or call `close()`."""

    _http_class = httpx.Client
    _http: httpx.Client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call) -> Any:
        try:
            response = self._http.request(call.method, call.path, json=call.json, headers=self._headers(call))
        except httpx.TransportError as err:
            raise self._unreachable(err) from err
        return call.read(self._answer(response))

    def predict(
        self, experiment: str, instances: Sequence[Any], unit_id: str | None = None, *, request_id: str | None = None
    ) -> Prediction:
        """Rows (lists in feature order, or objects keyed by feature name); the bandit picks the
        variant. `unit_id` makes the assignment sticky; `request_id` sets x-request-id."""
        return self._send(Routes.predict(experiment, instances, unit_id, request_id))

    def reward(
        self, prediction_or_request_id: Prediction | str, reward: float | None = None, label: Any = None,
        token: str | None = None,
    ) -> RewardResult:
        """Feedback for one prediction (its token is taken from it); raises when refused."""
        return self._send(Routes.reward(prediction_or_request_id, reward, label, token))

    def rewards(self, items: Iterable[Feedback | Mapping[str, Any]]) -> list[RewardResult]:
        """A batch of feedback, one result per item in order (rejected items do not raise);
        more than the gateway's 1000 per request are sent in several requests."""
        return [result for call in Routes.rewards(items) for result in self._send(call)]

    def experiment(self, name: str) -> dict[str, Any]:
        return self._send(Routes.experiment(name))

    def experiments(self) -> list[dict[str, Any]]:
        return self._send(Routes.experiments())

    def promote(self, experiment: str, variant: str) -> Any:
        return self._send(Routes.action(experiment, "promote", {"variant": variant}))

    def rollback(self, experiment: str) -> Any:
        return self._send(Routes.action(experiment, "rollback"))

    def pause(self, experiment: str) -> Any:
        return self._send(Routes.action(experiment, "pause"))

    def resume(self, experiment: str) -> Any:
        return self._send(Routes.action(experiment, "resume"))

    def retrain(self, experiment: str) -> Any:
        return self._send(Routes.action(experiment, "retrain"))

    def retire(self, experiment: str, variant: str) -> Any:
        return self._send(Routes.retire(experiment, variant))

    def shadow(self, experiment: str, variant: str, on: bool = True) -> Any:
        """Put a variant in shadow (copies of live requests, no traffic), or take it out (`on=False`)."""
        return self._send(Routes.set_role(experiment, variant, "shadow" if on else "live"))

    def off_policy(self, experiment: str, target: str | None = None) -> dict[str, Any]:
        """A target policy's estimated value from the log: 'uniform', a variant, or 'a=0.3,b=0.7'."""
        return self._send(Routes.off_policy(experiment, target))

    def add_variant(self, experiment: str, name: str, model: str, sha256: str | None = None,
                    features: list[str] | None = None) -> Any:
        """A challenger from an artifact on the gateway's file system (checked against sha256) or
        an MLflow model URI (models:/..., runs:/...), taking `features` (unset: as its metadata
        says, else all the policy's features)."""
        return self._send(Routes.add_variant(experiment, name, model, sha256, features))
