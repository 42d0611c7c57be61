"""Simulated users over real HTTP: they ask for predictions and send the true label back later,
as a delayed feedback stream. Used by the demo and the benchmarks."""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np


@dataclass
class TrafficStats:
    requests: int = 0
    request_errors: int = 0
    rewards_sent: int = 0
    rewards_accepted: int = 0
    reward_errors: int = 0
    by_variant: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class SimulatedUsers:
    """`rows`/`labels` are the world the users live in; each request takes the next row, and
    its label comes back as feedback after a random delay."""

    url: str
    experiment: str
    rows: list[list]  # may be swapped while running: the world can drift
    labels: np.ndarray
    seed: int = 0
    concurrency: int = 8
    units: int = 2000
    feedback_delay_s: tuple[float, float] = (0.2, 2.0)
    stats: TrafficStats = field(default_factory=TrafficStats)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._next_row = itertools.count()
        self._due: list[tuple[float, int, dict]] = []
        self._seq = itertools.count()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def _user(self, client: httpx.AsyncClient, should_stop: Callable[[], bool]) -> None:
        while not self._stop.is_set() and not should_stop():
            i = next(self._next_row) % len(self.rows)
            body = {"instances": [self.rows[i]], "unit_id": f"user-{i % self.units}"}
            try:
                r = await client.post(f"/v1/experiments/{self.experiment}/predict", json=body)
            except httpx.HTTPError as err:
                self.stats.request_errors += 1
                self.stats.errors.append(f"predict: {type(err).__name__}")
                await asyncio.sleep(0.05)
                continue
            if r.status_code != 200:
                self.stats.request_errors += 1
                self.stats.errors.append(f"predict {r.status_code}: {r.text[:200]}")
                continue
            out = r.json()
            self.stats.requests += 1
            self.stats.by_variant[out["variant"]] = self.stats.by_variant.get(out["variant"], 0) + 1
            delay = float(self._rng.uniform(*self.feedback_delay_s))
            item = {"request_id": out["request_id"], "label": int(self.labels[i]), "token": out["reward_token"]}
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._seq), item))

    async def _send(self, client: httpx.AsyncClient, items: list[dict]) -> None:
        for start in range(0, len(items), 1000):
            chunk = items[start:start + 1000]
            self.stats.rewards_sent += len(chunk)
            try:
                r = await client.post("/v1/rewards", json={"rewards": chunk})
            except httpx.HTTPError as err:
                self.stats.reward_errors += len(chunk)
                self.stats.errors.append(f"rewards: {type(err).__name__}")
                continue
            if r.status_code != 200:
                self.stats.reward_errors += len(chunk)
                self.stats.errors.append(f"rewards {r.status_code}: {r.text[:200]}")
                continue
            body = r.json()
            self.stats.rewards_accepted += body["accepted"]
            self.stats.reward_errors += body["rejected"]

    async def _feedback(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(0.2)
            now = time.monotonic()
            due = []
            while self._due and self._due[0][0] <= now:
                due.append(heapq.heappop(self._due)[2])
            if due:
                await self._send(client, due)

    async def run(self, should_stop: Callable[[], bool]) -> TrafficStats:
        """Send traffic until `should_stop()` or `stop()`; then deliver all pending feedback."""
        limits = httpx.Limits(max_connections=self.concurrency + 2)
        async with httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits) as client:
            feedback = asyncio.create_task(self._feedback(client))
            await asyncio.gather(*(self._user(client, should_stop) for _ in range(self.concurrency)))
            self._stop.set()
            await feedback
            await self._send(client, [item for _, _, item in sorted(self._due)])
            self._due.clear()
        return self.stats


async def poll_state(url: str, experiment: str, client: httpx.AsyncClient | None = None) -> dict[str, Any]:
    own = client is None
    client = client or httpx.AsyncClient(base_url=url, timeout=10)
    try:
        r = await client.get(f"/v1/experiments/{experiment}")
        r.raise_for_status()
        return r.json()
    finally:
        if own:
            await client.aclose()
