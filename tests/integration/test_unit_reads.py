"""Per-unit aggregate reads that arrive together share one pipeline (store.unit_reads), on the
embedded redis-server: each request still gets its own unit's counters as they stood before it,
in arrival order, and a server that forgot its scripts gets them again."""
from __future__ import annotations

import asyncio

import pytest

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


def test_concurrent_reads_share_one_round_trip_and_each_sees_the_counts_before_it(redis_url):
    async def scenario():
        store = ExperimentStore.from_url(redis_url)
        pipelines = []
        real = store.client.pipeline

        def counting(*args, **kwargs):
            pipelines.append(1)
            return real(*args, **kwargs)

        try:
            await store.unit_counters("ur", "warm", 60)  # loads the scripts
            store.client.pipeline = counting
            answers = await asyncio.gather(*(store.unit_counters("ur", "same" if i % 2 else "other", 60)
                                             for i in range(16)))
            return answers, len(pipelines)
        finally:
            store.client.pipeline = real
            await store.close()

    answers, round_trips = asyncio.run(scenario())
    assert round_trips == 1
    # In arrival order, each unit's count as it stood before that request (None: a new unit).
    assert [a[0] for a in answers[1::2]] == [None, *[str(k) for k in range(1, 8)]]
    assert [a[0] for a in answers[0::2]] == [None, *[str(k) for k in range(1, 8)]]


def test_a_server_that_forgot_its_scripts_gets_them_again(redis_url):
    async def scenario():
        store = ExperimentStore.from_url(redis_url)
        try:
            first = await store.unit_counters("ur", "flush", 60)
            await store.client.script_flush()
            second = await store.unit_counters("ur", "flush", 60)
            return first, second
        finally:
            await store.close()

    first, second = asyncio.run(scenario())
    assert first[0] is None and second[0] == "1"
