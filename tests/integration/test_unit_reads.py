"""Per-unit aggregate reads that arrive together share one pipeline (store.unit_reads), on the
embedded redis-server: each request gets its own unit's counters as they stand, and reading
counts nothing (the record counts the request, record.lua), so a read sent again is harmless."""
from __future__ import annotations

import asyncio

import pytest

from gateway.store import keys
from gateway.store.embedded import EmbeddedRedis
from gateway.store.experiments import ExperimentStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("unit-reads")).start()
    try:
        yield server.url
    finally:
        server.stop()


async def record(store: ExperimentStore, rid: str, unit: str, window_s: float | None = 60) -> bool:
    return await store.record_prediction("ur", rid, "a", {"pred": "[1]", "unit": unit}, 60, None, unit_window_s=window_s)


def test_concurrent_reads_share_one_round_trip_and_each_gets_its_units_counters(redis_url):
    async def scenario():
        store = ExperimentStore.from_url(redis_url)
        pipelines = []
        real = store.client.pipeline

        def counting(*args, **kwargs):
            pipelines.append(1)
            return real(*args, **kwargs)

        try:
            for i in range(3):
                await record(store, f"s{i}", "same")
            store.client.pipeline = counting
            answers = await asyncio.gather(*(store.unit_counters("ur", "same" if i % 2 else "other") for i in range(16)))
            store.client.pipeline = real
            again = await store.unit_counters("ur", "same")
            return answers, len(pipelines), again
        finally:
            store.client.pipeline = real
            await store.close()

    answers, round_trips, again = asyncio.run(scenario())
    assert round_trips == 1
    # Reads count nothing: every read of a unit sees the same counts, the records' (None: new).
    assert {a[0] for a in answers[1::2]} == {"3"} and again[0] == "3"
    assert {a[0] for a in answers[0::2]} == {None}


def test_a_request_is_counted_with_its_record_once_per_request_id(redis_url):
    async def scenario():
        store = ExperimentStore.from_url(redis_url)
        try:
            assert await record(store, "once", "u1")
            assert not await record(store, "once", "u1")  # the id in use: refused, not counted
            assert await record(store, "no-aggregates", "u1", window_s=None)  # a policy without them
            return await store.unit_counters("ur", "u1"), await store.client.ttl(keys.unit_prefix("ur") + "u1")
        finally:
            await store.close()

    counters, ttl = asyncio.run(scenario())
    assert counters[0] == "1" and 0 < ttl <= 60


def test_when_redis_is_unreachable_every_waiting_read_fails_and_none_hangs():
    """A lone read (a plain HMGET) and reads that share a pipeline alike: each request gets the
    connection error (the data plane then serves without aggregates), none waits forever."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from tests.integration.conftest import free_port

    async def scenario():
        store = ExperimentStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
        try:
            lone = await asyncio.wait_for(asyncio.gather(store.unit_counters("ur", "u"), return_exceptions=True), 30)
            together = await asyncio.wait_for(
                asyncio.gather(*(store.unit_counters("ur", f"u{i}") for i in range(5)), return_exceptions=True), 30)
            return lone + together
        finally:
            await store.close()

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 6 and all(isinstance(o, RedisConnectionError) for o in outcomes), outcomes
