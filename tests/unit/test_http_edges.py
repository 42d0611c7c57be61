"""Hostile request bodies and headers against the real app, without Ray: create_app over a real
DataPlane, the embedded redis-server and model artifacts trained from tests/policies/churn.yaml,
driven through httpx's ASGITransport (which passes raw header bytes as a server would).

Each must be a 4xx in the route's own error format, never a 500: deeply nested JSON, byte counts
written with non-ASCII digits, and bodies over the byte limit (declared or chunked)."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api.app import create_app
from gateway.api.http import DEFAULT_MAX_BODY_BYTES
from gateway.dataplane import DataPlane
from gateway.policy import load_policy_file
from gateway.settings import Settings
from gateway.store.embedded import EmbeddedRedis
from gateway.store.experiments import ExperimentStore
from gateway.dataplane.tokens import RewardTokens
from tests.models import loaded_variants

POLICY = Path(__file__).resolve().parents[1] / "policies" / "churn.yaml"
ADMIN_TOKEN = "edges-admin-token-0123"
ROW = {"tenure": 12.0, "monthly_charges": 80.5, "support_calls": 2, "plan": "pro"}
INFER_BODY = {
    "inputs": [
        {"name": "tenure", "shape": [1], "datatype": "FP64", "data": [12.0]},
        {"name": "monthly_charges", "shape": [1], "datatype": "FP64", "data": [80.5]},
        {"name": "support_calls", "shape": [1], "datatype": "INT64", "data": [2]},
        {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
    ]
}
DEEP = b"[" * 100_000 + b"]" * 100_000

PREDICT = "/v1/experiments/churn/predict"
REWARDS = "/v1/rewards"
INFER = "/v2/models/churn/infer"
INFER_VERSION = "/v2/models/churn/versions/xgb/infer"
V1_BODY_ROUTES = [PREDICT, REWARDS, "/reward", "/v1/experiments/churn/pause"]
V2_BODY_ROUTES = [INFER, INFER_VERSION]


@dataclass
class Gateway:
    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient

    def post(self, path: str, content: Any = b"", headers: dict[str, Any] | None = None) -> httpx.Response:
        auth = {"authorization": f"Bearer {ADMIN_TOKEN}"} if "/pause" in path else {}
        return self.loop.run_until_complete(self.client.post(path, content=content, headers={**auth, **(headers or {})}))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    state_dir = tmp_path_factory.mktemp("edges-state")
    redis = EmbeddedRedis(state_dir).start()
    try:
        policy = load_policy_file(POLICY)
        variants = loaded_variants(policy, POLICY, state_dir)
        plane = DataPlane(
            {policy.experiment: policy}, ExperimentStore.from_url(redis.url), {policy.experiment: variants},
            RewardTokens("x" * 32),
        )
        app = create_app(plane, admin_token=ADMIN_TOKEN)
        loop = asyncio.new_event_loop()
        lifespan = app.router.lifespan_context(app)
        loop.run_until_complete(lifespan.__aenter__())
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
        try:
            yield Gateway(loop, client)
        finally:
            loop.run_until_complete(client.aclose())
            loop.run_until_complete(lifespan.__aexit__(None, None, None))
            loop.close()
    finally:
        redis.stop()


def v1_error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


def v2_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return body["error"]


def test_well_formed_requests_succeed(gateway):
    """The baseline the refusals below are measured against."""
    assert gateway.post(PREDICT, json.dumps({"instances": [ROW]})).status_code == 200
    assert gateway.post(INFER, json.dumps(INFER_BODY)).status_code == 200
    assert gateway.post(INFER_VERSION, json.dumps(INFER_BODY)).status_code == 200


# -- 1. deeply nested JSON ---------------------------------------------------------------------


@pytest.mark.parametrize("path", V1_BODY_ROUTES)
def test_deeply_nested_json_is_a_400_on_v1_routes(gateway, path):
    err = v1_error(gateway.post(path, DEEP), 400)
    assert err["code"] == "invalid_json" and "nested too deeply" in err["message"]


@pytest.mark.parametrize("path", V2_BODY_ROUTES)
def test_deeply_nested_json_is_a_400_on_v2_routes(gateway, path):
    assert "nested too deeply" in v2_error(gateway.post(path, DEEP), 400)


@pytest.mark.parametrize("path", V2_BODY_ROUTES)
def test_a_deeply_nested_inference_header_is_a_400(gateway, path):
    """The binary extension: the JSON header comes first, its length in a header of its own."""
    content = DEEP + b"\x00" * 8
    message = v2_error(gateway.post(path, content, {"inference-header-content-length": str(len(DEEP))}), 400)
    assert "inference header is nested too deeply" in message


def test_nesting_that_the_parser_takes_is_answered_by_validation(gateway):
    nested = "[" * 200 + "]" * 200
    err = v1_error(gateway.post(PREDICT, f'{{"instances": {nested}}}'), 422)
    assert err["code"] == "invalid_instances"
    message = v2_error(gateway.post(INFER, f'{{"inputs": [], "parameters": {{"unit_id": {nested}}}}}'), 400)
    assert "inputs" in message


# -- 2. byte counts must be ASCII digits -------------------------------------------------------

# Raw header bytes; servers decode them as latin-1, so b"\xb2" arrives as "²" (which
# str.isdigit() accepts and int() refuses).
NON_ASCII_DIGITS = [b"\xb2", b"\xb3", b"1\xb9", b"\xb20"]


@pytest.mark.parametrize("path", V2_BODY_ROUTES)
@pytest.mark.parametrize("value", NON_ASCII_DIGITS)
def test_a_non_ascii_inference_header_length_is_a_400(gateway, path, value):
    message = v2_error(gateway.post(path, json.dumps(INFER_BODY), {"inference-header-content-length": value}), 400)
    assert "inference-header-content-length: a byte count is required" in message


@pytest.mark.parametrize("value", NON_ASCII_DIGITS + [b"abc", b"-1", b"1e3"])
def test_a_content_length_that_is_not_ascii_digits_is_a_400(gateway, value):
    body = json.dumps({"instances": [ROW]}).encode()
    err = v1_error(gateway.post(PREDICT, body, {"content-length": value}), 400)
    assert err["code"] == "invalid_content_length" and "content-length" in err["message"]
    assert "a byte count is required" in v2_error(gateway.post(INFER, body, {"content-length": value}), 400)


def test_byte_counts_with_ascii_digits_and_spaces_are_taken(gateway):
    header = json.dumps(INFER_BODY).encode()
    response = gateway.post(INFER, header, {"inference-header-content-length": f" {len(header)} "})
    assert response.status_code == 200, response.text


# -- 3. one byte limit on every body -----------------------------------------------------------

LIMIT = DEFAULT_MAX_BODY_BYTES
BODY_ROUTES = [PREDICT, REWARDS, INFER, INFER_VERSION]


def oversized() -> bytes:
    """Valid JSON one byte over the limit, so only the size can be refused."""
    head, tail = b'{"instances": [], "pad": "', b'"}'
    return head + b" " * (LIMIT + 1 - len(head) - len(tail)) + tail


async def chunked(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def too_large(gateway: Gateway, path: str, content: Any, headers: dict[str, Any] | None = None) -> str:
    response = gateway.post(path, content, headers)
    if path.startswith("/v2/"):
        message = v2_error(response, 413)
    else:
        err = v1_error(response, 413)
        assert err["code"] == "payload_too_large"
        message = err["message"]
    assert message == f"the body is larger than {LIMIT} bytes"
    return message


def test_the_limit_is_the_setting(gateway):
    assert LIMIT == Settings.model_fields["max_body_bytes"].default == 1 << 20
    assert len(oversized()) == LIMIT + 1


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_body_over_the_limit_is_a_413(gateway, path):
    too_large(gateway, path, oversized())


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_chunked_body_over_the_limit_is_a_413(gateway, path):
    request = gateway.client.build_request("POST", path, content=chunked(oversized()))
    assert "content-length" not in request.headers  # sent chunked: only the count read can stop it
    too_large(gateway, path, chunked(oversized()))


@pytest.mark.parametrize("path", [INFER, INFER_VERSION])
def test_binary_tensor_data_counts_toward_the_limit(gateway, path):
    header = json.dumps(INFER_BODY).encode()
    content = header + b"\x00" * (LIMIT + 1 - len(header))
    too_large(gateway, path, content, {"inference-header-content-length": str(len(header))})
    too_large(gateway, path, chunked(content), {"inference-header-content-length": str(len(header))})


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_declared_length_over_the_limit_is_refused_before_reading(gateway, path):
    """A Content-Length over the limit is enough: the (short) body is never read."""
    too_large(gateway, path, b"{}", {"content-length": str(LIMIT + 1)})


def test_a_body_at_the_limit_is_read(gateway):
    body = oversized()[:-3] + b'"}'
    assert len(body) == LIMIT
    err = v1_error(gateway.post(PREDICT, body), 422)  # read and parsed: refused only by validation
    assert err["code"] != "payload_too_large"
