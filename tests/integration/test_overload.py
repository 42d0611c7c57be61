"""Overload: a gateway started with tiny queues (GATEWAY_MAX_ONGOING_REQUESTS=2,
GATEWAY_MAX_QUEUED_REQUESTS=2) under 200 concurrent predictions answers every request, the
excess with 503 and Retry-After instead of queueing without bound, and keeps serving after."""
from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from tests.integration.conftest import POLICIES, ROW, start_gateway

pytestmark = pytest.mark.integration

CONCURRENT = 200


@pytest.fixture(scope="module")
def small_gateway(tmp_path_factory):
    gw = start_gateway(
        POLICIES / "churn.yaml",
        tmp_path_factory.mktemp("overload-state"),
        env={"GATEWAY_MAX_ONGOING_REQUESTS": "2", "GATEWAY_MAX_QUEUED_REQUESTS": "2"},
    )
    try:
        yield gw
    finally:
        gw.stop()


def test_beyond_its_queues_the_gateway_answers_503_with_retry_after_and_recovers(small_gateway):
    async def burst():
        limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=small_gateway.url, timeout=60, limits=limits) as client:
            async def one(i: int) -> httpx.Response:
                return await client.post("/v1/experiments/churn/predict", json={"instances": [ROW]})

            # A timeout here (60 s) would be the gateway hanging instead of refusing.
            return await asyncio.gather(*(one(i) for i in range(CONCURRENT)))

    responses = asyncio.run(burst())
    codes = Counter(r.status_code for r in responses)
    print(f"overload burst of {CONCURRENT}: {dict(codes)}")
    assert set(codes) <= {200, 503}, codes
    assert codes[503] > 0 and codes[200] > 0, codes
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.headers.get("retry-after", "").isdigit() for r in refused)
    # Once the burst is over, the gateway serves normally again.
    with small_gateway.client() as c:
        after = [c.post("/v1/experiments/churn/predict", json={"instances": [ROW]}).status_code for _ in range(20)]
    assert after == [200] * 20
