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
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from gateway.store.connect import NotReplicated, Replication


# The commands add() appends for each master: the marker write, ROLE and WAIT.
PER_MASTER = 3
# The marker only has to outlive its pipeline.
MARKER_TTL_MS = 60_000


def marker_key(key: str) -> str:
    """A key of ours in `key`'s slot: the same hash tag (or, with none, `key` as the tag). A key
    without a tag that holds a '}' has no such key: then any (our keys on a cluster all have a
    tag, and a single server has one slot)."""
    start = key.find("{")
    end = key.find("}", start + 1) if start != -1 else -1
    if end > start + 1:
        return f"gw:{{{key[start + 1:end]}}}:confirm"
    return f"gw:{{{key}}}:confirm" if "}" not in key else "gw:confirm"


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
    replica for one would make every write wait the whole timeout.

    WAIT confirms the writes of its own connection only. A call can answer with a write an
    earlier call made on another connection and write nothing itself (a record found by its
    nonce after a cut or from the spool, a reward claimed before): so each master first gets a
    small write of ours, and as a master's replicas take its writes in order, the replicas that
    have that one have every write before it."""

    def __init__(self, replication: Replication):
        self.replication = replication
        self.replicas: dict[str, int] = {}  # master -> replicas at its last ROLE answer

    async def add(self, client: aioredis.Redis | RedisCluster, pipe: Any,
                  first_keys: list[str]) -> tuple[list[str], list[str]]:
        """Append the confirmations for each master the scripts go to. Returns those masters'
        names, and the master of each script call (of its first key), in the order called."""
        if not self.replication.replicas or not first_keys:
            return [], []
        # master -> one of its scripts' keys, and how to send a keyless command there
        masters: dict[str, tuple[str, dict]] = {}
        if isinstance(client, RedisCluster):
            await client.initialize()  # a no-op once the slot map is known
            of_call = []
            for key in first_keys:
                node = client.get_node_from_key(key)
                masters.setdefault(node.name, (key, {"target_nodes": node}))
                of_call.append(node.name)
        else:
            masters[""] = (first_keys[0], {})
            of_call = [""] * len(first_keys)
        for name, (key, target) in masters.items():
            asked = min(self.replication.replicas, self.replicas.get(name, self.replication.replicas))
            # Routed by its key's slot, so to the master and connection the scripts there use.
            pipe.execute_command("SET", marker_key(key), "1", "PX", MARKER_TTL_MS)
            pipe.execute_command("ROLE", **target)
            pipe.execute_command("WAIT", asked, self.replication.timeout_ms, **target)
        return list(masters), of_call

    @staticmethod
    def split(results: list, masters: list[str]) -> tuple[list, list]:
        """A pipeline's results: the calls' answers, and the confirmations add() appended."""
        if not masters:
            return results, []
        n = PER_MASTER * len(masters)
        return results[:-n], results[-n:]

    def unconfirmed(self, masters: list[str], confirmations: list) -> dict[str, NotReplicated]:
        """`confirmations`: the (SET, ROLE, WAIT) replies of `masters`, flat. The masters whose
        replicas confirmed fewer writes than required, each with its error."""
        failed = {}
        for name, marked, role, acked in zip(masters, confirmations[::3], confirmations[1::3], confirmations[2::3]):
            error = next((a for a in (marked, role, acked) if isinstance(a, Exception)), None)
            if error is not None:
                # E.g. WAIT sent to a master a failover just made a replica: nothing confirmed.
                failed[name] = NotReplicated(f"the writes' confirmation failed: {error}")
                failed[name].__cause__ = error
                continue
            replicas = len(role[2]) if role and role[0] == "master" else 0
            self.replicas[name] = replicas
            needed = min(self.replication.replicas, replicas)
            if int(acked) < needed:
                failed[name] = NotReplicated(f"{acked} of the {needed} replicas required confirmed the writes "
                                             f"within {self.replication.timeout_ms} ms")
        return failed


def each_call_judged(answers: list, of_call: list[str], failed: dict[str, NotReplicated]) -> list:
    """Each call's answer once some masters' writes went unconfirmed: a call whose script failed
    or refused it (0: record.lua's id in use) wrote nothing, so its answer stands; a call that
    wrote on an unconfirmed master gets that master's error; the others' writes are confirmed."""
    if len(of_call) != len(answers):  # not one script call per answer: every write is in doubt
        first = next(iter(failed.values()))
        return [a if isinstance(a, Exception) or a == 0 else first for a in answers]
    return [a if isinstance(a, Exception) or a == 0 else failed.get(master, a) for a, master in zip(answers, of_call)]


async def execute(pipe: Any, masters: list[str]) -> list:
    """The pipeline's answers (errors among them). redis-py retries a cluster pipeline after a
    node was unreachable but drops the target of our ROLE/WAIT on the first try, so the retry
    cannot route them: that is a cut like any other (ConnectionError). With confirmations, a
    command its node redirects (MOVED, ASK: the slot has moved or is moving) is answered with
    the redirection, not sent on: sent on, it would land where no WAIT of ours looks."""
    try:
        if masters and isinstance(pipe, ClusterPipeline):
            return await pipe.execute(raise_on_error=False, allow_redirections=False)
        return await pipe.execute(raise_on_error=False)
    except RedisClusterException as err:
        if not masters or type(err) is not RedisClusterException:
            raise
        raise RedisConnectionError(f"a node was unreachable ({err})") from err
