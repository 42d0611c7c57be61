"""Python clients for a running gateway: `Client` (sync) and `AsyncClient` (async), on httpx.

    with Client("http://127.0.0.1:8000") as gw:
        p = gw.predict("churn", [[12.0, 80.5, 2.0, "pro"]], unit_id="user-42")
        gw.reward(p, reward=1.0)

Errors answered by the gateway (`{"error": {"code", "message"}}`) raise `GatewayClientError`
or the subclass for the status; a gateway that cannot be reached raises `ConnectionFailed`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

__all__ = [
    "AsyncClient",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Feedback",
    "Forbidden",
    "GatewayClientError",
    "InvalidRequest",
    "NotFound",
    "Prediction",
    "RewardResult",
    "Unauthorized",
    "Unavailable",
]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
# The gateway takes at most this many feedback items per request; longer lists are split.
MAX_REWARDS_PER_BATCH = 1000


# -- errors ----------------------------------------------------------------------------------


class GatewayClientError(Exception):
    """An error answer from the gateway: HTTP status, the error's code and message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class InvalidRequest(GatewayClientError):
    """400 or 422: the request or one of its values was refused."""


class Unauthorized(GatewayClientError):
    """401: an admin call without a token."""


class Forbidden(GatewayClientError):
    """403: a wrong admin token, or a reward token missing, forged or for another request."""


class NotFound(GatewayClientError):
    """404: no such experiment, variant or (unexpired) request id."""


class Conflict(GatewayClientError):
    """409: e.g. a request id already used, or a state change that does not apply."""


class Unavailable(GatewayClientError):
    """503: the gateway or a variant cannot answer now; retry."""


class ConnectionFailed(GatewayClientError):
    """The gateway could not be reached or did not answer in time (status 0)."""


_BY_STATUS: dict[int, type[GatewayClientError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    503: Unavailable,
}


def error_from_response(response: httpx.Response) -> GatewayClientError:
    """The exception for an error answer; tolerant of bodies not in the gateway's format."""
    status = response.status_code
    code, message = f"http_{status}", response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        if text:
            message = text[:500]
    else:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or code)
            message = str(error.get("message") or message)
        elif isinstance(error, str):  # the Open Inference Protocol's format
            message = error
    return _BY_STATUS.get(status, GatewayClientError)(status, code, message)


# -- results ---------------------------------------------------------------------------------


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
        return _feedback_item(self.prediction, self.reward, self.label, self.token)


def _feedback_item(prediction: Prediction | str, reward: float | None, label: Any, token: str | None) -> dict[str, Any]:
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


def _batch_item(item: Feedback | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(item, Feedback):
        return item.to_json()
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(f"a feedback item is a Feedback or a mapping, not {type(item).__name__}")


def _segment(value: str) -> str:
    return quote(value, safe="")


# -- request building, shared by both clients ------------------------------------------------


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    json: Any = None
    admin: bool = False
    headers: Mapping[str, str] | None = None


class _Routes:
    """The contract's routes, as calls; both clients send them and read the answers alike."""

    @staticmethod
    def predict(experiment: str, instances: Sequence[Any], unit_id: str | None, request_id: str | None) -> _Call:
        body: dict[str, Any] = {"instances": list(instances)}
        if unit_id is not None:
            body["unit_id"] = unit_id
        headers = {"x-request-id": request_id} if request_id is not None else None
        return _Call("POST", f"/v1/experiments/{_segment(experiment)}/predict", body, headers=headers)

    @staticmethod
    def rewards(body: Any) -> _Call:
        return _Call("POST", "/v1/rewards", body)

    @staticmethod
    def experiment(name: str) -> _Call:
        return _Call("GET", f"/v1/experiments/{_segment(name)}")

    @staticmethod
    def experiments() -> _Call:
        return _Call("GET", "/v1/experiments")

    @staticmethod
    def action(experiment: str, verb: str, body: Any = None) -> _Call:
        # An empty object rather than no body, so that a route reading optional fields parses it.
        return _Call("POST", f"/v1/experiments/{_segment(experiment)}/{verb}", {} if body is None else body, admin=True)

    @staticmethod
    def retire(experiment: str, variant: str) -> _Call:
        return _Call("DELETE", f"/v1/experiments/{_segment(experiment)}/variants/{_segment(variant)}", admin=True)


def _variant_body(name: str, model: str, sha256: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "model": model}
    if sha256 is not None:
        body["sha256"] = sha256
    return body


def _chunks(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [items[i : i + MAX_REWARDS_PER_BATCH] for i in range(0, len(items), MAX_REWARDS_PER_BATCH)]


def _batch_results(body: Any) -> list[RewardResult]:
    return [RewardResult.from_json(r) for r in body["results"]]


def _experiments(body: Any) -> list[dict[str, Any]]:
    return list(body["experiments"]) if isinstance(body, dict) else list(body)


class _Base:
    def __init__(self, admin_token: str | None) -> None:
        self.admin_token = admin_token

    def _headers(self, call: _Call) -> dict[str, str]:
        headers = dict(call.headers or {})
        if call.admin and self.admin_token:
            headers["Authorization"] = f"Bearer {self.admin_token}"
        return headers

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise error_from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise GatewayClientError(
                response.status_code, "invalid_response", f"the gateway answered non-JSON: {response.text[:200]!r}"
            ) from None


# -- the clients -----------------------------------------------------------------------------


class Client(_Base):
    """A synchronous client; use it as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        admin_token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(admin_token)
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport, headers=headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> Any:
        try:
            response = self._http.request(call.method, call.path, json=call.json, headers=self._headers(call))
        except httpx.TransportError as err:
            raise ConnectionFailed(0, "connection_failed", f"{self.base_url}: {type(err).__name__}: {err}") from err
        return self._answer(response)

    def predict(
        self, experiment: str, instances: Sequence[Any], unit_id: str | None = None, *, request_id: str | None = None
    ) -> Prediction:
        """Rows (lists in feature order, or objects keyed by feature name); the bandit picks the
        variant. `unit_id` makes the assignment sticky; `request_id` sets x-request-id."""
        return Prediction.from_json(self._send(_Routes.predict(experiment, instances, unit_id, request_id)))

    def reward(
        self,
        prediction_or_request_id: Prediction | str,
        reward: float | None = None,
        label: Any = None,
        token: str | None = None,
    ) -> RewardResult:
        """Feedback for one prediction (its token is taken from it); raises when refused."""
        item = _feedback_item(prediction_or_request_id, reward, label, token)
        return RewardResult.from_json(self._send(_Routes.rewards(item)))

    def rewards(self, items: Iterable[Feedback | Mapping[str, Any]]) -> list[RewardResult]:
        """A batch of feedback, one result per item in order (rejected items do not raise);
        more than the gateway's 1000 per request are sent in several requests."""
        results: list[RewardResult] = []
        for chunk in _chunks([_batch_item(i) for i in items]):
            results.extend(_batch_results(self._send(_Routes.rewards({"rewards": chunk}))))
        return results

    def experiment(self, name: str) -> dict[str, Any]:
        return self._send(_Routes.experiment(name))

    def experiments(self) -> list[dict[str, Any]]:
        return _experiments(self._send(_Routes.experiments()))

    def promote(self, experiment: str, variant: str) -> Any:
        return self._send(_Routes.action(experiment, "promote", {"variant": variant}))

    def rollback(self, experiment: str) -> Any:
        return self._send(_Routes.action(experiment, "rollback"))

    def pause(self, experiment: str) -> Any:
        return self._send(_Routes.action(experiment, "pause"))

    def resume(self, experiment: str) -> Any:
        return self._send(_Routes.action(experiment, "resume"))

    def retrain(self, experiment: str) -> Any:
        return self._send(_Routes.action(experiment, "retrain"))

    def retire(self, experiment: str, variant: str) -> Any:
        return self._send(_Routes.retire(experiment, variant))

    def add_variant(self, experiment: str, name: str, model: str, sha256: str | None = None) -> Any:
        """A challenger from an artifact on the gateway's file system (checked against sha256)."""
        return self._send(_Routes.action(experiment, "variants", _variant_body(name, model, sha256)))


class AsyncClient(_Base):
    """The asynchronous client; `async with`, or `await aclose()`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        admin_token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(admin_token)
        self.base_url = base_url
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport, headers=headers)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> Any:
        try:
            response = await self._http.request(call.method, call.path, json=call.json, headers=self._headers(call))
        except httpx.TransportError as err:
            raise ConnectionFailed(0, "connection_failed", f"{self.base_url}: {type(err).__name__}: {err}") from err
        return self._answer(response)

    async def predict(
        self, experiment: str, instances: Sequence[Any], unit_id: str | None = None, *, request_id: str | None = None
    ) -> Prediction:
        """See `Client.predict`."""
        return Prediction.from_json(await self._send(_Routes.predict(experiment, instances, unit_id, request_id)))

    async def reward(
        self,
        prediction_or_request_id: Prediction | str,
        reward: float | None = None,
        label: Any = None,
        token: str | None = None,
    ) -> RewardResult:
        """See `Client.reward`."""
        item = _feedback_item(prediction_or_request_id, reward, label, token)
        return RewardResult.from_json(await self._send(_Routes.rewards(item)))

    async def rewards(self, items: Iterable[Feedback | Mapping[str, Any]]) -> list[RewardResult]:
        """See `Client.rewards`."""
        results: list[RewardResult] = []
        for chunk in _chunks([_batch_item(i) for i in items]):
            results.extend(_batch_results(await self._send(_Routes.rewards({"rewards": chunk}))))
        return results

    async def experiment(self, name: str) -> dict[str, Any]:
        return await self._send(_Routes.experiment(name))

    async def experiments(self) -> list[dict[str, Any]]:
        return _experiments(await self._send(_Routes.experiments()))

    async def promote(self, experiment: str, variant: str) -> Any:
        return await self._send(_Routes.action(experiment, "promote", {"variant": variant}))

    async def rollback(self, experiment: str) -> Any:
        return await self._send(_Routes.action(experiment, "rollback"))

    async def pause(self, experiment: str) -> Any:
        return await self._send(_Routes.action(experiment, "pause"))

    async def resume(self, experiment: str) -> Any:
        return await self._send(_Routes.action(experiment, "resume"))

    async def retrain(self, experiment: str) -> Any:
        return await self._send(_Routes.action(experiment, "retrain"))

    async def retire(self, experiment: str, variant: str) -> Any:
        return await self._send(_Routes.retire(experiment, variant))

    async def add_variant(self, experiment: str, name: str, model: str, sha256: str | None = None) -> Any:
        return await self._send(_Routes.action(experiment, "variants", _variant_body(name, model, sha256)))
