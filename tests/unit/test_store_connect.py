"""GATEWAY_REDIS_URL picks the client: one server, or a Redis Cluster with redis+cluster://."""
from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError

from gateway.store.connect import STORE_DOWN, cluster_seed_url, open_redis


@pytest.mark.parametrize("url, seed", [
    ("redis+cluster://10.0.0.5:7000", "redis://10.0.0.5:7000"),
    ("REDISS+CLUSTER://user:pw@redis.example:6380", "rediss://user:pw@redis.example:6380"),
    ("redis://10.0.0.5:6379/2", None),
    ("unix:///run/redis.sock", None),
])
def test_only_the_cluster_schemes_name_a_cluster(url, seed):
    assert cluster_seed_url(url) == seed


def test_a_cluster_url_opens_the_cluster_client_and_a_plain_one_a_single_server_client():
    # Neither connects until its first command.
    assert isinstance(open_redis("redis+cluster://127.0.0.1:7000"), RedisCluster)
    single = open_redis("redis://127.0.0.1:6379/0")
    assert isinstance(single, aioredis.Redis) and not isinstance(single, RedisCluster)


def test_a_cluster_without_an_owner_for_a_slot_counts_as_the_store_being_down():
    # During a failover the router spools writes rather than failing them.
    assert issubclass(ClusterDownError, STORE_DOWN)
