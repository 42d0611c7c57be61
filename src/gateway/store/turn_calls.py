"""The store calls of requests that are under way together, sent as one pipeline: the per-unit
aggregate reads (HMGET of the unit's counters) before the model is called, and the prediction
records (record.lua) after it. In redis-py a round trip costs the router ~50 us of CPU whatever it
carries and one more command ~15 (bench/README.md, round 7), so under concurrency one pipeline for
what a turn of the event loop asks costs far less than one each; with aggregates on, a read then
mostly rides on a pipeline the records send anyway. A call waits one turn of the loop, no more.

Each call is one command and gets its own answer: a script error of one record fails that record
only. Redis unreachable fails every call in the pipeline, as it would have failed each alone;
writes the replicas did not confirm (wait_replicas) fail every record that wrote on that master,
while one refused (its id in use) stays refused. The writer then spools the failed records (each carries
its nonce, so one that did land is not counted twice when replayed).

The reads only read: the request is counted by record.lua when its record is written (once per
request id, replayed once from a spool), so a read sent again changes nothing."""
from __future__ import annotations

import asyncio
import functools
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
    def __init__(self, client: Any, run: Run, reads_apart: bool = False):
        """`reads_apart`: send the reads in a pipeline of their own, when the writes wait for
        replicas to confirm them (wait_replicas): a read must not wait for that, nor fail with it."""
        self.client = client
        self.run = run
        self.reads_apart = reads_apart
        self._pending: list[tuple[str | None, Build, asyncio.Future]] = []
        # The sends under way: the loop keeps only weak references to its tasks.
        self._sends: set[asyncio.Task] = set()

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
            # After the callbacks already due this turn: it takes the calls of every request that
            # got this far together. A callback, not a task's first step: a task cancelled before
            # that step would leave the calls pending, and every later call waiting behind them.
            loop.call_soon(self._take)
        elif len(self._pending) >= MAX_BATCH:
            batch, self._pending = self._pending, []
            self._start(batch)
        return await future

    def _take(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._start(batch)

    def _start(self, batch: list[tuple[str | None, Build, asyncio.Future]]) -> None:
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sends.add(task)
        task.add_done_callback(functools.partial(self._finished, batch))

    def _finished(self, batch: list[tuple[str | None, Build, asyncio.Future]], task: asyncio.Task) -> None:
        self._sends.discard(task)
        for _, _, future in batch:  # a send cancelled before it ran (the loop shutting down)
            future.cancel()

    async def _send(self, batch: list[tuple[str | None, Build, asyncio.Future]]) -> None:
        reads = [item for item in batch if item[0] is not None]
        if reads and (self.reads_apart or len(reads) == len(batch)):
            writes = [item for item in batch if item[0] is None]
            await self._answer(reads, lambda: self._read([key for key, _, _ in reads]))
            if writes:
                await self._answer(writes, lambda: self.run(_together(writes)))
        else:
            await self._answer(batch, lambda: self.run(_together(batch)))

    async def _read(self, unit_keys: list[str]) -> list:
        if len(unit_keys) == 1:  # a lone read as a plain command: a pipeline of one costs more
            return [await self.client.hmget(unit_keys[0], FIELDS)]
        pipe = self.client.pipeline(transaction=False)
        for key in unit_keys:
            pipe.hmget(key, FIELDS)
        return await pipe.execute(raise_on_error=False)

    @staticmethod
    async def _answer(batch: list[tuple[str | None, Build, asyncio.Future]],
                      send: Callable[[], Awaitable[list]]) -> None:
        """Each call its own answer (or error); all of them the failure of the send."""
        try:
            results = await send()
        except asyncio.CancelledError:  # the loop is shutting down: so are its requests
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as err:  # noqa: BLE001 - every waiting call gets the failure
            results = [err] * len(batch)
        if len(results) != len(batch):
            results = [RuntimeError(f"the store answered {len(results)} of {len(batch)} calls")] * len(batch)
        for (_, _, future), result in zip(batch, results):
            if future.done():  # its request went away meanwhile
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


def _together(batch: list[tuple[str | None, Build, asyncio.Future]]) -> Build:
    def build(calls: Any) -> None:
        for _, add, _ in batch:
            add(calls)
    return build
