"""Client load for the node-loss test: threads that predict and reward through HTTP as a careful
client does, retrying a call that failed in transit or was answered 5xx, and keeping count of
what the gateway acknowledged. A reward answered "accepted", "duplicate" or (202) "queued" is
acknowledged: the gateway holds it (a retry of a reward whose first answer was lost comes back
"duplicate"; a queued one is in a router's spool while Redis is away)."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.integration.conftest import ROW

RETRY_STATUS = {500, 502, 503, 504}
ACKED = ("accepted", "duplicate", "queued")


@dataclass
class Tally:
    predictions: int = 0  # asked for
    predicted: int = 0  # answered 200, retries included
    first_try_failed: int = 0  # needed a retry (or never succeeded)
    retries: int = 0
    acked: set[str] = field(default_factory=set)  # request ids whose reward the gateway acknowledged
    rewards_sent: int = 0
    rewards_unacked: int = 0  # sent, never acknowledged within the retries: may or may not count
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> dict[str, Any]:
        return {"predictions": self.predictions, "predicted": self.predicted,
                "success": self.predicted / max(self.predictions, 1), "first_try_failed": self.first_try_failed,
                "retries": self.retries, "rewards_sent": self.rewards_sent, "rewards_acked": len(self.acked),
                "rewards_unacked": self.rewards_unacked}


def call(client: httpx.Client, path: str, body: dict, attempts: int = 10, backoff_s: float = 0.2
         ) -> tuple[httpx.Response | None, int]:
    """POST with retries on transport errors and 5xx; (last response or None, tries made)."""
    response = None
    for attempt in range(1, attempts + 1):
        try:
            response = client.post(path, json=body)
            if response.status_code not in RETRY_STATUS:
                return response, attempt
        except httpx.TransportError:
            response = None
        time.sleep(min(backoff_s * 2 ** (attempt - 1), 2.0))
    return response, attempts


def client_loop(url: str, stop: threading.Event, seed: int, tally: Tally, experiment: str = "churn") -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            body = {"instances": [ROW], "unit_id": f"u{rng.randrange(10_000)}"}
            r, tries = call(c, f"/v1/experiments/{experiment}/predict", body)
            ok = r is not None and r.status_code == 200
            with tally.lock:
                tally.predictions += 1
                tally.predicted += ok
                tally.first_try_failed += tries > 1 or not ok
                tally.retries += tries - 1
            if not ok:
                continue
            p = r.json()
            reward = {"request_id": p["request_id"], "reward": float(rng.random() < 0.5), "token": p["reward_token"]}
            r, tries = call(c, "/v1/rewards", reward)
            acked = r is not None and r.status_code in (200, 202) and r.json().get("status") in ACKED
            with tally.lock:
                tally.rewards_sent += 1
                tally.retries += tries - 1
                if acked:
                    tally.acked.add(p["request_id"])
                else:
                    tally.rewards_unacked += 1


class Load:
    """`threads` clients, each seeded, until stopped."""

    def __init__(self, url: str, threads: int = 4, seed: int = 14):
        self.tally = Tally()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=client_loop, args=(url, self.stopping, seed + i, self.tally), daemon=True)
                        for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(60)
