"""Shadow traffic on a real DataPlane (embedded redis-server, real churn models, no Ray): a shadow
variant's answer is never returned and never delays the client, it is scored against labels
exactly as the served variant is, the queue is bounded, the sample is reproducible, an operator
can move a variant in and out of shadow, and shadow first graduates a better challenger and
retires a worse one with the evidence in the history."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from gateway.dataplane.control import Control
from gateway.dataplane.shadow import mirrored
from gateway.errors import Conflict
from gateway.schemas import AdminRequest
from gateway.sim import churn
from gateway.store import keys
from gateway.store.spool import Spool
from tests.planes import BASE, Clock, Env, env, run, serve  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.integration

SHADOWED = [{**BASE["variants"][0]}, {**BASE["variants"][1], "role": "shadow"}]


class Gate:
    """Holds a variant's calls until opened: a model slower than any client would wait for."""

    def __init__(self, inner):
        self.inner = inner
        self.open = asyncio.Event()
        self.calls = 0

    async def predict(self, matrix, carrier):
        self.calls += 1
        await self.open.wait()
        return await self.inner.predict(matrix, carrier)


def gated(name: str, holder: dict):
    def wrap(variants: dict) -> dict:
        holder["gate"] = variants[name] = Gate(variants[name])
        return variants

    return wrap


async def label(plane, served: list[dict], labels) -> list:
    return [(await plane.rewards({"request_id": p["request_id"], "label": int(y), "token": p["reward_token"]}))[1]["status"]
            for p, y in zip(served, labels)]


def test_a_shadow_answer_is_never_returned_and_never_delays_the_client(env):
    holder: dict = {}
    plane = env.plane(Clock(), variants=SHADOWED, wrap=gated("xgb", holder))
    name = plane.experiment_names()[0]
    rows, _ = churn.make_churn(20, seed=11)

    async def scenario():
        await plane.start()
        try:
            # The shadow model never answers while these are served: each answer comes anyway.
            served = await asyncio.wait_for(serve(plane, rows), timeout=30)
            records_before = [await plane.store.client.hgetall(keys.request(name, p["request_id"])) for p in served]
            holder["gate"].open.set()
            await plane.shadow.drain()
            records = [await plane.store.client.hgetall(keys.request(name, p["request_id"])) for p in served]
            log = await plane.store.shadow_answers(name, 100)
            state = await plane.state(name)
            return served, records_before, records, log, state
        finally:
            await plane.stop()

    served, before, records, log, state = run(scenario())
    direct = env.variants["logreg"]
    assert {p["variant"] for p in served} == {"logreg"}
    assert all(p["propensity"] == 1.0 for p in served)
    for p, row in zip(served, rows):
        assert "xgb" not in json.dumps(p)
        assert p["predictions"] == direct.payload(*direct.predict_rows(plane.encode(plane.runtime(name), [row])))["predictions"]
    # Copies are gathered for shadow.batch_wait_s and answered in stacked calls, not one call each.
    assert 1 <= holder["gate"].calls <= 10
    assert not any(k.startswith("sh:") for r in before for k in r)  # nothing waited for the shadow
    xgb = env.variants["xgb"]
    for p, row, record in zip(served, rows, records):
        expected = xgb.predict_rows(plane.encode(plane.runtime(name), [row]))[0].tolist()
        assert json.loads(record["sh:xgb"]) == expected
    assert sorted(e["rid"] for e in log) == sorted(p["request_id"] for p in served)
    roles = {v["name"]: v["role"] for v in state["variants"]}
    assert roles == {"logreg": "arm", "xgb": "shadow"}
    shadow_row = next(v for v in state["variants"] if v["name"] == "xgb")
    assert shadow_row["traffic_share"] == 0.0 and shadow_row["prob_best"] is None and shadow_row["requests"] == 0


def test_labels_score_the_shadow_exactly_as_the_served_variant_even_when_they_come_first(env):
    holder: dict = {}
    plane = env.plane(Clock(), variants=SHADOWED, wrap=gated("xgb", holder), monitoring={"window": 50})
    name = plane.experiment_names()[0]
    rows, y = churn.make_churn(120, seed=12)

    async def scenario():
        await plane.start()
        try:
            served = await serve(plane, rows)
            # The first 20 labels come before the shadow has answered; the rest after.
            early = await label(plane, served[:20], y[:20])
            holder["gate"].open.set()
            await plane.shadow.drain()
            late = await label(plane, served[20:100], y[20:100])
            # Rewards sent with their labels are the client's own measure: the shadow earns none.
            explicit = [(await plane.rewards({"request_id": p["request_id"], "label": int(t), "reward": 1.0,
                                              "token": p["reward_token"]}))[1]["status"]
                        for p, t in zip(served[100:], y[100:])]
            await plane.monitor_now()
            await plane.refresh()
            return (early + late + explicit, await plane.state(name), await plane.store.paired_counts(name),
                    await plane.store.shadow_rewards(name))
        finally:
            await plane.stop()

    statuses, state, paired, earned = run(scenario())
    assert statuses == ["accepted"] * 120
    rt_encode = plane.encode(plane.runtime(name), rows)
    live_pred = env.variants["logreg"].predict_rows(rt_encode)[0]
    shadow_pred = env.variants["xgb"].predict_rows(rt_encode)[0]
    y = np.asarray(y)
    for variant, pred in (("logreg", live_pred), ("xgb", shadow_pred)):
        lifetime = state["kpis"][variant]["lifetime"]
        assert lifetime["n"] == 120
        assert lifetime["accuracy"] == pytest.approx(accuracy_score(y, pred))
        assert lifetime["precision"] == pytest.approx(precision_score(y, pred, zero_division=0))
        assert lifetime["recall"] == pytest.approx(recall_score(y, pred, zero_division=0))
        assert lifetime["f1"] == pytest.approx(f1_score(y, pred, zero_division=0))
        window = state["kpis"][variant]["window"]
        assert window["n"] == 50
        assert window["accuracy"] == pytest.approx(accuracy_score(y[-50:], pred[-50:]))
    live_ok, shadow_ok = live_pred == y, shadow_pred == y
    assert paired[("xgb", "logreg")] == {
        "sw": int(np.sum(shadow_ok & ~live_ok)), "lw": int(np.sum(live_ok & ~shadow_ok)), "n": 120,
    }
    # What the shadow would have earned where the reward came from the label, labels first or not.
    right = int(np.sum(shadow_ok[:100]))
    assert earned == {"xgb": {"n": 100, "s": right, "ss": right}}


def test_the_queue_is_bounded_and_the_sample_follows_the_request_id(env):
    holder: dict = {}
    plane = env.plane(Clock(), variants=SHADOWED, wrap=gated("xgb", holder),
                      shadow={"fraction": 1.0, "queue": 2, "concurrency": 1, "batch_wait_s": 0})
    name = plane.experiment_names()[0]
    rows, _ = churn.make_churn(10, seed=13)

    async def scenario():
        await plane.start()
        try:
            served = await serve(plane, rows)
            await asyncio.sleep(0)  # the worker takes its first copy
            holder["gate"].open.set()
            await plane.shadow.drain()
            return served, [await plane.store.client.hexists(keys.request(name, p["request_id"]), "sh:xgb") for p in served]
        finally:
            await plane.stop()

    served, answered = run(scenario())
    # One copy in the worker's hands and two queued; the other seven were dropped, never waited for.
    assert sum(answered) == 3 and answered[:3] == [True] * 3
    # No gathering (batch_wait_s 0): the worker held the first copy alone at the closed gate, and
    # the two that waited went to the model together.
    assert holder["gate"].calls == 2
    # A hash of the id: the same ids are mirrored everywhere, about `fraction` of them.
    ids = [f"req-{i}" for i in range(20_000)]
    sample = [mirrored(r, 0.1) for r in ids]
    assert sample == [mirrored(r, 0.1) for r in ids]
    # Binomial(20000, 0.1): sd 42; the bound is 6 sd.
    assert abs(sum(sample) - 2000) < 260


def test_copies_left_when_the_gateway_stops_are_counted_as_dropped(env):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from gateway.telemetry.metrics import GatewayMetrics

    reader = InMemoryMetricReader()
    holder: dict = {}
    plane = env.plane(Clock(), variants=SHADOWED, wrap=gated("xgb", holder),
                      shadow={"fraction": 1.0, "queue": 10, "concurrency": 1, "batch_wait_s": 0})
    plane.shadow.metrics = GatewayMetrics(lambda: [], MeterProvider(metric_readers=[reader]).get_meter("test"))
    rows, _ = churn.make_churn(5, seed=15)

    async def scenario():
        await plane.start()
        try:
            await serve(plane, rows)
            await asyncio.sleep(0)  # the worker takes its first copy, and waits at the closed gate
        finally:
            await plane.stop()

    run(scenario())
    counts: dict = {}
    for metric in (m for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics):
        if metric.name == "gateway.shadow.requests":
            for point in metric.data.data_points:
                counts[point.attributes["outcome"]] = counts.get(point.attributes["outcome"], 0) + point.value
    # The copy in the worker's hands and the four queued: none answered, every one counted.
    assert holder["gate"].calls == 1
    assert counts == {"dropped": 5}


def test_an_operator_moves_a_variant_in_and_out_of_shadow(env):
    plane = env.plane(Clock())
    name = plane.experiment_names()[0]
    control = Control(plane)

    async def scenario():
        await plane.start()
        try:
            shadowed = await control.set_role(name, "xgb", "shadow", AdminRequest(reason="watch it first"))
            served = await serve(plane, churn.make_churn(30, seed=14)[0])
            with pytest.raises(Conflict) as last:
                await control.set_role(name, "logreg", "shadow", AdminRequest())
            with pytest.raises(Conflict) as again:
                await control.set_role(name, "xgb", "shadow", AdminRequest())
            live = await control.set_role(name, "xgb", "live", AdminRequest())
            return shadowed, served, last.value, again.value, live
        finally:
            await plane.stop()

    shadowed, served, last, again, live = run(scenario())
    assert {v["name"]: v["role"] for v in shadowed["variants"]}["xgb"] == "shadow"
    assert {p["variant"] for p in served} == {"logreg"}
    assert last.code == "last_variant" and again.code == "already_shadow"
    assert {v["name"]: v["role"] for v in live["variants"]}["xgb"] == "arm"
    assert [h["action"] for h in live["history"]][-2:] == ["shadow", "live"]
    assert live["history"][-2]["reason"] == "watch it first"


def _challenger(env):
    return lambda experiment, variant, sha256: env.variants["xgb"]


@pytest.mark.parametrize("better, on_graduation", [(True, "promote"), (True, "explore"), (False, "promote")],
                         ids=["graduates-and-is-promoted", "graduates-to-explore", "is-retired"])
def test_shadow_first_graduates_a_better_challenger_and_retires_a_worse_one(env, better, on_graduation):
    """Labels are chosen so that one side is right on every row where the two disagree: the
    challenger (graduates) or the live model (retired). A graduate's posterior starts from the
    rewards it earned in shadow, the labels' matches on the requests it answered."""
    clock = Clock()
    plane = env.plane(clock, challenger_client=_challenger(env),
                      retrain={"max_p_value": 0.05, "shadow_first": {"labels": 40, "on_graduation": on_graduation}})
    name = plane.experiment_names()[0]
    rows, _ = churn.make_churn(300, seed=15)

    async def scenario():
        await plane.start()
        try:
            champion = {"name": "xgb2", "path": "unused", "sha256": "0" * 64, "added_at": plane.clock(),
                        "role": "shadow", "shadow_first": True}
            assert await plane.store.add_variant(name, "xgb2", champion, {"action": "challenger_added", "at": 0,
                                                                           "by": "test", "reason": "test"}, plane.clock())
            await plane.store.transition(name, expected_status="*", new_status="promoted", champion="logreg",
                                         entry={"action": "promote", "at": 0, "by": "test", "reason": "test"},
                                         now=plane.clock())
            await plane.refresh()
            served = await serve(plane, rows)
            await plane.shadow.drain()
            matrix = plane.encode(plane.runtime(name), rows)
            live_pred = env.variants["logreg"].predict_rows(matrix)[0]
            shadow_pred = env.variants["xgb"].predict_rows(matrix)[0]
            truth = shadow_pred if better else live_pred
            await label(plane, served[:-40], truth[:-40])
            clock.t += 2  # the router judges shadows once a second
            await plane.refresh()
            await plane.refresh()  # and routes by the verdict
            # Labels of requests it answered in shadow that come after the verdict still count.
            await label(plane, served[-40:], truth[-40:])
            arms = (await plane.store.snapshots([name]))[name].arms
            earned = int(np.sum(shadow_pred == truth))
            return served, await plane.state(name), int(np.sum(live_pred[:-40] != shadow_pred[:-40])), arms, earned
        finally:
            await plane.stop()

    served, state, disagreements, arms, earned = run(scenario())
    assert disagreements >= 10  # enough discordant rows for the test to decide at 5 %
    assert {p["variant"] for p in served} == {"logreg"}  # in shadow, it served no one
    verdicts = [h for h in state["history"] if h["action"] in ("graduate", "retire")]
    assert len(verdicts) == 1
    decision = verdicts[0]
    assert decision["by"] == "shadow_first" and decision["variant"] == "xgb2"
    evidence = decision["evidence"]
    assert evidence["against"] == "logreg" and evidence["paired_rows"] == 260 and evidence["level"] == 0.05
    roles = {v["name"]: v["role"] for v in state["variants"]}
    if better:
        assert decision["action"] == "graduate"
        assert evidence["only_challenger_right"] == disagreements and evidence["only_live_right"] == 0
        assert evidence["e_value_better"] >= 20 and evidence["p_value"] <= 0.05
        # Its 300 shadow answers' rewards (one request, one row each) are now its own: the 260
        # labelled before it went live, and the 40 after.
        assert arms["xgb2"].rewards == 300 and arms["xgb2"].reward_sum == earned
        assert roles["xgb2"] == "arm"
        if on_graduation == "promote":
            assert state["status"] == "promoted" and state["champion"] == "xgb2"
            assert state["history"][-1]["action"] == "promote" and state["history"][-1]["by"] == "shadow_first"
        else:
            assert state["status"] == "exploring" and state["champion"] == "logreg"  # competes for traffic now
            assert state["history"][-1] is decision
    else:
        assert decision["action"] == "retire"
        assert evidence["only_live_right"] == disagreements and evidence["p_value"] == 1.0
        assert evidence["e_value_worse"] >= 20  # retired as soon as it was shown worse
        assert state["status"] == "promoted" and state["champion"] == "logreg"
        assert [h["action"] for h in state["history"]].count("retire") == 1
        assert "xgb2" not in arms or arms["xgb2"].rewards == 0  # a retired shadow's rewards never count


def test_a_request_whose_record_is_spooled_is_not_mirrored(env, tmp_path):
    """While Redis is away a prediction's record goes to the spool: until its replay the shadow's
    answers would find no record (or, under a request id reused meanwhile, the other
    prediction's), so the request is not mirrored. A Redis of its own, to stop."""
    own = Env(tmp_path / "own")
    own.variants = env.variants
    holder: dict = {}
    plane = own.plane(Clock(), variants=SHADOWED, wrap=gated("xgb", holder), spool=Spool(tmp_path / "spool"),
                      shadow={"fraction": 1.0, "batch_wait_s": 0})
    rows, _ = churn.make_churn(2, seed=16)

    async def scenario():
        await plane.start()
        holder["gate"].open.set()
        try:
            await serve(plane, rows[:1], prefix="written")
            await plane.shadow.drain()
            mirrored_while_up = holder["gate"].calls
            own.redis.stop()
            await serve(plane, rows[1:], prefix="spooled")
            await plane.shadow.drain()
            return mirrored_while_up, holder["gate"].calls, plane.spool.pending()
        finally:
            await plane.stop()

    try:
        assert run(scenario()) == (1, 1, 1)
    finally:
        own.redis.stop()
