"""A half-open circuit breaker whose trial call ends with no verdict (the caller went away, or
the variant was at capacity) lets a later call be the trial: it never stays shut for good.
A real DataPlane, the embedded redis-server, a real model and a real incompatible one (every
call fails), both loaded in-process; the clock is the one fake."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import yaml

from gateway.dataplane import DataPlane
from gateway.errors import Unavailable
from gateway.decisions.guardrails import BREAKER_COOLDOWN_S, BREAKER_FAILURES
from gateway.policy import load_policy_file
from gateway.serving.variant import LoadedVariant
from gateway.sim import churn
from gateway.store.embedded import EmbeddedRedis
from gateway.store.experiments import ExperimentStore
from gateway.dataplane.tokens import RewardTokens
from tests.integration.conftest import write_incompatible_model
from tests.planes import BASE, Clock, run
from tests.models import loaded_variants

pytestmark = pytest.mark.integration


class AtCapacity:
    """The broken variant behind a queue that can be full: a stand-in for Ray Serve's
    BackPressureError, which the router's HandleClient turns into this same Unavailable."""

    def __init__(self, variant: LoadedVariant):
        self.variant = variant
        self.full = False

    async def predict(self, matrix, carrier):
        if self.full:
            raise Unavailable("the variant is at capacity (max_queued_requests); retry shortly", code="overloaded")
        return await self.variant.predict(matrix, carrier)


def trial_plane(tmp_path, clock: Clock) -> tuple[DataPlane, AtCapacity, EmbeddedRedis]:
    write_incompatible_model(tmp_path / "models" / "trial-broken.skops")
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump({**BASE, "experiment": "trial", "variants": [
        {"name": "ok", "model": "models/trial-ok.skops", "train": "logistic_regression"},
        {"name": "broken", "model": "models/trial-broken.skops"}]}))
    policy = load_policy_file(path)
    variants = loaded_variants(policy, path, tmp_path / "state")
    queue = variants["broken"] = AtCapacity(variants["broken"])
    redis = EmbeddedRedis(tmp_path / "redis").start()
    plane = DataPlane({"trial": policy}, ExperimentStore.from_url(redis.url), {"trial": variants},
                      RewardTokens("t" * 32), clock=clock, rng=np.random.default_rng(11))
    return plane, queue, redis


def test_a_trial_call_without_a_verdict_does_not_leave_the_breaker_open_forever(tmp_path):
    clock = Clock()
    plane, queue, redis = trial_plane(tmp_path, clock)
    row = churn.make_churn(1, seed=2)[0][0]
    served = iter(range(10**6))

    async def predict() -> str:
        try:
            return (await plane.predict("trial", {"instances": [row]}, f"r{next(served)}"))["variant"]
        except Unavailable as err:
            return err.code

    async def scenario():
        await plane.start()
        try:
            outcomes = []
            while outcomes.count("variant_unavailable") < BREAKER_FAILURES:
                outcomes.append(await predict())
            opened = [await predict() for _ in range(20)]
            clock.t += BREAKER_COOLDOWN_S + 1  # half-open: the next call to 'broken' is its trial
            queue.full = True
            trial = []
            while "overloaded" not in trial:
                trial.append(await predict())
            queue.full = False
            after = [await predict() for _ in range(60)]
            return opened, trial, after
        finally:
            await plane.stop()

    try:
        opened, trial, after = run(scenario())
    finally:
        redis.stop()
    assert set(opened) == {"ok"}
    # The trial ended with no verdict: a later call tries 'broken' again (fails, and the breaker
    # opens anew) instead of no call ever reaching it.
    assert "variant_unavailable" in after
    assert after[-20:] == ["ok"] * 20


def test_calls_to_a_named_version_do_not_count_toward_its_breaker_or_guardrails(tmp_path):
    """Named-version infers are outside the experiment and need no credentials: if their
    failures counted, anyone could open a champion's breaker and force a rollback."""
    clock = Clock()
    plane, _, redis = trial_plane(tmp_path, clock)
    matrix = plane.encode(plane.experiments["trial"], [churn.make_churn(1, seed=2)[0][0]])

    async def scenario():
        await plane.start()
        try:
            for _ in range(3 * BREAKER_FAILURES):
                with pytest.raises(Unavailable):
                    await plane.predict_variant("trial", "broken", matrix)
            return plane._health("trial", "broken").stats()
        finally:
            await plane.stop()

    try:
        stats = run(scenario())
    finally:
        redis.stop()
    assert stats["requests"] == 0 and not stats["breaker_open"]


class Stalled:
    """A variant that never answers (a wedged replica)."""

    async def predict(self, matrix, carrier):
        await asyncio.Event().wait()


def test_a_variant_that_does_not_answer_in_time_is_a_503_that_counts_against_it(tmp_path):
    clock = Clock()
    plane, _, redis = trial_plane(tmp_path, clock)
    plane.experiments["trial"].variants["broken"] = Stalled()
    plane.variant_timeout_s = 0.05
    matrix = plane.encode(plane.experiments["trial"], [churn.make_churn(1, seed=2)[0][0]])
    row = churn.make_churn(1, seed=2)[0][0]

    async def scenario():
        await plane.start()
        try:
            with pytest.raises(Unavailable) as named:
                await plane.predict_variant("trial", "broken", matrix)
            routed = []
            for i in range(40):
                try:
                    routed.append((await plane.predict("trial", {"instances": [row]}, f"t{i}"))["variant"])
                except Unavailable as err:
                    routed.append(err.message)
            return named.value, routed, plane._health("trial", "broken").stats()
        finally:
            await plane.stop()

    try:
        named, routed, stats = run(scenario())
    finally:
        redis.stop()
    assert named.message == "variant 'broken' timed out; retry the request" and named.status == 503
    assert "variant 'broken' timed out; retry the request" in routed and "ok" in routed
    assert stats["requests"] >= 1
