"""GATEWAY_REDIS_URL picks the client: one server, or a Redis Cluster with redis+cluster://."""
from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError

from gateway.store.connect import STORE_DOWN, Replication, cluster_seed_url, open_redis, split_url


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


@pytest.mark.parametrize("url, rest, replication", [
    ("redis+cluster://h:7000?wait_replicas=1", "redis+cluster://h:7000", Replication(1, 100)),
    ("redis://h:6379/0?wait_replicas=2&wait_ms=50&ssl_cert_reqs=none", "redis://h:6379/0?ssl_cert_reqs=none",
     Replication(2, 50)),
    ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0", Replication(0, 100)),  # untouched
])
def test_the_gateways_own_url_parameters_are_taken_out_before_redis_py_sees_them(url, rest, replication):
    assert split_url(url) == (rest, replication)


@pytest.mark.parametrize("query", ["wait_replicas=one", "wait_replicas=-1", "wait_replicas=1&wait_ms=0"])
def test_a_bad_replication_parameter_is_refused_with_the_variable_named(query):
    with pytest.raises(ValueError, match="GATEWAY_REDIS_URL"):
        split_url(f"redis://h:6379?{query}")
