"""The client's exceptions, one per status the gateway answers with, and the mapping to them."""
from __future__ import annotations

import httpx


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
