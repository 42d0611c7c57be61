"""Variant health, per router replica: a circuit breaker that takes a failing variant out of
rotation, and the guardrail check that rolls a misbehaving champion back. Pure: outcomes and a
clock in, verdicts out."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from gateway.policy import Guardrails

# Consecutive failures that open the breaker, and how long it stays open before one trial call.
BREAKER_FAILURES = 5
BREAKER_COOLDOWN_S = 10.0
# Outcomes kept per variant for error rate and p99, and the fewest before a guardrail may act.
WINDOW = 200
MIN_REQUESTS = 20


@dataclass
class VariantHealth:
    outcomes: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # (ok, latency_s)
    consecutive_failures: int = 0
    open_until: float = 0.0
    trial_in_flight: bool = False

    def record(self, ok: bool, latency_s: float, now: float) -> None:
        self.outcomes.append((ok, latency_s))
        self.trial_in_flight = False
        if ok:
            self.consecutive_failures = 0
            self.open_until = 0.0
        else:
            self.consecutive_failures += 1
            if self.consecutive_failures >= BREAKER_FAILURES:
                self.open_until = now + BREAKER_COOLDOWN_S

    def available(self, now: float) -> bool:
        """Closed, or half-open with no trial call under way."""
        if self.open_until <= 0.0:
            return True
        if now < self.open_until:
            return False
        return not self.trial_in_flight

    def begin_call(self, now: float) -> None:
        if self.open_until > 0.0 and now >= self.open_until:
            self.trial_in_flight = True

    def abandon_trial(self) -> None:
        """A call ended with no verdict on the variant (overload, cancelled): a half-open
        breaker lets the next call be its trial instead of staying shut for good."""
        self.trial_in_flight = False

    @property
    def breaker_open(self) -> bool:
        return self.open_until > 0.0

    def stats(self) -> dict[str, float | int | None]:
        n = len(self.outcomes)
        streak = {"consecutive_failures": self.consecutive_failures, "breaker_open": self.breaker_open}
        if n == 0:
            return {"requests": 0, "error_rate": None, "p99_ms": None, **streak}
        ok = np.fromiter((o for o, _ in self.outcomes), dtype=bool, count=n)
        lat = np.fromiter((t for _, t in self.outcomes), dtype=float, count=n)
        return {
            "requests": n,
            "error_rate": float(1.0 - ok.mean()),
            "p99_ms": float(np.percentile(lat, 99) * 1000.0),
            **streak,
        }


def breach(health: VariantHealth, rails: Guardrails) -> str | None:
    """Why the variant breaks its guardrails, or None (also None while evidence is thin)."""
    s = health.stats()
    if health.breaker_open:
        return f"circuit breaker open after {health.consecutive_failures} consecutive failures"
    if s["requests"] < MIN_REQUESTS:
        return None
    if s["error_rate"] > rails.max_error_rate:
        return f"error rate {s['error_rate']:.3f} over the last {s['requests']} requests exceeds {rails.max_error_rate}"
    if s["p99_ms"] > rails.max_p99_latency_ms:
        return f"p99 latency {s['p99_ms']:.1f} ms over the last {s['requests']} requests exceeds {rails.max_p99_latency_ms} ms"
    return None


def accuracy_breach(window: dict | None, rails: Guardrails) -> str | None:
    """Why the champion's accuracy over its newest labelled feedback breaks the guardrail, or
    None (also None without the guardrail or before min_labels labels)."""
    if rails.min_accuracy is None or not window or window.get("accuracy") is None:
        return None
    if window["n"] < rails.min_labels or window["accuracy"] >= rails.min_accuracy:
        return None
    return f"accuracy {window['accuracy']:.3f} over the last {window['n']} labels is below {rails.min_accuracy}"


def renormalise(shares: dict[str, float], usable: set[str]) -> dict[str, float]:
    """Shares restricted to the usable variants, summing to 1; uniform over them when they
    had no share (a champion's breaker opened); empty if none is usable."""
    kept = {v: w for v, w in shares.items() if v in usable}
    total = sum(kept.values())
    if total > 0:
        return {v: w / total for v, w in kept.items() if w > 0}
    return {v: 1.0 / len(kept) for v in kept} if kept else {}
