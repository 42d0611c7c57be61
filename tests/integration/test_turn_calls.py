"""The store calls of requests under way together share one pipeline (store.turn_calls), on the
embedded redis-server: per-unit aggregate reads and prediction records alike. Each request gets
its own unit's counters as they stand and its own record's outcome (a script's refusal of one
record fails that one only), and reading counts nothing (the record counts the request,
record.lua), so a read sent again is harmless."""
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


def counting_pipelines(store: ExperimentStore) -> list:
    """Counts the pipelines the store opens from now on (restore with `store.client.pipeline = real`)."""
    pipelines = []
    real = store.client.pipeline

    def counting(*args, **kwargs):
        pipelines.append(1)
        return real(*args, **kwargs)

    store.client.pipeline = counting
    return pipelines


def test_concurrent_reads_share_one_round_trip_and_each_gets_its_units_counters(redis_url):
    async def scenario():
        store = ExperimentStore.from_url(redis_url)
        real = store.client.pipeline
        try:
            for i in range(3):
                await record(store, f"s{i}", "same")
            pipelines = counting_pipelines(store)
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


def test_records_and_reads_under_way_together_share_one_round_trip_and_each_gets_its_own_answer(redis_url):
    """Two records of one unit, a record under a request id already used and a read of the unit,
    sent together: one pipeline; the two new records counted, the reused id refused (False) and
    not counted, and the read sees the unit as it stood before or after the records, never half."""
    async def scenario():
        store = ExperimentStore.from_url(redis_url)
        real = store.client.pipeline
        try:
            assert await record(store, "used-before", "other")
            pipelines = counting_pipelines(store)
            outcomes = await asyncio.gather(record(store, "t1", "together"), record(store, "t2", "together"),
                                            record(store, "used-before", "together"),
                                            store.unit_counters("ur", "together"))
            store.client.pipeline = real
            return outcomes, len(pipelines), await store.unit_counters("ur", "together")
        finally:
            store.client.pipeline = real
            await store.close()

    (first, second, reused, read), round_trips, after = asyncio.run(scenario())
    assert round_trips == 1
    assert (first, second, reused) == (True, True, False)
    assert read[0] in (None, "1", "2") and after[0] == "2"


def test_a_record_its_script_refuses_fails_only_its_own_request(redis_url):
    """A record whose key holds another type (WRONGTYPE inside record.lua) in the same pipeline
    as two good ones: that caller gets the error, the others are written as if alone."""
    from redis.exceptions import ResponseError

    async def scenario():
        store = ExperimentStore.from_url(redis_url)
        try:
            await store.client.set(keys.request("ur", "clobbered"), "not a hash")
            return await asyncio.gather(record(store, "good-1", "g"), record(store, "clobbered", "g"),
                                        record(store, "good-2", "g"), return_exceptions=True), \
                await store.unit_counters("ur", "g"), await store.client.exists(keys.request("ur", "good-2"))
        finally:
            await store.close()

    (one, refused, two), counters, written = asyncio.run(scenario())
    assert one is True and two is True and written == 1
    assert isinstance(refused, ResponseError) and "WRONGTYPE" in str(refused)
    assert counters[0] == "2"  # the refused request counted nothing


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
            # Records sent with reads: each caller gets the error (the writer then spools its record).
            mixed = await asyncio.wait_for(asyncio.gather(
                record(store, "r1", "u"), store.unit_counters("ur", "u"), record(store, "r2", "u"),
                return_exceptions=True), 30)
            return lone + together + mixed
        finally:
            await store.close()

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 9 and all(isinstance(o, RedisConnectionError) for o in outcomes), outcomes
