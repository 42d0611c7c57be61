"""Errors that reach clients: each carries its HTTP status and a stable code."""
from __future__ import annotations


class GatewayError(Exception):
    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class Unauthorized(GatewayError):
    status, code = 401, "unauthorized"


class Forbidden(GatewayError):
    status, code = 403, "forbidden"


class NotFound(GatewayError):
    status, code = 404, "not_found"


class Conflict(GatewayError):
    status, code = 409, "conflict"


class PayloadTooLarge(GatewayError):
    status, code = 413, "payload_too_large"


class Unprocessable(GatewayError):
    status, code = 422, "invalid"


class TooManyRequests(GatewayError):
    status, code = 429, "too_many_requests"


class Unavailable(GatewayError):
    status, code = 503, "unavailable"
