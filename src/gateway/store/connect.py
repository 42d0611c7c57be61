"""Opening the state store's Redis from GATEWAY_REDIS_URL: one server (redis://, rediss://,
unix://) or a Redis Cluster (redis+cluster://host:port, rediss+cluster:// with TLS; one seed node
is enough, the client discovers the rest and follows failovers). Also what counts as the store
being unreachable, and how to drop connections a cut made stale, for either kind of client.

Two query parameters are the gateway's own (removed before redis-py sees the URL):
`wait_replicas=N` makes every scripted write wait (Redis WAIT) until N replicas of its master,
or all it has if fewer, confirm it, for at most `wait_ms` (default 100); a write they do not
confirm in time is not acknowledged from Redis but spooled and replayed (scripts are idempotent),
so a failover cannot lose what a client was told was taken.

>>> cluster_seed_url("redis+cluster://10.0.0.5:7000/0")
'redis://10.0.0.5:7000/0'
>>> cluster_seed_url("redis://10.0.0.5:6379") is None
True
>>> split_url("redis+cluster://h:7000?wait_replicas=1&ssl_cert_reqs=none")
('redis+cluster://h:7000?ssl_cert_reqs=none', Replication(replicas=1, timeout_ms=100))
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, RedisError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


class NotReplicated(RedisError):
    """A write reached its master but not enough replicas confirmed it in time (wait_replicas)."""


# The store cannot take writes now (the caller spools them): unreachable or timed out, and on a
# cluster also while a master's slots have no owner (CLUSTERDOWN, a failover in progress) or are
# being moved (TRYAGAIN); with wait_replicas, also while replicas do not confirm writes.
STORE_DOWN = (RedisConnectionError, RedisTimeoutError, ClusterDownError, SlotNotCoveredError, TryAgainError,
              NotReplicated)


@dataclass(frozen=True)
class Replication:
    """How many replicas must confirm a scripted write (0: none, Redis's default), and how long
    to wait for them."""

    replicas: int = 0
    timeout_ms: int = 100


def split_url(url: str) -> tuple[str, Replication]:
    """The URL for redis-py (unchanged unless it held ours), and the gateway's own replication
    parameters taken out of it."""
    base, _, query = url.partition("?")
    ours = {"wait_replicas": "0", "wait_ms": "100"}
    rest = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in ours:
            ours[key] = value
        else:
            rest.append((key, value))
    try:
        replication = Replication(int(ours["wait_replicas"]), int(ours["wait_ms"]))
    except ValueError:
        raise ValueError(f"GATEWAY_REDIS_URL: wait_replicas and wait_ms must be integers, got {query!r}") from None
    if replication.replicas < 0 or replication.timeout_ms < 1:
        raise ValueError(f"GATEWAY_REDIS_URL: wait_replicas must be >= 0 and wait_ms >= 1, got {query!r}")
    if len(rest) == len(parse_qsl(query, keep_blank_values=True)):
        return url, replication
    return base + (f"?{urlencode(rest)}" if rest else ""), replication


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
    url, _ = split_url(url)
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
