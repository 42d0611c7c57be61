"""The logged propensity is the probability with which the variant was really served, also
while a variant's circuit breaker is open: for every healthy variant v, the inverse-propensity
count sum(1{served v} / propensity) over all requests estimates the number of requests, in the
answers the clients see and in the decision log the retrainer reads.

Error rate: each term has mean 1 and variance (1 - p) / p <= 2 for p >= 1/3 (three variants,
none below a third while exploring without rewards), so the sum of N terms has sd <= sqrt(2N);
the test allows 5 sd (two-sided, normal approximation: about 6e-7 per check). Logging the raw
share while the broken variant's traffic goes to the others would be off by N/2 (11 sd)."""
from __future__ import annotations

import asyncio
import math
from collections import defaultdict

import pytest

from gateway.store.embedded import EmbeddedRedis
from gateway.store.experiments import ExperimentStore
from tests.integration.conftest import ROW

pytestmark = pytest.mark.integration

N = 1000
HEALTHY = ("ok-a", "ok-b")


def test_inverse_propensities_count_the_requests_while_a_breaker_is_open(gateway, client):
    served = []
    failed = 0
    for i in range(N):
        r = client.post("/v1/experiments/breaker/predict", json={"instances": [ROW]}, headers={"x-request-id": f"ips-{i}"})
        if r.status_code == 200:
            body = r.json()
            served.append((body["request_id"], body["variant"], body["propensity"]))
        else:
            assert r.status_code == 503 and r.json()["error"]["code"] == "variant_unavailable", r.text
            failed += 1
    assert failed >= 5, "the broken variant's breaker never opened"
    bound = 5 * math.sqrt(2 * N)

    answered = defaultdict(float)
    for _, variant, p in served:
        answered[variant] += 1 / p
    for v in HEALTHY:
        assert abs(answered[v] - N) <= bound, (v, answered[v], N, failed)

    async def decision_log():
        store = ExperimentStore.from_url(EmbeddedRedis(gateway.state_dir).url)
        try:
            return await store.recent_decisions("breaker", 3 * N)
        finally:
            await store.close()

    mine = {rid for rid, _, _ in served}
    logged = defaultdict(float)
    entries = [e for e in asyncio.run(decision_log()) if e["rid"] in mine]
    assert len(entries) == len(served)
    for e in entries:
        logged[e["variant"]] += 1 / float(e["prop"])
    for v in HEALTHY:
        assert abs(logged[v] - N) <= bound, (v, logged[v], N, failed)
