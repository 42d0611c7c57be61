"""Per-unit aggregate reads (HMGET of the unit's counters) of requests that arrive together, sent
as one pipeline (a lone read as a plain HMGET): the read is on the request path, and under
concurrency one round trip for many requests costs far less than one each (bench/serving.py's
aggregates section measures it). A lone request waits one turn of the event loop, no more.

The reads only read: the request is counted by record.lua when its record is written (once per
request id, replayed once from a spool), so a read sent again changes nothing, and there is no
script for a restarted server to have forgotten."""
from __future__ import annotations

import asyncio
from typing import Any

# The counters of a unit (record.lua counts requests, reward.lua labels and rewards).
FIELDS = ("n", "ln", "ls", "rn", "rs")
# More than this many reads waiting go out in one pipeline anyway.
MAX_BATCH = 256


class UnitReads:
    def __init__(self, client: Any):
        self.client = client
        self._pending: list[tuple[str, asyncio.Future]] = []
        # The flushes under way: the loop keeps only weak references to its tasks.
        self._flushes: set[asyncio.Task] = set()

    async def read(self, key: str) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((key, future))
        if len(self._pending) == 1:
            # The task's first step runs after the callbacks already due this turn, so it takes
            # the reads of every request that arrived together (one turn, without a hop more).
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

    async def _send(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        try:
            if len(batch) == 1:
                # A lone read as a plain command: a pipeline of one costs more on the client.
                results = [await self.client.hmget(batch[0][0], FIELDS)]
            else:
                pipe = self.client.pipeline(transaction=False)
                for key, _ in batch:
                    pipe.hmget(key, FIELDS)
                results = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:  # the loop is shutting down: so are its requests
            for _, future in batch:
                future.cancel()
            raise
        except Exception as err:  # noqa: BLE001 - every waiting request gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, future), result in zip(batch, results):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
