"""Replica confirmation of the store's scripted writes (wait_replicas in GATEWAY_REDIS_URL).

Redis replicates asynchronously: a master that dies right after answering may take the write
with it, and a failover then promotes a replica without it. With `wait_replicas=N`, each script
pipeline ends, on every master it wrote to, with ROLE and WAIT on the same connection: the
writes count as taken once min(N, the replicas the master has) confirmed them. Fewer: the
caller gets NotReplicated (one of STORE_DOWN) and spools the writes, to replay them later
(safe: rewards are claimed once, a record carries its call's nonce). A master with no replica
left (after its replica was promoted) needs no confirmation: there is nothing to fail over to.
"""
from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from gateway.store.connect import NotReplicated, Replication


class ScriptCalls:
    """Stands in for the pipeline while a build function fills it: notes each script call's
    first key (its slot, so its master)."""

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.first_keys: list[str] = []

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if args[0] == "EVALSHA" and int(args[2]) > 0:
            self.first_keys.append(args[3])
        return self.pipe.execute_command(*args, **kwargs)


class ReplicaWaits:
    """Adds the confirmations to a script pipeline and judges them. WAIT asks for as many
    replicas as the master had at its last ROLE answer (up to N): asking a master that lost its
    replica for one would make every write wait the whole timeout."""

    def __init__(self, replication: Replication):
        self.replication = replication
        self.replicas: dict[str, int] = {}  # master -> replicas at its last ROLE answer

    async def add(self, client: aioredis.Redis | RedisCluster, pipe: Any, first_keys: list[str]) -> list[str]:
        """Append ROLE and WAIT for each master the scripts go to; those masters' names."""
        if not self.replication.replicas or not first_keys:
            return []
        if isinstance(client, RedisCluster):
            await client.initialize()  # a no-op once the slot map is known
            masters = {}
            for key in first_keys:
                node = client.get_node_from_key(key)
                masters[node.name] = {"target_nodes": node}
        else:
            masters = {"": {}}
        for name, target in masters.items():
            asked = min(self.replication.replicas, self.replicas.get(name, self.replication.replicas))
            pipe.execute_command("ROLE", **target)
            pipe.execute_command("WAIT", asked, self.replication.timeout_ms, **target)
        return list(masters)

    def check(self, masters: list[str], answers: list) -> None:
        """`answers`: the (ROLE, WAIT) replies of `masters`, flat. Raises NotReplicated if a
        master's replicas confirmed fewer writes than required."""
        for name, role, acked in zip(masters, answers[::2], answers[1::2]):
            failed = next((a for a in (role, acked) if isinstance(a, Exception)), None)
            if failed is not None:
                # E.g. WAIT sent to a master a failover just made a replica: nothing confirmed.
                raise NotReplicated(f"the writes' confirmation failed: {failed}") from failed
            replicas = len(role[2]) if role and role[0] == "master" else 0
            self.replicas[name] = replicas
            needed = min(self.replication.replicas, replicas)
            if int(acked) < needed:
                raise NotReplicated(f"{acked} of the {needed} replicas required confirmed the writes within "
                                    f"{self.replication.timeout_ms} ms")


async def execute(pipe: Any, masters: list[str]) -> list:
    """The pipeline's answers (errors among them). redis-py retries a cluster pipeline after a
    node was unreachable but drops the target of our ROLE/WAIT on the first try, so the retry
    cannot route them: that is a cut like any other (ConnectionError)."""
    try:
        return await pipe.execute(raise_on_error=False)
    except RedisClusterException as err:
        if not masters or type(err) is not RedisClusterException:
            raise
        raise RedisConnectionError(f"a node was unreachable ({err})") from err
