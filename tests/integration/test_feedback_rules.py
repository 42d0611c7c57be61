"""Feedback rules and model monitoring on a real DataPlane, the embedded redis-server and real
models (trained from the churn generator, loaded as in a variant replica), without Ray. The
clock is the one fake: reward windows are hours long in production.

Covers: the default reward after the window and late feedback (kept, not learned); the per-unit
reward quota and a poisoning attack it defeats; online KPIs (checked against scikit-learn);
drift (PSI) with its alarm in the history; the accuracy guardrail."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from gateway.errors import NotFound, TooManyRequests
from gateway.sim import churn
from tests.planes import Clock, Env, env, run, serve, totals  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.integration


def test_the_default_reward_applies_after_the_window_and_late_feedback_is_kept_not_learned(env):
    clock = Clock()
    plane = env.plane(clock, reward={"type": "bernoulli", "window_s": 60, "default": 0})
    rows, _ = churn.make_churn(10, seed=1)

    async def scenario():
        await plane.start()
        try:
            served = await serve(plane, rows)
            on_time = [await plane.rewards({"request_id": p["request_id"], "reward": 1, "token": p["reward_token"]})
                       for p in served[:3]]
            clock.t += 61
            await plane.refresh()  # the sweeper gives the other 7 the default
            late = await plane.rewards({"request_id": served[3]["request_id"], "reward": 1, "label": 1,
                                        "token": served[3]["reward_token"]})
            again = await plane.rewards({"request_id": served[3]["request_id"], "reward": 1,
                                         "token": served[3]["reward_token"]})
            feedback = await plane.store.recent_feedback(plane.experiment_names()[0], 100)
            clock.t += 60  # two windows after serving: the request is gone
            with pytest.raises(NotFound):
                await plane.rewards({"request_id": served[4]["request_id"], "reward": 1,
                                     "token": served[4]["reward_token"]})
            return served, on_time, late, again, feedback, await totals(plane)
        finally:
            await plane.stop()

    served, on_time, late, again, feedback, (n, s) = run(scenario())
    assert [r[1]["status"] for r in on_time] == ["accepted"] * 3
    assert late[1]["status"] == "late"
    assert again[1]["status"] == "duplicate"
    assert n == 10  # 3 rewards + 7 defaults
    assert s == 3.0  # the late 1 was not learned
    late_entry = feedback[served[3]["request_id"]]
    assert late_entry["late"] == "1" and json.loads(late_entry["label"]) == 1  # kept for retraining


def test_a_reward_after_the_deadline_takes_the_default_even_before_the_sweeper_runs(env):
    clock = Clock()
    plane = env.plane(clock, reward={"type": "bernoulli", "window_s": 60, "default": 0})
    rows, _ = churn.make_churn(1, seed=2)

    async def scenario():
        await plane.start()
        try:
            (p,) = await serve(plane, rows)
            clock.t += 61
            answer = await plane.rewards({"request_id": p["request_id"], "reward": 1, "token": p["reward_token"]})
            return answer, await totals(plane)
        finally:
            await plane.stop()

    (_, body), (n, s) = run(scenario())
    assert body["status"] == "late"
    assert (n, s) == (1, 0.0)


def test_without_a_default_a_request_without_feedback_never_counts(env):
    clock = Clock()
    plane = env.plane(clock, reward={"type": "bernoulli", "window_s": 60})
    rows, _ = churn.make_churn(5, seed=3)

    async def scenario():
        await plane.start()
        try:
            await serve(plane, rows)
            clock.t += 600
            await plane.refresh()
            return await totals(plane)
        finally:
            await plane.stop()

    assert run(scenario()) == (0, 0.0)


def test_the_per_unit_quota_refuses_rewards_beyond_it_with_429_and_changes_nothing(env):
    clock = Clock()
    plane = env.plane(clock, reward={"type": "bernoulli", "max_per_unit": 2})
    rows, _ = churn.make_churn(4, seed=4)

    async def scenario():
        await plane.start()
        try:
            heavy = await serve(plane, rows, unit="u-heavy", prefix="h")
            other = await serve(plane, rows[:1], unit="u-other", prefix="o")
            batch = await plane.rewards({"rewards": [
                {"request_id": p["request_id"], "reward": 1, "token": p["reward_token"]} for p in heavy
            ]})
            with pytest.raises(TooManyRequests):
                await plane.rewards({"request_id": heavy[3]["request_id"], "reward": 1, "token": heavy[3]["reward_token"]})
            single = await plane.rewards({"request_id": other[0]["request_id"], "reward": 1,
                                          "token": other[0]["reward_token"]})
            return batch, single, await totals(plane)
        finally:
            await plane.stop()

    (_, batch), (_, single), (n, _) = run(scenario())
    assert [r["status"] for r in batch["results"]] == ["accepted", "accepted", "rejected", "rejected"]
    assert {r["http_status"] for r in batch["results"][2:]} == {429}
    assert batch["results"][2]["error"]["code"] == "reward_quota_exceeded"
    assert single["status"] == "accepted"
    assert n == 3


def _poisoning_run(env: Env, quota: int | None, seed: int) -> tuple[list[str], str]:
    """2,000 honest units send one request each and reward by the true label (the 'match'
    rule); 100 more units (5% of all) are attackers that send 20 requests each and reward 1
    whenever they got the worse model (logreg) and 0 otherwise. Returns every champion the rule chose (the
    rule runs after every refresh) and the worse variant's name."""
    clock = Clock()
    reward = {"type": "bernoulli", **({"max_per_unit": quota} if quota else {})}
    # The default promotion rule: 500 rewards per variant before any verdict. (With 100, the
    # attackers' first rewards, which all come early, are half of what the rule sees.)
    plane = env.plane(clock, reward=reward, algorithm="top_two_thompson")
    name = plane.experiment_names()[0]
    honest_rows, labels = churn.make_churn(2000, seed=seed)
    attacker_rows, _ = churn.make_churn(100 * 20, seed=seed + 1)
    rng = np.random.default_rng(seed)
    # Interleave honest requests and attacks at random, as they would arrive.
    events = [("h", i) for i in range(2000)] + [("a", i) for i in range(2000)]
    rng.shuffle(events)

    async def scenario() -> list[str]:
        await plane.start()
        champions = []
        try:
            for k, (who, i) in enumerate(events):
                if who == "h":
                    p = await plane.predict(name, {"instances": [honest_rows[i]], "unit_id": f"honest-{i}"}, f"h{i}")
                    item = {"request_id": p["request_id"], "label": int(labels[i]), "token": p["reward_token"]}
                else:
                    p = await plane.predict(name, {"instances": [attacker_rows[i]], "unit_id": f"attacker-{i // 20}"}, f"a{i}")
                    item = {"request_id": p["request_id"], "reward": float(p["variant"] == "logreg"),
                            "token": p["reward_token"]}
                try:
                    await plane.rewards(item)
                except TooManyRequests:
                    pass
                if k % 20 == 0:
                    await plane.refresh()
                    snap = (await plane.store.snapshots([name]))[name]
                    if snap.meta.get("champion"):
                        champions.append(snap.meta["champion"])
            await plane.refresh()
            snap = (await plane.store.snapshots([name]))[name]
            if snap.meta.get("champion"):
                champions.append(snap.meta["champion"])
            return champions
        finally:
            await plane.stop()

    return run(scenario()), "logreg"


def test_poisoning_by_5_percent_of_clients_never_promotes_the_worse_model_under_the_quota(env):
    # The attack is real: without a quota the attackers' volume wins the worse model the traffic.
    unguarded, worse = _poisoning_run(env, quota=None, seed=21)
    assert worse in unguarded
    # With one reward per unit and window, their 100 units weigh as 100 honest ones.
    guarded, worse = _poisoning_run(env, quota=1, seed=21)
    assert worse not in guarded
    assert guarded and guarded[-1] == "xgb"


def test_online_kpis_match_scikit_learn_for_each_variant(env):
    clock = Clock()
    plane = env.plane(clock, monitoring={"window": 50, "min_drift_rows": 20})
    rows, labels = churn.make_churn(150, seed=6)

    async def scenario():
        await plane.start()
        try:
            served = await serve(plane, rows)
            # However a client spells class 0 or 1, it is the same label to every figure.
            spellings = (int, float, bool, lambda v: str(int(v)))
            for i, (p, y) in enumerate(zip(served, labels)):
                label = spellings[i % 4](y)
                await plane.rewards({"request_id": p["request_id"], "label": label, "token": p["reward_token"]})
            await plane.monitor_now()
            return served, await plane.state(plane.experiment_names()[0])
        finally:
            await plane.stop()

    served, state = run(scenario())
    for variant in ("logreg", "xgb"):
        idx = [i for i, p in enumerate(served) if p["variant"] == variant]
        y = labels[idx]
        pred = np.array([served[i]["predictions"][0] for i in idx])
        life = state["kpis"][variant]["lifetime"]
        assert life["n"] == len(idx)
        assert life["accuracy"] == pytest.approx(accuracy_score(y, pred))
        assert life["precision"] == pytest.approx(precision_score(y, pred, zero_division=0))
        assert life["recall"] == pytest.approx(recall_score(y, pred))
        assert life["f1"] == pytest.approx(f1_score(y, pred))
        window = state["kpis"][variant]["window"]
        assert window["n"] == min(50, len(idx))
        assert window["accuracy"] == pytest.approx(accuracy_score(y[-50:], pred[-50:]))
        assert window["precision"] == pytest.approx(precision_score(y[-50:], pred[-50:], zero_division=0))
        assert window["recall"] == pytest.approx(recall_score(y[-50:], pred[-50:], zero_division=0))
        assert window["roc_auc"] is not None  # both models give scores


def test_drift_is_measured_against_the_first_predictions_and_raises_one_alarm(env):
    clock = Clock()
    plane = env.plane(clock, monitoring={"window": 600, "min_drift_rows": 200})
    name = plane.experiment_names()[0]
    before, _ = churn.make_churn(600, seed=8)
    # PSI of two samples of one distribution is about (bins - 1) * (1/n + 1/m): 0.03 here.
    same, _ = churn.make_churn(600, seed=9)
    # Covariate shift: customers stay far longer and pay more than anyone in the reference.
    shifted = [[min(72.0, r[0] + 40), r[1] + 30, r[2], r[3]] for r in churn.make_churn(600, seed=10)[0]]

    async def scenario():
        await plane.start()
        try:
            await serve(plane, before, prefix="b")
            clock.t += 10
            await serve(plane, same, prefix="s")
            await plane.monitor_now()
            stable = (await plane.state(name))["drift"]
            clock.t += 10
            await serve(plane, shifted, prefix="d")
            await plane.monitor_now()
            await plane.monitor_now()  # a second pass over the same drift raises no second alarm
            state = await plane.state(name)
            return stable, state
        finally:
            await plane.stop()

    stable, state = run(scenario())
    assert stable["status"] == "ok" and stable["max_psi"] < 0.1
    drift = state["drift"]
    assert drift["features"]["tenure"] > 0.25 and drift["features"]["monthly_charges"] > 0.25
    assert drift["features"]["plan"] < 0.1  # the plan mix did not move
    alarms = [h for h in state["history"] if h["action"] == "drift_alarm"]
    assert len(alarms) == 1 and alarms[0]["evidence"]["psi"]["tenure"] > 0.25


def test_a_champion_below_the_accuracy_guardrail_is_rolled_back(env):
    clock = Clock()
    plane = env.plane(clock, guardrails={"max_error_rate": 0.5, "max_p99_latency_ms": 60000,
                                         "min_accuracy": 0.9, "min_labels": 50})
    name = plane.experiment_names()[0]
    rows, labels = churn.make_churn(120, seed=12)

    async def scenario():
        await plane.start()
        try:
            await plane.store.transition(name, expected_status="exploring", new_status="promoted", champion="xgb",
                                         entry={"action": "promote", "variant": "xgb", "at": clock.t, "by": "test"},
                                         now=clock.t)
            await plane.refresh()
            served = await serve(plane, rows)
            # Every label contradicts the champion's prediction: its accuracy is 0.
            for p in served:
                await plane.rewards({"request_id": p["request_id"], "label": 1 - p["predictions"][0],
                                     "token": p["reward_token"]})
            await plane.monitor_now()
            await plane.refresh()
            return await plane.state(name)
        finally:
            await plane.stop()

    state = run(scenario())
    rollbacks = [h for h in state["history"] if h["action"] == "rollback"]
    assert len(rollbacks) == 1 and "accuracy" in rollbacks[0]["reason"]
    assert rollbacks[0]["evidence"]["kpis"]["accuracy"] == 0.0
    assert state["champion"] != "xgb"
