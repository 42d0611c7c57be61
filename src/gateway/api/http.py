"""HTTP helpers shared by our own API and the Open Inference Protocol routes."""
from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.errors import BadRequest, GatewayError, PayloadTooLarge
from gateway.settings import Settings

# The default of GATEWAY_MAX_BODY_BYTES, defined once in Settings.
DEFAULT_MAX_BODY_BYTES: int = Settings.model_fields["max_body_bytes"].default

# ASCII digits only: str.isdigit() also accepts "²" or "١", which int() then refuses.
_BYTE_COUNT = re.compile(r"[0-9]+")


def error_response(err: GatewayError) -> JSONResponse:
    response = JSONResponse(err.to_body(), status_code=err.status)
    if err.status == 401:
        response.headers["www-authenticate"] = "Bearer"
    if err.status in (429, 503):
        # A transient refusal: tell clients when trying again makes sense.
        response.headers["retry-after"] = "1"
    return response


def byte_count(value: str, header: str, code: str) -> int:
    """A header that holds a byte count, e.g. Content-Length; 400 unless it is ASCII digits."""
    text = value.strip()
    if not _BYTE_COUNT.fullmatch(text):
        raise BadRequest(f"{header}: a byte count is required, got {value!r}", code=code)
    return int(text)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refusing an oversized one before it is all read (chunked too)."""
    declared = request.headers.get("content-length")
    if declared is not None and byte_count(declared, "content-length", "invalid_content_length") > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes, what: str = "the body") -> Any:
    """Parse request JSON; every malformed input is a 400 (the caller's route picks the error form)."""
    try:
        # The stdlib parser accepts NaN and Infinity, so that a non-finite reward is answered
        # 422 by validation rather than 400 by the parser.
        return json.loads(raw)
    except RecursionError:
        # The parser recurses per nesting level: "[[[[..." would otherwise be a 500.
        raise BadRequest(f"{what} is nested too deeply", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"{what} is not valid JSON: {err}", code="invalid_json") from None


async def read_json(request: Request, max_bytes: int, *, allow_empty: bool = False) -> Any:
    """The body as JSON (size-limited by read_body)."""
    raw = await read_body(request, max_bytes)
    if not raw and allow_empty:
        return None
    if not raw:
        raise BadRequest("the body is empty; send a JSON object", code="invalid_json")
    return parse_json(raw)
