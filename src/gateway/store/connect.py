"""Opening the state store's Redis from GATEWAY_REDIS_URL: one server (redis://, rediss://,
unix://) or a Redis Cluster (redis+cluster://host:port, rediss+cluster:// with TLS; one seed node
is enough, the client discovers the rest and follows failovers). Also what counts as the store
being unreachable, and how to drop connections a cut made stale, for either kind of client.

>>> cluster_seed_url("redis+cluster://10.0.0.5:7000/0")
'redis://10.0.0.5:7000/0'
>>> cluster_seed_url("redis://10.0.0.5:6379") is None
True
"""
from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

# The store cannot take writes now (the caller spools them): unreachable or timed out, and on a
# cluster also while a master's slots have no owner (CLUSTERDOWN, a failover in progress) or are
# being moved (TRYAGAIN).
STORE_DOWN = (RedisConnectionError, RedisTimeoutError, ClusterDownError, SlotNotCoveredError, TryAgainError)

# Bounded waits: a hung or unreachable server must fail a call (the router then spools) rather
# than hold requests forever.
_TIMEOUTS = {"socket_timeout": 5, "socket_connect_timeout": 2}


def cluster_seed_url(url: str) -> str | None:
    """The plain URL of the seed node if `url` names a Redis Cluster, else None."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        return None
    return f"{CLUSTER_SCHEMES[scheme.lower()]}://{rest}"


def open_redis(url: str) -> aioredis.Redis | RedisCluster:
    seed = cluster_seed_url(url)
    if seed is None:
        return aioredis.from_url(url, decode_responses=True, health_check_interval=30, **_TIMEOUTS)
    # The cluster client refreshes its slot map on MOVED and on connection errors, so a replica
    # promoted in a failover takes over its master's slots without a restart.
    return RedisCluster.from_url(seed, decode_responses=True, **_TIMEOUTS)


async def drop_idle_connections(client: aioredis.Redis | RedisCluster) -> None:
    """Whatever cut one connection (a server restart, a failover, CLIENT KILL) cut the idle ones
    too: drop them so the next call opens fresh ones."""
    if isinstance(client, RedisCluster):
        for node in client.get_nodes():
            await node.disconnect_free_connections()
    else:
        await client.connection_pool.disconnect(inuse_connections=False)
