"""What `Client` and `AsyncClient` share: their settings, the headers of a call, and reading
an answer into a result or an exception. Only the sending differs (blocking or awaited)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

import httpx

from ._calls import Call
from ._errors import ConnectionFailed, GatewayClientError, error_from_response

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0

TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)


class ClientBase(Generic[TransportT]):
    # httpx.Client or httpx.AsyncClient: the one thing a subclass chooses at construction.
    _http_class: ClassVar[type[Any]]

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        admin_token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: TransportT | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.admin_token = admin_token
        self.base_url = base_url
        self._http = self._http_class(base_url=base_url, timeout=timeout, transport=transport, headers=headers)

    def _headers(self, call: Call) -> dict[str, str]:
        headers = dict(call.headers or {})
        if call.admin and self.admin_token:
            headers["Authorization"] = f"Bearer {self.admin_token}"
        return headers

    def _unreachable(self, err: httpx.TransportError) -> ConnectionFailed:
        return ConnectionFailed(0, "connection_failed", f"{self.base_url}: {type(err).__name__}: {err}")

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
