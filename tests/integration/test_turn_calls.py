"""The store calls of requests under way together share one pipeline (store.turn_calls), on the
embedded redis-server: per-unit aggregate reads and prediction records alike. Each request gets
its own unit's counters as they stand and its own record's outcome (a script's refusal of one
record fails that one only), and reading counts nothing (the record counts the request,
record.lua), so a read sent again is harmless."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

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


async def counted(store: ExperimentStore, together: Awaitable) -> tuple[Any, int]:
    """What `together` answers, and how many pipelines the store opened meanwhile."""
    pipelines = 0
    real = store.client.pipeline

    def counting(*args, **kwargs):
        nonlocal pipelines
        pipelines += 1
        return real(*args, **kwargs)

    store.client.pipeline = counting
    try:
        return await together, pipelines
    finally:
        store.client.pipeline = real


def test_concurrent_reads_share_one_round_trip_and_each_gets_its_units_counters(redis_url):
    async def scenario():
        store = ExperimentStore.from_url(redis_url)
        try:
            for i in range(3):
                await record(store, f"s{i}", "same")
            answers, round_trips = await counted(
                store, asyncio.gather(*(store.unit_counters("ur", "same" if i % 2 else "other") for i in range(16))))
            return answers, round_trips, await store.unit_counters("ur", "same")
        finally:
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
    asked together: one pipeline, in the order asked; the two new records counted, the reused id
    refused (False) and not counted, and the read, asked last, sees both records."""
    async def scenario():
        store = ExperimentStore.from_url(redis_url)
        try:
            assert await record(store, "used-before", "other")
            outcomes, round_trips = await counted(store, asyncio.gather(
                record(store, "t1", "together"), record(store, "t2", "together"),
                record(store, "used-before", "together"), store.unit_counters("ur", "together")))
            return outcomes, round_trips, await store.unit_counters("ur", "together")
        finally:
            await store.close()

    (first, second, reused, read), round_trips, after = asyncio.run(scenario())
    assert round_trips == 1
    assert (first, second, reused) == (True, True, False)
    assert read[0] == "2" and after[0] == "2"


def refused_among_good(store: ExperimentStore, prefix: str):
    """Two good records and, between them, one whose key holds another type (WRONGTYPE inside
    record.lua, before its first write), asked together with a read of their unit."""
    return asyncio.gather(record(store, f"{prefix}-good-1", prefix), record(store, f"{prefix}-clobbered", prefix),
                          record(store, f"{prefix}-good-2", prefix), store.unit_counters("ur", prefix),
                          return_exceptions=True)


def test_a_record_its_script_refuses_fails_only_its_own_request(redis_url):
    """In one pipeline with two good records and a read: the refused record's caller gets the
    error, the others are written and answered as if alone, and it counted nothing."""
    from redis.exceptions import ResponseError

    async def scenario():
        store = ExperimentStore.from_url(redis_url)
        try:
            await record(store, "warm", "w")  # the scripts loaded: the batch is one pipeline
            await store.client.set(keys.request("ur", "g-clobbered"), "not a hash")
            outcomes, round_trips = await counted(store, refused_among_good(store, "g"))
            return outcomes, round_trips, await store.unit_counters("ur", "g")
        finally:
            await store.close()

    (one, refused, two, read), round_trips, after = asyncio.run(scenario())
    assert round_trips == 1
    assert one is True and two is True
    assert isinstance(refused, ResponseError) and "WRONGTYPE" in str(refused)
    assert read[0] == "2" and after[0] == "2"  # the refused request counted nothing


def test_after_redis_lost_its_scripts_a_batch_is_sent_again_and_a_refusal_stays_a_refusal(redis_url):
    """SCRIPT FLUSH (what a restarted server or a promoted replica has): every call of the batch
    answers NOSCRIPT, the scripts are loaded again and the batch re-sent; the good records are
    written once, the refused one is still refused, the read answered."""
    from redis.exceptions import ResponseError

    async def scenario():
        store = ExperimentStore.from_url(redis_url)
        try:
            await record(store, "warm-2", "w")
            await store.client.set(keys.request("ur", "n-clobbered"), "not a hash")
            await store.client.script_flush()
            return await refused_among_good(store, "n"), await store.unit_counters("ur", "n")
        finally:
            await store.close()

    (one, refused, two, read), after = asyncio.run(scenario())
    assert one is True and two is True
    assert isinstance(refused, ResponseError) and "WRONGTYPE" in str(refused)
    assert after[0] == "2" and read[0] in (None, "2")  # read before or after the re-sent records


def test_when_writes_wait_for_replicas_reads_go_apart_and_are_not_held_by_the_wait(redis_url):
    """wait_replicas=1 (this server has no replica, so nothing is owed): the records' pipeline
    ends with ROLE and WAIT, and the reads asked with them go in a pipeline of their own."""
    async def scenario():
        store = ExperimentStore.from_url(f"{redis_url}?wait_replicas=1")
        try:
            await record(store, "warm-3", "w3")
            return await counted(store, asyncio.gather(
                record(store, "a1", "apart"), store.unit_counters("ur", "apart"),
                record(store, "a2", "apart"), store.unit_counters("ur", "w3")))
        finally:
            await store.close()

    (first, read, second, warm), round_trips = asyncio.run(scenario())
    assert round_trips == 2
    assert first is True and second is True
    assert read[0] is None and warm[0] == "1"  # the reads go first, before the records


def test_a_request_that_goes_away_leaves_the_others_of_its_batch_answered(redis_url):
    """A caller cancelled while its record waits in the batch: the others get their answers, and
    the next calls are sent (nothing is left pending behind it)."""
    async def scenario():
        store = ExperimentStore.from_url(redis_url)
        try:
            gone = asyncio.ensure_future(record(store, "gone", "c"))
            stays = asyncio.ensure_future(record(store, "stays", "c"))
            await asyncio.sleep(0)  # both are in the batch
            gone.cancel()
            answer = await asyncio.wait_for(stays, 30)
            later = await asyncio.wait_for(asyncio.gather(record(store, "later", "c"), store.unit_counters("ur", "c")), 30)
            return answer, gone.cancelled(), later
        finally:
            await store.close()

    answer, cancelled, (later, counters) = asyncio.run(scenario())
    assert answer is True and cancelled and later is True
    # The cancelled caller's record was already in the batch: it is written (its client has no
    # token for it, so no reward can come), and counted like any record.
    assert counters[0] == "3"


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
