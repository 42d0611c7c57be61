"""The asynchronous client: the same calls as `Client`, awaited."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx

from ._base import ClientBase
from ._calls import Call, Routes
from ._models import Feedback, Prediction, RewardResult


class AsyncClient(ClientBase[httpx.AsyncBaseTransport]):
    """The asynchronous client; `async with`, or `await aclose()`."""

    _http_class = httpx.AsyncClient
    _http: httpx.AsyncClient

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call) -> Any:
        try:
            response = await self._http.request(call.method, call.path, json=call.json, headers=self._headers(call))
        except httpx.TransportError as err:
            raise self._unreachable(err) from err
        return call.read(self._answer(response))

    async def predict(
        self, experiment: str, instances: Sequence[Any], unit_id: str | None = None, *, request_id: str | None = None
    ) -> Prediction:
        """See `Client.predict`."""
        return await self._send(Routes.predict(experiment, instances, unit_id, request_id))

    async def reward(
        self, prediction_or_request_id: Prediction | str, reward: float | None = None, label: Any = None,
        token: str | None = None,
    ) -> RewardResult:
        """See `Client.reward`."""
        return await self._send(Routes.reward(prediction_or_request_id, reward, label, token))

    async def rewards(self, items: Iterable[Feedback | Mapping[str, Any]]) -> list[RewardResult]:
        """See `Client.rewards`."""
        return [result for call in Routes.rewards(items) for result in await self._send(call)]

    async def experiment(self, name: str) -> dict[str, Any]:
        return await self._send(Routes.experiment(name))

    async def experiments(self) -> list[dict[str, Any]]:
        return await self._send(Routes.experiments())

    async def promote(self, experiment: str, variant: str) -> Any:
        return await self._send(Routes.action(experiment, "promote", {"variant": variant}))

    async def rollback(self, experiment: str) -> Any:
        return await self._send(Routes.action(experiment, "rollback"))

    async def pause(self, experiment: str) -> Any:
        return await self._send(Routes.action(experiment, "pause"))

    async def resume(self, experiment: str) -> Any:
        return await self._send(Routes.action(experiment, "resume"))

    async def retrain(self, experiment: str) -> Any:
        return await self._send(Routes.action(experiment, "retrain"))

    async def retire(self, experiment: str, variant: str) -> Any:
        return await self._send(Routes.retire(experiment, variant))

    async def shadow(self, experiment: str, variant: str, on: bool = True) -> Any:
        return await self._send(Routes.set_role(experiment, variant, "shadow" if on else "live"))

    async def off_policy(self, experiment: str, target: str | None = None) -> dict[str, Any]:
        return await self._send(Routes.off_policy(experiment, target))

    async def add_variant(self, experiment: str, name: str, model: str, sha256: str | None = None,
                          features: list[str] | None = None) -> Any:
        return await self._send(Routes.add_variant(experiment, name, model, sha256, features))
