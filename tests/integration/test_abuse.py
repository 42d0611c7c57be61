"""Abuse and growth on a real DataPlane and the embedded redis-server, without Ray: a reward
value that would poison the counters, predictions that dodge the per-unit quota, labels of any
length, a history that grows without end, a decision log of huge requests, and a retraining run
that outlives its lock. Each is refused with a clear 4xx or bounded, and changes nothing else."""
from __future__ import annotations

import asyncio
import json

import pytest

from gateway.errors import Unprocessable
from gateway.sim import churn
from gateway.store import experiments, keys
from tests.planes import Clock, env, run, serve, totals  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.integration


def test_a_gaussian_reward_beyond_the_range_is_422_and_the_counters_stay_usable(env):
    plane = env.plane(Clock(), reward={"type": "gaussian"})
    name = plane.experiment_names()[0]
    rows, _ = churn.make_churn(3, seed=21)

    async def scenario():
        await plane.start()
        try:
            served = await serve(plane, rows, prefix="g")
            refused = []
            for value in (1e155, -1e300, 1e12 * 1.5):
                with pytest.raises(Unprocessable) as err:
                    await plane.rewards({"request_id": served[0]["request_id"], "reward": value,
                                         "token": served[0]["reward_token"]})
                refused.append(err.value.code)
            fine = await plane.rewards({"request_id": served[1]["request_id"], "reward": 1e12,
                                        "token": served[1]["reward_token"]})
            await plane.refresh()
            return refused, fine, await totals(plane), await plane.state(name)
        finally:
            await plane.stop()

    refused, (code, body), (n, s), state = run(scenario())
    assert refused == ["invalid_reward"] * 3
    assert (code, body["status"]) == (200, "accepted")
    assert (n, s) == (1, 1e12)
    assert all(v["mean"] is not None for v in state["variants"])


def test_with_a_per_unit_quota_a_prediction_needs_a_unit_id(env):
    plane = env.plane(Clock(), reward={"type": "bernoulli", "max_per_unit": 2})
    name = plane.experiment_names()[0]
    row = churn.make_churn(1, seed=22)[0][0]

    async def scenario():
        await plane.start()
        try:
            with pytest.raises(Unprocessable) as err:
                await plane.predict(name, {"instances": [row]}, "no-unit")
            with_unit = await plane.predict(name, {"instances": [row], "unit_id": "u1"}, "unit")
            snap = (await plane.store.snapshots([name]))[name]
            return err.value, with_unit, sum(c.requests for c in snap.arms.values())
        finally:
            await plane.stop()

    err, with_unit, requests = run(scenario())
    assert err.code == "invalid_unit_id" and "max_per_unit" in err.message
    assert with_unit["variant"] and requests == 1  # the refused one left no record


def test_a_label_longer_than_the_limit_is_422(env):
    plane = env.plane(Clock())
    rows, _ = churn.make_churn(1, seed=23)

    async def scenario():
        await plane.start()
        try:
            (served,) = await serve(plane, rows, prefix="l")
            with pytest.raises(Unprocessable) as err:
                await plane.rewards({"request_id": served["request_id"], "label": "x" * 70_000,
                                     "token": served["reward_token"]})
            return err.value, await totals(plane)
        finally:
            await plane.stop()

    err, (n, _) = run(scenario())
    assert err.code == "invalid_label" and n == 0


def test_the_history_keeps_the_newest_entries_and_is_read_bounded(env, monkeypatch):
    monkeypatch.setattr(experiments, "HISTORY_MAXLEN", 50)
    plane = env.plane(Clock())
    name = plane.experiment_names()[0]

    async def scenario():
        try:
            for i in range(120):
                await plane.store.annotate(name, "note", str(i), {"action": "note", "i": i})
            return await plane.store.history(name), await plane.store.client.llen(keys.history(name))
        finally:
            await plane.store.close()

    history, stored = run(scenario())
    assert stored == 50 and [e["i"] for e in history] == list(range(70, 120))


def test_the_decision_log_is_bounded_by_bytes_as_well_as_entries(env, monkeypatch):
    monkeypatch.setattr(experiments, "DECISION_LOG_BYTES", 1_000_000)
    plane = env.plane(Clock())
    name = plane.experiment_names()[0]
    big = json.dumps([[1.5] * 4] * 2500)  # a 1000-row request's worth of features, ~50 kB

    async def scenario():
        try:
            for i in range(60):
                await plane.store.record_prediction(name, f"big{i}", "logreg", {"t": "1"}, 60,
                                                    {"rid": f"big{i}", "x": big})
            return await plane.store.client.xlen(keys.decision_log(name))
        finally:
            await plane.store.close()

    kept = run(scenario())
    # Entries of ~50 kB under a 1 MB budget: about 20 kept (twice the budget at most).
    assert kept <= 2 * 1_000_000 // len(big)


def test_a_retraining_run_longer_than_its_lock_keeps_it_and_frees_only_its_own(env):
    started, finished = asyncio.Event(), []

    async def slow_retrainer(experiment: str, trigger: str) -> dict:
        started.set()
        await asyncio.sleep(5.0)  # longer than the 1.8 s lock below
        finished.append(trigger)
        return {"outcome": "skipped"}

    plane = env.plane(Clock())
    plane.upkeep.retrainer = slow_retrainer
    plane.upkeep.retrain_lock_s = 1.8  # renewed every third: a stall over 1.2 s would lose it
    name = plane.experiment_names()[0]

    async def scenario():
        await plane.start()
        try:
            first = asyncio.create_task(plane.retrain_now(name))
            await started.wait()
            await asyncio.sleep(3.0)  # past the lock's first ttl: it must have been renewed
            second = await plane.store.claim_retrain(name, 0, 10, "someone-else")
            stolen = await plane.store.release_retrain(name, "someone-else")
            await first
            free_after = await plane.store.claim_retrain(name, 0, 10, "next")
            return second, stolen, free_after
        finally:
            await plane.stop()

    second, stolen, free_after = run(scenario())
    assert (second, stolen) == (False, False)
    assert finished == ["admin"] and free_after is True
