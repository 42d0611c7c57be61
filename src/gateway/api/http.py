"""HTTP helpers shared by our own API and the Open Inference Protocol routes."""
from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.errors import BadRequest, GatewayError, PayloadTooLarge

DEFAULT_MAX_BODY_BYTES = 1 << 20


def error_response(err: GatewayError) -> JSONResponse:
    response = JSONResponse(err.to_body(), status_code=err.status)
    if err.status == 401:
        response.headers["www-authenticate"] = "Bearer"
    if err.status in (429, 503):
        # A transient refusal: tell clients when trying again makes sense.
        response.headers["retry-after"] = "1"
    return response


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refusing an oversized one before it is all read (chunked too)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, max_bytes: int, *, allow_empty: bool = False) -> Any:
    """The body as JSON (size-limited by read_body)."""
    raw = await read_body(request, max_bytes)
    if not raw and allow_empty:
        return None
    if not raw:
        raise BadRequest("the body is empty; send a JSON object", code="invalid_json")
    try:
        # The stdlib parser accepts NaN and Infinity, so that a non-finite reward is answered
        # 422 by validation rather than 400 by the parser.
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"the body is not valid JSON: {err}", code="invalid_json") from None
