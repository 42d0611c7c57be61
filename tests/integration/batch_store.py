"""A real embedded Redis and an ExperimentStore on it, for the tests that compare a batch of
script calls with the same items sent one at a time (rewards, shadow answers)."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from gateway.store.embedded import EmbeddedRedis
from gateway.store.experiments import ExperimentStore


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[EmbeddedRedis]:
    r = EmbeddedRedis(tmp_path_factory.mktemp("batch-store")).start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def raw(server) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(server.url, decode_responses=True)
    c.flushall()
    try:
        yield c
    finally:
        c.close()


def run(server: EmbeddedRedis, work):
    """`work(store)` on a fresh ExperimentStore, closed after."""
    async def go():
        store = ExperimentStore.from_url(server.url)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def state(raw: redis.Redis) -> dict:
    """Every key's content; stream entries without their ids (they carry the time of writing)."""
    out = {}
    for key in sorted(raw.scan_iter(count=1000)):
        kind = raw.type(key)
        if kind == "hash":
            out[key] = raw.hgetall(key)
        elif kind == "stream":
            out[key] = [fields for _, fields in raw.xrange(key)]
        elif kind == "zset":
            out[key] = raw.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = raw.get(key)
    return out
