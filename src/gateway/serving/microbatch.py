"""Requests that reach the same model in the same turn of the event loop share one call of it.

What `ray.serve.batch` with no wait does for the in-process model, without its per-batch
bookkeeping: Serve records six metrics and runs a queue task per batch, which cost the router
~40 µs a request over REST and ~130 over gRPC (bench/README.md, where the time goes). gRPC calls
reach it together only because the replica runs several grpc.aio servers, each taking in one call
per turn (api/grpc/server.py). A call with many rows runs in a thread so the loop keeps moving."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class MicroBatcher(Generic[Item, Answer]):
    def __init__(self, call: Callable[[list[Item]], list[Answer]], max_batch: int,
                 in_thread: Callable[[list[Item]], bool]):
        self._call = call
        self._max_batch = max_batch
        self._in_thread = in_thread
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._flush_scheduled = False
        # One big batch in a thread at a time, as ray.serve.batch ran one batch at a time: more
        # would only crowd the cores the event loop needs.
        self._thread_slot: asyncio.Semaphore | None = None
        self._threaded: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Answer:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._waiting.append((item, future))
        if not self._flush_scheduled:
            # After the callbacks already ready in this turn: the requests that arrived together.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._waiting:
            batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
            items = [item for item, _ in batch]
            try:
                threaded = self._in_thread(items)
            except Exception as err:
                self._settle(batch, err)
                continue
            if threaded:
                task = asyncio.get_running_loop().create_task(self._answer_in_thread(items, batch))
                self._threaded.add(task)
                task.add_done_callback(self._threaded.discard)
            else:
                self._settle(batch, lambda: self._call(items))

    async def _answer_in_thread(self, items: list[Item], batch: list[tuple[Item, asyncio.Future[Answer]]]) -> None:
        if self._thread_slot is None:
            self._thread_slot = asyncio.Semaphore(1)
        try:
            async with self._thread_slot:
                answers = await asyncio.to_thread(self._call, items)
        except Exception as err:  # every caller of the batch learns of it
            self._settle(batch, err)
            return
        self._settle(batch, lambda: answers)

    @staticmethod
    def _settle(batch: list[tuple[Item, asyncio.Future[Answer]]],
                outcome: Callable[[], list[Answer]] | BaseException) -> None:
        """Answer every caller of the batch: its own answer, or the batch's error."""
        if not isinstance(outcome, BaseException):
            try:
                answers = list(outcome())
                if len(answers) != len(batch):
                    raise RuntimeError(f"the model answered {len(answers)} of a batch of {len(batch)} requests")
            except Exception as err:
                outcome = err
            else:
                for (_, future), answer in zip(batch, answers):
                    if not future.done():  # a caller that gave up (timeout) has cancelled its own
                        future.set_result(answer)
                return
        for _, future in batch:
            if not future.done():
                future.set_exception(outcome)
