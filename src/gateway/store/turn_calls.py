"""The store calls of requests that are under way together, sent as one pipeline: the per-unit
aggregate reads (HMGET of the unit's counters) before the model is called, and the prediction
records (record.lua) after it. In redis-py a round trip costs the router ~50 us of CPU whatever it
carries and one more command ~15 (bench/README.md, round 7), so under concurrency one pipeline for
what a turn of the event loop asks costs far less than one each; with aggregates on, a read then
mostly rides on a pipeline the records send anyway. A call waits one turn of the loop, no more.

Each call is one command and gets its own answer: a script error of one record fails that record
only. What fails the pipeline (Redis unreachable, writes not confirmed by the replicas) fails
every call in it, as it would have failed each alone; the writer then spools the records (each
carries its nonce, so one that did land is not counted twice when replayed).

The reads only read: the request is counted by record.lua when its record is written (once per
request id, replayed once from a spool), so a read sent again changes nothing."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

# The counters of a unit (record.lua counts requests, reward.lua labels and rewards).
FIELDS = ("n", "ln", "ls", "rn", "rs")
# More than this many calls waiting go out in one pipeline anyway.
MAX_BATCH = 256

# Adds one command to the pipeline being built (gateway.store.replication.ScriptCalls).
Build = Callable[[Any], None]
# Runs a build as one pipeline (ExperimentStore._run_scripted): one answer per command, a
# command's own error in its place.
Run = Callable[[Build], Awaitable[list]]


class TurnCalls:
    def __init__(self, client: Any, run: Run):
        self.client = client
        self.run = run
        self._pending: list[tuple[str | None, Build, asyncio.Future]] = []
        # The flushes under way: the loop keeps only weak references to its tasks.
        self._flushes: set[asyncio.Task] = set()

    async def read_unit(self, key: str) -> list:
        """The unit's counters (FIELDS), raw as Redis answers them."""
        return await self._call(key, lambda calls: calls.execute_command("HMGET", key, *FIELDS))

    async def call(self, build: Build) -> Any:
        """The answer to the one command `build` adds (a script call)."""
        return await self._call(None, build)

    async def _call(self, read_key: str | None, build: Build) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((read_key, build, future))
        if len(self._pending) == 1:
            # The task's first step runs after the callbacks already due this turn, so it takes
            # the calls of every request that got this far together (one turn, no hop more).
            self._start(loop, self._flush_pending())
        elif len(self._pending) >= MAX_BATCH:
            batch, self._pending = self._pending, []
            self._start(loop, self._send(batch))
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop, flush: Any) -> None:
        task = loop.create_task(flush)
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_pending(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            await self._send(batch)

    async def _send(self, batch: list[tuple[str | None, Build, asyncio.Future]]) -> None:
        try:
            if len(batch) == 1 and batch[0][0] is not None:
                # A lone read as a plain command: a pipeline of one costs more on the client.
                results = [await self.client.hmget(batch[0][0], FIELDS)]
            else:
                def build(calls: Any) -> None:
                    for _, add, _ in batch:
                        add(calls)

                results = await self.run(build)
        except asyncio.CancelledError:  # the loop is shutting down: so are its requests
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as err:  # noqa: BLE001 - every waiting call gets the failure
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, _, future), result in zip(batch, results):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
