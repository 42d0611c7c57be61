"""Per-unit aggregates, end to end on a real DataPlane (the embedded redis-server, real models, the
real Lua scripts): served as Redis held them before the request, logged with the decision,
updated by the reward script, and read back by training exactly as served (point in time)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from gateway.dataplane import DataPlane
from gateway.dataplane.tokens import RewardTokens
from gateway.learning import aggregates, artifacts
from gateway.learning.retrain import LabelledData
from gateway.learning.views import FeatureView
from gateway.policy import load_policy_file
from gateway.store import keys
from gateway.serving.variant import LoadedVariant
from gateway.sim.churn import FEATURES, make_churn
from gateway.store.experiments import ExperimentStore
from tests.planes import Clock, env, run  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.integration

BASE = [f["name"] for f in FEATURES]
USES = [*BASE, "visits", "churn_rate", "log_visits"]


def policy_dict(name: str) -> dict:
    return {
        "experiment": name,
        "features": FEATURES,
        "aggregates": {"window_s": 3600, "features": [
            {"name": "visits", "kind": "count"}, {"name": "churn_rate", "kind": "mean_label"},
            {"name": "reward_mean", "kind": "mean_reward"}]},
        "derived": [{"name": "log_visits", "op": "log", "of": ["visits"]}],
        "variants": [{"name": "plain", "model": "plain.skops", "features": BASE},
                     {"name": "agg", "model": "agg.ubj", "features": USES}],
        "guardrails": {"max_error_rate": 0.5, "max_p99_latency_ms": 60000},
        "promotion": {"min_samples": 100000},
    }


class Recorder:
    """A variant replica that keeps every matrix it is given."""

    def __init__(self, inner: LoadedVariant):
        self.inner, self.seen, self.fail = inner, [], False

    async def predict(self, matrix, carrier):
        if self.fail:
            raise RuntimeError("the model fell over")
        self.seen.append(np.array(matrix, copy=True))
        return await self.inner.predict(matrix, carrier)


@pytest.fixture(scope="module")
def world(env, tmp_path_factory):
    """The policy file and both models, trained on rows with made-up aggregates."""
    tmp = tmp_path_factory.mktemp("aggregates")
    path = tmp / "agg.yaml"
    path.write_text(yaml.safe_dump(policy_dict("agg")))
    policy = load_policy_file(path)
    rows, y = make_churn(600, seed=9)
    rng = np.random.default_rng(0)
    A = np.column_stack([rng.integers(0, 10, 600), rng.random(600), rng.random(600)]).astype(float)
    view = FeatureView(policy)
    refs = {}
    for name, algo, suffix, names in (("plain", "logistic_regression", "skops", BASE), ("agg", "xgboost", "ubj", USES)):
        model = artifacts.train(algo, view.matrix(names, rows, A), y)
        file = tmp / f"{name}.{suffix}"
        refs[name] = {"experiment": "agg", "variant": name, "path": str(file), "sha256": artifacts.save_model(model, file)}
    return tmp, refs


def plane_for(env, world, name: str, clock: Clock, **changes) -> tuple[DataPlane, dict[str, Recorder]]:
    """`changes`: policy fields to set besides policy_dict's."""
    tmp, refs = world
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**policy_dict(name), **changes}))
    policy = load_policy_file(path)
    variants = {v: Recorder(LoadedVariant({**ref, "experiment": name})) for v, ref in refs.items()
                if v in {x.name for x in policy.variants}}
    plane = DataPlane({name: policy}, ExperimentStore.from_url(env.redis_url), {name: variants}, RewardTokens("k" * 32),
                      clock=clock, rng=np.random.default_rng(3))
    return plane, variants


def row(i: int) -> dict:
    rows, _ = make_churn(1, seed=100 + i)
    return dict(zip(BASE, rows[0]))


KEYS = ["visits:count", "churn_rate:mean_label", "reward_mean:mean_reward"]


def logged(entries: list[dict], rid: str) -> list[float]:
    entry = next(e for e in entries if e["rid"] == rid)
    return aggregates.loads(entry["agg"], KEYS)


def unit_reads(plane: DataPlane) -> list:
    """The unit counter reads the plane asks its store for from now on."""
    asked = []
    real = plane.store.unit_counters

    async def counting(*args):
        asked.append(args)
        return await real(*args)

    plane.store.unit_counters = counting
    return asked


def same(a: list[float], b: list[float]) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b)) and len(a) == len(b)


PLAIN_ONLY = {"variants": [{"name": "plain", "model": "plain.skops", "features": BASE}]}


@pytest.mark.parametrize("taken", [True, False], ids=["read-before-the-model", "logged-by-the-record"])
def test_a_label_sent_after_the_prediction_never_leaks_into_its_logged_aggregate(env, world, taken):
    """Whether a variant takes the aggregates (read before the model is called) or none does
    (nothing read: record.lua logs the unit's counters as it counts the request), the log holds
    the unit as it was before the request, and only then does the router read Redis for them."""
    name = f"agg-pit-{taken}"

    async def scenario():
        clock = Clock()
        plane, _ = plane_for(env, world, name, clock, **({} if taken else PLAIN_ONLY))
        reads = unit_reads(plane)
        await plane.start()
        try:
            first = await plane.predict(name, {"instances": [row(0)], "unit_id": "u"}, "p1")
            label = 1 - first["predictions"][0]  # a wrong prediction: label 1 - p, reward 0
            out = await plane.rewards({"request_id": "p1", "label": label, "token": first["reward_token"]})
            assert out[0] == 200, out
            second = await plane.predict(name, {"instances": [row(1)], "unit_id": "u"}, "p2")
            await plane.rewards({"request_id": "p2", "label": 1, "token": second["reward_token"]})
            await plane.predict(name, {"instances": [row(2)], "unit_id": "u"}, "p3")
            await plane.predict(name, {"instances": [row(3)], "unit_id": "someone-else"}, "p4")
            entries = await plane.store.recent_decisions(name, 10)
            return label, entries, len(reads)
        finally:
            await plane.stop()

    label, entries, reads = run(scenario())
    assert reads == (4 if taken else 0)
    nan = math.nan
    # Its own label came after p1 was served: p1's log holds the unit as it was before (new).
    assert same(logged(entries, "p1"), [0.0, nan, nan])
    # p2 sees p1's label and reward (0: the prediction was wrong); never its own.
    assert same(logged(entries, "p2"), [1.0, float(label), 0.0])
    assert same(logged(entries, "p3"), [2.0, (label + 1) / 2, logged(entries, "p3")[2]])
    # Units do not share counters.
    assert same(logged(entries, "p4"), [0.0, nan, nan])


def test_training_reads_byte_for_byte_what_each_variant_was_served(env, world):
    """Training/serving skew: for every labelled request, the row the retrainer's matrix holds
    for the variant that served it equals the matrix that variant received, aggregates included."""

    async def scenario():
        clock = Clock()
        plane, variants = plane_for(env, world, "agg-skew", clock)
        await plane.start()
        served = []
        try:
            for i in range(60):
                unit = f"u{i % 7}"
                body = {"instances": [row(i)], "unit_id": unit}
                before = {v: len(r.seen) for v, r in variants.items()}
                answer = await plane.predict("agg-skew", body, f"s{i}")
                v = answer["variant"]
                assert len(variants[v].seen) == before[v] + 1
                served.append((answer, variants[v].seen[-1]))
                clock.t += 1.0
                await plane.rewards({"request_id": f"s{i}", "label": i % 3 == 0, "token": answer["reward_token"]})
            decisions = await plane.store.recent_decisions("agg-skew", 1000)
            feedback = await plane.store.recent_feedback("agg-skew", 1000)
            return plane.runtime("agg-skew").policy, served, decisions, feedback
        finally:
            await plane.stop()

    policy, served, decisions, feedback = run(scenario())
    data = LabelledData.from_decisions(decisions, feedback, keep=lambda agg: aggregates.matches(policy, agg))
    assert len(data) == len(served) == 60
    view = FeatureView(policy, lenient=True)
    A = aggregates.logged_rows(policy, data.agg, len(data))
    trained = {"plain": view.matrix(BASE, data.X, A), "agg": view.matrix(USES, data.X, A)}
    assert {answer["variant"] for answer, _ in served} == {"plain", "agg"}
    assert A[:, 0].max() >= 8  # the units came back: their counts grew, labels and rewards with them
    for i, (answer, seen) in enumerate(served):
        assert trained[answer["variant"]][i].tobytes() == seen[0].tobytes(), (i, answer["variant"])


def test_a_variant_that_uses_aggregates_needs_a_unit_id_and_bad_input_counts_nothing(env, world):
    async def scenario():
        plane, _ = plane_for(env, world, "agg-unit", Clock())
        await plane.start()
        try:
            from gateway.errors import Unprocessable

            with pytest.raises(Unprocessable, match=r"unit_id: required.*\['visits', 'churn_rate'\]"):
                await plane.predict("agg-unit", {"instances": [row(0)]}, "n1")
            with pytest.raises(Unprocessable, match="tenure"):
                await plane.predict("agg-unit", {"instances": [{"plan": "pro"}], "unit_id": "w"}, "n2")
            ok = await plane.predict("agg-unit", {"instances": [row(1)], "unit_id": "w"}, "n3")
            entries = await plane.store.recent_decisions("agg-unit", 10)
            return ok, entries
        finally:
            await plane.stop()

    ok, entries = run(scenario())
    # The refused requests were not counted: the unit's first served request sees 0 before it.
    assert [e["rid"] for e in entries] == ["n3"] and logged(entries, "n3")[0] == 0.0
    assert entries[0]["agg"].startswith(aggregates.COUNTERS)  # the counters as read, new: none set


@pytest.mark.parametrize("routing", [
    {"algorithm": "linear_thompson", "context": ["age"]},
    {"variance_reduction": {"covariate": "age"}},
], ids=["linear-context", "covariate"])
def test_a_feature_the_router_reads_is_required_though_no_variant_takes_it(env, world, routing):
    """No variant takes 'age', but the router reads it (the linear context, the covariate): a
    request without it is a 422 naming it, and nothing is counted, recorded or logged."""
    name = f"agg-route-{'lx' if 'context' in routing else 'cx'}"

    async def scenario():
        from gateway.errors import Unprocessable

        plane, variants = plane_for(env, world, name, Clock(), features=[*FEATURES, {"name": "age", "type": "numeric"}],
                                    **routing)
        await plane.start()
        try:
            with pytest.raises(Unprocessable, match=r"instances\[0\]\.age: missing feature"):
                await plane.predict(name, {"instances": [row(0)], "unit_id": "r"}, "m1")
            calls = sum(len(r.seen) for r in variants.values())
            ok = await plane.predict(name, {"instances": [{**row(1), "age": 40}], "unit_id": "r"}, "m2")
            entries = await plane.store.recent_decisions(name, 10)
            return calls, ok, entries
        finally:
            await plane.stop()

    calls, ok, entries = run(scenario())
    assert calls == 0
    assert [e["rid"] for e in entries] == ["m2"] and logged(entries, "m2")[0] == 0.0


def unit_count(plane: DataPlane, name: str, unit: str):
    return plane.store.client.hget(keys.unit_prefix(name) + unit, "n")


def test_a_request_counts_for_its_unit_once_and_only_when_recorded(env, world):
    """The count goes up with the record (record.lua): a reused request id (409) and a request
    whose variant failed (503, 'retry the request') count nothing; the retry counts once."""

    async def scenario():
        from gateway.errors import Conflict, Unavailable

        name = "agg-once"
        plane, variants = plane_for(env, world, name, Clock())
        await plane.start()
        try:
            await plane.predict(name, {"instances": [row(0)], "unit_id": "c"}, "o1")
            with pytest.raises(Conflict):
                await plane.predict(name, {"instances": [row(1)], "unit_id": "c"}, "o1")
            after_409 = await unit_count(plane, name, "c")
            for r in variants.values():
                r.fail = True
            with pytest.raises(Unavailable, match="retry the request"):
                await plane.predict(name, {"instances": [row(2)], "unit_id": "c"}, "o2")
            after_503 = await unit_count(plane, name, "c")
            for r in variants.values():
                r.fail = False
            await plane.predict(name, {"instances": [row(2)], "unit_id": "c"}, "o2")  # the retry
            last = await plane.predict(name, {"instances": [row(3)], "unit_id": "c"}, "o3")
            entries = await plane.store.recent_decisions(name, 10)
            return after_409, after_503, await unit_count(plane, name, "c"), entries, last
        finally:
            await plane.stop()

    after_409, after_503, final, entries, _ = run(scenario())
    assert after_409 == "1" and after_503 == "1" and final == "3"
    assert [logged(entries, rid)[0] for rid in ("o1", "o2", "o3")] == [0.0, 1.0, 2.0]


def spooling_plane(env, world, name: str, folder, **changes) -> DataPlane:
    from gateway.store.spool import Spool

    tmp, refs = world
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**policy_dict(name), **changes}))
    policy = load_policy_file(path)
    variants = {v: Recorder(LoadedVariant({**ref, "experiment": name})) for v, ref in refs.items()
                if v in {x.name for x in policy.variants}}
    return DataPlane({name: policy}, ExperimentStore.from_url(env.redis_url), {name: variants},
                     RewardTokens("k" * 32), clock=Clock(), rng=np.random.default_rng(3), spool=Spool(folder))


def test_a_read_that_finds_redis_down_sends_the_record_to_the_spool_without_a_second_try(env, world, tmp_path):
    async def scenario():
        from redis.exceptions import ConnectionError as RedisConnectionError

        name = "agg-down"
        plane = spooling_plane(env, world, name, tmp_path)
        await plane.start()
        try:
            async def down(*args):
                raise RedisConnectionError("gone")

            async def record(**kwargs):
                raise AssertionError("the record went to Redis after the read found it down")

            await plane.upkeep.stop()  # the outage is simulated: Redis still answers the upkeep
            plane.store.unit_counters, plane.store.record_prediction = down, record
            answer = await plane.predict(name, {"instances": [row(0)], "unit_id": "x"}, "x1")
            spooling = plane.writer.spooling  # before the upkeep may find Redis answering again
            return answer, spooling, [kind for _, kind, _ in await plane.spool.peek(10)]
        finally:
            await plane.stop()

    answer, spooling, kinds = run(scenario())
    assert answer["request_id"] == "x1" and spooling and kinds == ["record"]


def test_while_spooling_aggregates_are_missing_without_asking_redis_and_the_replay_counts_once(env, world, tmp_path):
    async def scenario():
        name = "agg-spool"
        plane = spooling_plane(env, world, name, tmp_path)
        await plane.start()
        try:
            await plane.predict(name, {"instances": [row(0)], "unit_id": "s"}, "q1")
            # The outage is simulated (Redis still answers): the upkeep would end it at once.
            await plane.upkeep.stop()
            plane.store_ok = False  # as the upkeep does when Redis stops answering
            asked = unit_reads(plane)
            await plane.predict(name, {"instances": [row(1)], "unit_id": "s"}, "q2")
            spooled = [p for _, kind, p in await plane.spool.peek(10) if kind == "record"]
            during = await unit_count(plane, name, "s")
            plane.store_ok = True
            await plane.writer.replay(plane.feedback.replay)
            replayed = await unit_count(plane, name, "s")
            # A crash between applying and deleting a spooled record replays it again: no second count.
            assert await plane.store.record_prediction(**spooled[0])
            return asked, spooled, during, replayed, await unit_count(plane, name, "s")
        finally:
            await plane.stop()

    asked, spooled, during, replayed, again = run(scenario())
    assert asked == []
    assert len(spooled) == 1
    assert all(math.isnan(v) for v in aggregates.loads(spooled[0]["log_entry"]["agg"], KEYS))
    assert (during, replayed, again) == ("1", "2", "2")


def test_a_request_computes_its_derived_features_once(env, world):
    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def extend(self, x):
            self.calls += 1
            return self.inner.extend(x)

    async def scenario():
        name = "agg-derive"
        plane, _ = plane_for(env, world, name, Clock())
        await plane.start()
        try:
            view = plane.runtime(name).view
            view.derivation = counting = Counting(view.derivation)
            await plane.predict(name, {"instances": [row(0)], "unit_id": "d"}, "d1")
            return counting.calls
        finally:
            await plane.stop()

    assert run(scenario()) == 1


def test_a_record_spooled_before_its_counters_were_logged_logs_them_missing_not_as_at_its_replay(env, world, tmp_path):
    """No variant takes the aggregates, so record.lua would log the unit's counters. A request
    spooled while Redis was away (p1) cannot: filled at its replay they would hold what happened
    meanwhile, here a later request of the unit (p2) recorded and labelled before the replay. It
    logs them missing; p2, recorded in Redis, logs the unit as it stood, without p1."""
    async def scenario():
        name = "agg-spool-at-record"
        plane = spooling_plane(env, world, name, tmp_path, **PLAIN_ONLY)
        await plane.start()
        try:
            await plane.upkeep.stop()  # the outage is simulated: the upkeep would end it at once
            plane.store_ok = False
            await plane.predict(name, {"instances": [row(0)], "unit_id": "late"}, "p1")
            plane.store_ok = True  # back; the spool is not replayed yet
            second = await plane.predict(name, {"instances": [row(1)], "unit_id": "late"}, "p2")
            await plane.rewards({"request_id": "p2", "label": 1, "token": second["reward_token"]})
            await plane.writer.replay(plane.feedback.replay)
            return await plane.store.recent_decisions(name, 10), await unit_count(plane, name, "late")
        finally:
            await plane.stop()

    entries, count = run(scenario())
    assert next(e for e in entries if e["rid"] == "p1")["agg"] == aggregates.MISSING
    assert same(logged(entries, "p1"), [math.nan] * 3)
    assert same(logged(entries, "p2"), [0.0, math.nan, math.nan])
    assert count == "2"  # both counted, once each


def test_a_shadow_that_joins_while_a_request_is_served_never_gets_that_requests_frame(env, world):
    """The request's frame is built for the view of its start, where no variant took the
    aggregates (none read: missing). A shadow taking them joins while the live model answers:
    that request is not mirrored (the shadow would get missing aggregates it never saw in
    training); the next one is, with the unit's counters read for it."""
    from gateway.policy import Policy

    name = "agg-join"
    tmp, refs = world
    with_shadow = Policy.model_validate({**policy_dict(name), "shadow": {"fraction": 1.0}, "variants": [
        PLAIN_ONLY["variants"][0], {"name": "agg", "model": "agg.ubj", "features": USES, "role": "shadow"}]})
    joining = Recorder(LoadedVariant({**refs["agg"], "experiment": name}))

    async def scenario():
        plane, variants = plane_for(env, world, name, Clock(), shadow={"fraction": 1.0}, **PLAIN_ONLY)
        await plane.start()
        rt = plane.runtime(name)
        live = variants["plain"]
        answer = live.predict

        async def join_meanwhile(matrix, carrier):
            if "agg" not in rt.variants:  # as a challenger joins: variants, policy and view, no await between
                rt.variants["agg"] = joining
                rt.set_policy(with_shadow)
                rt.shadows = ("agg",)
            return await answer(matrix, carrier)

        live.predict = join_meanwhile
        try:
            await plane.predict(name, {"instances": [row(0)], "unit_id": "j"}, "j1")
            await plane.shadow.drain()
            before = len(joining.seen)
            await plane.predict(name, {"instances": [row(1)], "unit_id": "j"}, "j2")
            await plane.shadow.drain()
            return before, joining.seen
        finally:
            await plane.stop()

    before, seen = run(scenario())
    assert before == 0 and len(seen) == 1
    visits = FeatureView(with_shadow).column_names(USES).index("visits")
    assert seen[0][0, visits] == 1.0  # j1 counted before j2 was read: a real value, not missing
