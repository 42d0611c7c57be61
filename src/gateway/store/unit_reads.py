"""Per-unit aggregate reads (unit.lua) of requests that arrive together, sent as one pipeline:
the read is on the request path, and under concurrency one round trip for many requests costs
far less than one each (bench/learning.py --world unit-signal measures it). A lone request
waits one turn of the event loop, no more."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import NoScriptError

# More than this many reads waiting go out in one pipeline anyway.
MAX_BATCH = 256


class UnitReads:
    def __init__(self, client: Any, sha: Callable[[], Awaitable[str]], reload: Callable[[], Awaitable[None]]):
        self.client = client
        self._sha, self._reload = sha, reload
        self._pending: list[tuple[str, str, asyncio.Future]] = []

    async def read(self, key: str, ttl: str) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((key, ttl, future))
        if len(self._pending) == 1:
            loop.call_soon(lambda: loop.create_task(self._flush()))
        elif len(self._pending) >= MAX_BATCH:
            loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            results = await self._send(batch)
            if any(isinstance(r, NoScriptError) for r in results):  # a restarted server forgot them
                await self._reload()
                results = await self._send(batch)
        except Exception as err:  # noqa: BLE001 - every waiting request gets the failure
            for *_, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for (*_, future), result in zip(batch, results):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _send(self, batch: list[tuple[str, str, asyncio.Future]]) -> list:
        sha = await self._sha()
        pipe = self.client.pipeline(transaction=False)
        for key, ttl, _ in batch:
            pipe.execute_command("EVALSHA", sha, 1, key, ttl)
        return await pipe.execute(raise_on_error=False)
