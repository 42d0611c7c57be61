"""The in-process model's batcher: requests of one loop turn share a call, each gets its own
answer, a failure reaches every caller of its batch, big batches leave the loop's thread."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gateway.serving.microbatch import MicroBatcher


class Model:
    def __init__(self, fail_on: int | None = None):
        self.calls: list[list[int]] = []
        self.threads: list[int] = []
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        self.threads.append(threading.get_ident())
        if self.fail_on in items:
            raise ValueError(f"bad row {self.fail_on}")
        return [i * 10 for i in items]


def run(coro):
    return asyncio.run(coro)


def test_requests_of_one_turn_share_one_call_and_get_their_own_answers():
    model = Model()

    async def main():
        batcher = MicroBatcher(model, max_batch=64, in_thread=lambda items: False)
        return await asyncio.gather(*(batcher.submit(i) for i in range(5)))

    assert run(main()) == [0, 10, 20, 30, 40]
    assert model.calls == [[0, 1, 2, 3, 4]]


def test_a_request_after_the_call_starts_a_new_batch():
    model = Model()

    async def main():
        batcher = MicroBatcher(model, max_batch=64, in_thread=lambda items: False)
        first = await batcher.submit(1)
        second = await batcher.submit(2)
        return first, second

    assert run(main()) == (10, 20)
    assert model.calls == [[1], [2]]


def test_batches_are_capped():
    model = Model()

    async def main():
        batcher = MicroBatcher(model, max_batch=2, in_thread=lambda items: False)
        return await asyncio.gather(*(batcher.submit(i) for i in range(5)))

    assert run(main()) == [0, 10, 20, 30, 40]
    assert model.calls == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize("in_thread", [False, True])
def test_a_failing_call_fails_every_request_of_its_batch_and_only_those(in_thread):
    model = Model(fail_on=3)

    async def main():
        batcher = MicroBatcher(model, max_batch=2, in_thread=lambda items: in_thread)
        return await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)

    out = run(main())
    assert out[:2] == [0, 10]
    assert all(isinstance(e, ValueError) and "bad row 3" in str(e) for e in out[2:])


def test_a_big_batch_runs_off_the_event_loop_thread():
    model = Model()

    async def main():
        batcher = MicroBatcher(model, max_batch=64, in_thread=lambda items: len(items) > 2)
        await asyncio.gather(*(batcher.submit(i) for i in range(3)))  # big: a thread
        await batcher.submit(9)  # small: on the loop
        return threading.get_ident()

    loop_thread = run(main())
    assert model.threads[0] != loop_thread
    assert model.threads[1] == loop_thread


def test_a_caller_that_gives_up_does_not_disturb_the_others():
    model = Model()

    async def main():
        batcher = MicroBatcher(model, max_batch=64, in_thread=lambda items: False)
        quitter = asyncio.ensure_future(batcher.submit(1))
        stayer = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0)  # both queued
        quitter.cancel()
        return await stayer, quitter.cancelled()

    assert run(main()) == (20, True)


@pytest.mark.parametrize("in_thread", [False, True])
def test_a_model_that_answers_the_wrong_number_fails_the_batch_instead_of_hanging(in_thread):
    async def main():
        batcher = MicroBatcher(lambda items: [1], max_batch=64, in_thread=lambda items: in_thread)
        return await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True), 5)

    out = run(main())
    assert all(isinstance(e, RuntimeError) and "answered 1 of a batch of 3" in str(e) for e in out)


def test_one_big_batch_in_a_thread_at_a_time():
    running, most = 0, 0
    lock = threading.Lock()

    def slow(items):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return items

    async def main():
        batcher = MicroBatcher(slow, max_batch=2, in_thread=lambda items: True)
        return await asyncio.gather(*(batcher.submit(i) for i in range(6)))

    assert run(main()) == list(range(6))
    assert most == 1
