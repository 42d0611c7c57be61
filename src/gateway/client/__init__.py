"""Python clients for a running gateway: `Client` (sync) and `AsyncClient` (async), on httpx.

    with Client("http://127.0.0.1:8000") as gw:
        p = gw.predict("churn", [[12.0, 80.5, 2.0, "pro"]], unit_id="user-42")
        gw.reward(p, reward=1.0)

Errors answered by the gateway (`{"error": {"code", "message"}}`) raise `GatewayClientError`
or the subclass for the status; a gateway that cannot be reached raises `ConnectionFailed`.

Layout: the routes as calls (_calls), shared by the blocking client (_sync) and the awaited one
(_async) through their common base (_base); results and feedback (_models); errors (_errors).
"""
from __future__ import annotations

from ._async import AsyncClient
from ._base import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._base import DEFAULT_URL as DEFAULT_URL
from ._calls import MAX_REWARDS_PER_BATCH as MAX_REWARDS_PER_BATCH
from ._errors import (
    Conflict,
    ConnectionFailed,
    Forbidden,
    GatewayClientError,
    InvalidRequest,
    NotFound,
    Unauthorized,
    Unavailable,
)
from ._errors import error_from_response as error_from_response
from ._models import Feedback, Prediction, RewardResult
from ._sync import Client

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

# Named gateway.client.X in reprs, tracebacks and pickles, as before this became a package (as httpx does).
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
