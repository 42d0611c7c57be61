"""Shadow traffic: copies of live requests answered by the experiment's shadow variants off the
request path. A request is mirrored when a hash of its id falls below `shadow.fraction` (the same
requests on every replica, and again on a replay); copies wait in a bounded queue per experiment
and are dropped, and counted, when it is full, so a slow shadow model never delays a client or
grows memory. Each answer is recorded once on the request's record and in the shadow log; the
label, whenever it comes, scores it exactly as it scores the served variant (the store's scripts)."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gateway.dataplane.runtime import ExperimentRuntime, Experiments
from gateway.store.experiments import ExperimentStore
from gateway.store.writer import STORE_DOWN
from gateway.telemetry.metrics import GatewayMetrics

log = logging.getLogger("gateway.shadow")

# Copies answered by one model call at most: a full queue at 100% copies is answered in a few
# calls a second (a call costs far more than a row), and one call of this many rows stays short.
BATCH_MAX = 256
# And rows: a batch takes no more copies once it has this many (copies of many-row requests).
BATCH_ROWS = 1024


def mirrored(request_id: str, fraction: float) -> bool:
    """Whether this request is copied to the shadow variants: reproducible from its id alone."""
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, person=b"gw-shadow").digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


@dataclass(frozen=True)
class ShadowCopy:
    experiment: str
    request_id: str
    variants: tuple[str, ...]
    matrix: np.ndarray
    carrier: dict[str, str]


class ShadowMirror:
    def __init__(self, experiments: Experiments, store: ExperimentStore, metrics: GatewayMetrics,
                 clock: Callable[[], float]):
        self.experiments = experiments
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self._queues: dict[str, asyncio.Queue[ShadowCopy]] = {}
        self._workers: list[asyncio.Task] = []
        self._stopped = False

    def offer(self, rt: ExperimentRuntime, request_id: str, matrix: np.ndarray, carrier: dict[str, str]) -> bool:
        """Queue a copy of a served request for the shadow variants, if it is sampled; never waits."""
        shadows = rt.shadows
        spec = rt.policy.shadow
        if self._stopped or not shadows or not mirrored(request_id, spec.fraction):
            return False
        name = rt.policy.experiment
        queue = self._queues.get(name)
        if queue is None:
            queue = self._start(name, spec.queue, spec.concurrency, spec.batch_wait_s)
        try:
            queue.put_nowait(ShadowCopy(name, request_id, shadows, matrix, carrier))
        except asyncio.QueueFull:
            self._count_dropped([ShadowCopy(name, request_id, shadows, matrix, carrier)])
            return False
        return True

    def _start(self, name: str, size: int, concurrency: int, wait_s: float) -> asyncio.Queue[ShadowCopy]:
        queue: asyncio.Queue[ShadowCopy] = asyncio.Queue(maxsize=size)
        self._queues[name] = queue
        loop = asyncio.get_running_loop()
        # One worker gathers a batch at a time, so copies pile into one batch instead of being
        # shared out one each among idle workers; the others answer earlier batches meanwhile.
        gathering = asyncio.Lock()
        self._workers += [loop.create_task(self._work(queue, gathering, wait_s)) for _ in range(concurrency)]
        return queue

    async def drain(self) -> None:
        """Wait until every queued copy has been answered (tests, and a graceful stop)."""
        for queue in list(self._queues.values()):
            await queue.join()

    async def stop(self) -> None:
        self._stopped = True  # a request finishing meanwhile must not start workers again
        for task in self._workers:
            task.cancel()
        if self._workers:
            await asyncio.wait(self._workers, timeout=5)
        for queue in self._queues.values():  # copies never answered are dropped, and counted
            while not queue.empty():
                self._count_dropped([queue.get_nowait()])
        self._workers, self._queues = [], {}

    def _count_dropped(self, copies: list[ShadowCopy], variants: list[str] | None = None) -> None:
        """Count copies that no shadow answer will come for (of `variants`, default all theirs)."""
        for copy in copies:
            for v in copy.variants if variants is None else [v for v in variants if v in copy.variants]:
                self.metrics.shadow.add(1, {"experiment": copy.experiment, "variant": v, "outcome": "dropped"})

    async def _work(self, queue: asyncio.Queue[ShadowCopy], gathering: asyncio.Lock, wait_s: float) -> None:
        while True:
            # The copies that arrive within wait_s of the first are answered together: one model
            # call on their stacked rows and one round trip to record them cost much less than
            # one each (a model's cost per call dwarfs its cost per row).
            async with gathering:
                batch = [await queue.get()]
                if wait_s > 0 and queue.qsize() < BATCH_MAX - 1:
                    await asyncio.sleep(wait_s)
                rows = len(batch[0].matrix)
                while len(batch) < BATCH_MAX and rows < BATCH_ROWS and not queue.empty():
                    batch.append(queue.get_nowait())
                    rows += len(batch[-1].matrix)
            try:
                variants = list(dict.fromkeys(v for copy in batch for v in copy.variants))
                for k, variant in enumerate(variants):
                    copies = [c for c in batch if variant in c.variants]
                    try:
                        outcomes = await self._answer(copies, variant)
                    except asyncio.CancelledError:  # stopping: the rest of this batch goes unanswered
                        self._count_dropped(batch, variants[k:])
                        raise
                    except Exception:  # the worker must outlive any one batch (a script error, a bad answer)
                        log.exception("shadow %s of %s: answers not recorded", variant, copies[0].experiment)
                        outcomes = ["failed"] * len(copies)
                    # One add per outcome, not per copy: a batch mostly has a single outcome.
                    for outcome, count in Counter(outcomes).items():
                        self.metrics.shadow.add(count, {"experiment": copies[0].experiment, "variant": variant,
                                                        "outcome": outcome})
            finally:
                for _ in batch:
                    queue.task_done()

    async def _answer(self, copies: list[ShadowCopy], variant: str) -> list[str]:
        """The variant's answer to each copy (all of one experiment), recorded: an outcome each."""
        name = copies[0].experiment
        rt = self.experiments.get(name)
        client = rt.variants.get(variant) if rt else None
        if client is None:
            return ["failed"] * len(copies)
        try:
            matrix = rt.view.select(variant, np.vstack([c.matrix for c in copies]))  # its own columns
            result = await asyncio.wait_for(client.predict(matrix, copies[0].carrier),
                                            rt.policy.shadow.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            # A shadow's failure is its own: it never reaches the client or the live variants' breakers.
            log.warning("shadow %s of %s failed: %s", variant, name, type(err).__name__)
            return ["failed"] * len(copies)
        answers, start = [], 0
        scores = result.get("scores")
        for c in copies:
            rows = slice(start, start + len(c.matrix))
            start = rows.stop
            answers.append((c.request_id, variant, json.dumps(result["predictions"][rows]),
                            None if scores is None else json.dumps(scores[rows])))
        try:
            return await self.store.record_shadows(name, answers, self.clock())
        except STORE_DOWN:
            return ["store_unavailable"] * len(copies)
