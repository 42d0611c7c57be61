"""The gateway's errors (gateway.errors, each with its HTTP status) as gRPC status codes: what
REST answers 404 is NOT_FOUND over gRPC, with the same message."""
from __future__ import annotations

import grpc

from gateway.errors import GatewayError

_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
# A 503 for a full queue is overload, not an outage: gRPC's code for it is RESOURCE_EXHAUSTED.
_BY_CODE = {"overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED}

# Codes that mean the server failed (REST's 5xx): their spans are marked as errors.
SERVER_FAULTS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN})


def status_of(err: GatewayError) -> grpc.StatusCode:
    return _BY_CODE.get(err.code) or _BY_STATUS.get(err.status, grpc.StatusCode.INTERNAL)
