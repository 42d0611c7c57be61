"""The one place that decides where a write goes: to Redis while it answers, else to this
replica's spool on local disk, replayed in order once Redis is back.

Its promise: a record or a reward acknowledged while Redis is away is applied exactly once when
it returns, whichever replica took it. A reward can reach Redis before its prediction's record
does (another replica spooled the record and has not replayed yet), so a reward for an unknown
request is kept while any spool may still hold that record, and retried, until the record
arrives or the reward's token expires.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.store.connect import STORE_DOWN
from gateway.store.experiments import ExperimentStore
from gateway.store.spool import Spool

log = logging.getLogger("gateway.writer")

# STORE_DOWN (gateway.store.connect, imported from here too): the writes go to the spool instead.
REPLAY_BATCH = 200
# A reward waiting for its record is tried again this often.
RETRY_UNKNOWN_S = 1.0
# After Redis returns, replicas on other nodes may take this long to announce their spools.
SETTLE_S = 30.0
# How often a running replica looks for spools left by replicas that stopped.
ADOPT_EVERY_S = 5.0
# Replicas announce a non-empty spool in Redis (owner -> until when), renewed at every replay.
ANNOUNCE_S = 60.0
SPOOLING_KEY = "gw:spooling"
# What became of a prediction's record (StoreWriter.record).
WRITTEN, SPOOLED, REFUSED = "written", "spooled", "refused"

# What replaying one spooled reward came to: applied or refused for good ('done'), or its
# prediction's record is not in Redis yet ('unknown').
ReplayReward = Callable[[dict[str, Any]], Awaitable[str]]


class StoreWriter:
    def __init__(self, store: ExperimentStore, spool: Spool | None, clock: Callable[[], float] = time.time):
        self.store = store
        self.spool = spool
        self.clock = clock
        self.store_ok = True
        self._back_at = float("-inf")
        self._adopted_at = float("-inf")

    # -- which way ------------------------------------------------------------------------

    @property
    def spooling(self) -> bool:
        """Writes go to the spool now (Redis was found unreachable)."""
        return not self.store_ok and self.spool is not None

    def lost(self) -> None:
        if self.store_ok:
            log.error("the state store is unreachable; serving from cached weights%s",
                      ", spooling writes to local disk" if self.spool else "")
        self.store_ok = False

    def back(self) -> None:
        if not self.store_ok:
            log.warning("the state store is back; replaying %d spooled writes", self.spool.pending() if self.spool else 0)
            self._back_at = self.clock()
        self.store_ok = True

    def readiness(self) -> dict[str, Any]:
        spooled = self.spool.pending() if self.spool else 0
        return {
            "status": "ok" if self.store_ok and not spooled else "degraded",
            "store": "ok" if self.store_ok else "unreachable",
            "spooled": spooled,
        }

    # -- writes ---------------------------------------------------------------------------

    async def record(self, args: dict[str, Any], spooled: Callable[[], dict[str, Any]] | None = None) -> str:
        """A served prediction's record: WRITTEN to Redis, SPOOLED (replayed later), or REFUSED
        (its request id was already used). `spooled`: the record to keep instead if it goes to
        the spool (what must be settled now, not when it is replayed)."""
        if not self.spooling:
            try:
                return WRITTEN if await self.store.record_prediction(**args) else REFUSED
            except STORE_DOWN:
                if self.spool is None:
                    raise
                self.lost()
        await self.spool.put("record", spooled() if spooled else args)
        return SPOOLED

    async def queue_rewards(self, payloads: list[dict[str, Any]]) -> None:
        """Durably keep feedback items for later: {'item', 'received_at', 'until'} each."""
        await self.spool.put_many([("reward", p) for p in payloads])

    async def record_may_be_spooled(self) -> bool:
        """Could a prediction's record still be waiting in some spool: this replica's, another's
        on this node, or one another node announced in Redis?"""
        if self.spool is None:
            return False
        if self.spool.records_pending() or self.spool.peers_pending():
            return True
        if self.clock() < self._back_at + SETTLE_S:
            return True
        others = await self.store.client.zrangebyscore(SPOOLING_KEY, self.clock(), "+inf")
        return any(owner != self.spool.owner for owner in others)

    # -- replay ---------------------------------------------------------------------------

    async def replay(self, replay_reward: ReplayReward) -> None:
        """Apply due spooled writes in the order they were taken. Each is safe to repeat, so one
        applied just before a crash and replayed again changes nothing."""
        if self.spool is None:
            return
        now = self.clock()
        if now - self._adopted_at >= ADOPT_EVERY_S:
            self._adopted_at = now
            await self.spool.adopt_orphans()
        if not self.spool.pending():
            return
        await self.store.client.zadd(SPOOLING_KEY, {self.spool.owner: now + ANNOUNCE_S})
        after, may_come = 0, None

        async def record_may_come() -> bool:  # asked once a pass, only if a reward needs it
            nonlocal may_come
            if may_come is None:
                may_come = await self.record_may_be_spooled()
            return may_come

        while batch := await self.spool.peek(REPLAY_BATCH, after=after, now=now):
            done, waiting = [], []
            for item_id, kind, payload in batch:
                if kind == "record":
                    await self._replay_record(payload, now)
                    done.append(item_id)
                elif await replay_reward(payload) != "unknown":
                    done.append(item_id)
                elif now <= payload.get("until", 0) and await record_may_come():
                    waiting.append(item_id)
                else:
                    log.error("spooled feedback for %s dropped: its prediction was never recorded",
                              payload["item"].get("request_id"))
                    done.append(item_id)
            await self.spool.delete(done)
            if waiting:
                await self.spool.defer(waiting, now + RETRY_UNKNOWN_S)
            after = batch[-1][0]
        if not self.spool.pending():
            await self.store.client.zrem(SPOOLING_KEY, self.spool.owner)

    async def _replay_record(self, args: dict[str, Any], now: float) -> None:
        # Its on-time feedback may still sit in a spool: the default reward waits one more
        # window from now (the deadline itself still decides what is late).
        sweep_at = None
        if args.get("deadline") is not None:
            sweep_at = now + (args["deadline"] - float(args["record"]["t"]))
        if not await self.store.record_prediction(**args, sweep_at=sweep_at):
            log.error("spooled prediction %s not recorded: its request id was used meanwhile", args["request_id"])
