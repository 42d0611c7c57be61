"""Rewards applied in batches (one reward.lua call per experiment and chunk of items) answer and
count exactly as the same rewards applied one at a time, on a real embedded Redis."""
from __future__ import annotations

import pytest

from gateway.store import keys
from gateway.store.experiments import ExperimentStore
from gateway.store.reward_calls import REWARDS_PER_CALL
from gateway.store.snapshot import RewardItem, RewardRules
from tests.integration.batch_store import raw, run, server, state  # noqa: F401 - raw, server are fixtures

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
EXP, OTHER = "exp", "other"
# A default reward (so a late reward exists), one reward per unit in the window, unit aggregates.
RULES = {EXP: RewardRules(default=0.0, max_per_unit=1, window_s=3600, unit_window_s=3600),
         OTHER: RewardRules(default=0.0, max_per_unit=1, window_s=3600, unit_window_s=3600)}


async def seed(store: ExperimentStore, experiment: str) -> None:
    """Served requests for every outcome: fresh ones, one already rewarded, one whose unit used
    its quota, one past its deadline (it takes the default, so its feedback is late), one with a
    prediction and a traceparent to score a label against."""
    served = [
        ("fresh", "a", T0 + 3600, "u-fresh"), ("fresh2", "b", T0 + 3600, None), ("done", "a", T0 + 3600, None),
        ("quota0", "a", T0 + 3600, "u-quota"), ("quota1", "a", T0 + 3600, "u-quota"), ("past", "b", T0 - 60, None),
        ("other-variant", "b", T0 + 3600, None), ("big", "a", T0 + 3600, None), ("labelled", "b", T0 + 3600, "u-label"),
    ]
    for i, (rid, variant, deadline, unit) in enumerate(served):
        record = {"pred": "[1]", "tp": f"00-{i + 1:032x}-{i + 1:016x}-01"}
        if unit:
            record["unit"] = unit
        assert await store.record_prediction(experiment, rid, variant, record, 86_400, {"rid": rid}, deadline=deadline,
                                             nonce=f"n-{rid}", unit_window_s=3600)
    before = [RewardItem(experiment, "done", "a", 1.0), RewardItem(experiment, "quota0", "a", 1.0)]
    assert [o for o, _ in await store.apply_rewards(before, T0 + 1, RULES)] == ["accepted", "accepted"]


def mixed(experiment: str) -> list[RewardItem]:
    return [
        RewardItem(experiment, "fresh", "a", 1.0),
        RewardItem(experiment, "done", "a", 0.0),  # duplicate
        RewardItem(experiment, "never-served", "a", 1.0),  # unknown
        RewardItem(experiment, "quota1", "a", 1.0),  # its unit used its one reward
        RewardItem(experiment, "fresh2", "b", float("nan")),  # invalid: not a number, nothing written
        RewardItem(experiment, "big", "a", 1e200),  # invalid: the sum of squares would overflow
        RewardItem(experiment, "past", "b", 1.0),  # late
        RewardItem(experiment, "other-variant", "a", 1.0),  # mismatch
        RewardItem(experiment, "labelled", "b", 1.0, label="1", from_label=True),
        RewardItem(experiment, "fresh2", "b", 0.5),  # its invalid item before did not claim it
    ]


EXPECTED = ["accepted", "duplicate", "unknown", "quota", "invalid", "invalid", "late", "mismatch", "accepted", "accepted"]


def test_a_mixed_batch_answers_and_writes_as_the_same_rewards_one_at_a_time(server, raw):
    async def batch(store):
        await seed(store, EXP)
        return await store.apply_rewards(mixed(EXP), T0 + 2, RULES)

    async def one_by_one(store):
        await seed(store, EXP)
        return [(await store.apply_rewards([it], T0 + 2, RULES))[0] for it in mixed(EXP)]

    together = run(server, batch)
    after_batch = state(raw)
    raw.flushall()
    alone = run(server, one_by_one)
    assert [o for o, _ in together] == EXPECTED
    assert together == alone  # traceparents too
    assert together[0][1] == "00-" + f"{1:032x}" + "-" + f"{1:016x}" + "-01"
    assert state(raw) == after_batch


def test_a_batch_across_two_experiments_answers_each_item_in_place(server, raw):
    # Interleaved, and more items than one call carries, so each experiment takes several calls.
    extra = 2 * REWARDS_PER_CALL + 7

    async def go(store):
        for experiment in (EXP, OTHER):
            await seed(store, experiment)
            for k in range(extra):
                assert await store.record_prediction(experiment, f"bulk-{k}", "a", {"pred": "[1]"}, 86_400, None)
        items = []
        for k in range(extra):
            items += [RewardItem(EXP, f"bulk-{k}", "a", 1.0), RewardItem(OTHER, f"bulk-{k}", "a", 0.0)]
        items[10:10] = mixed(OTHER)
        items += mixed(EXP)
        return items, await store.apply_rewards(items, T0 + 2, RULES)

    items, outcomes = run(server, go)
    assert len(outcomes) == len(items)
    bulk = [o for it, (o, _) in zip(items, outcomes) if it.request_id.startswith("bulk-")]
    assert bulk == ["accepted"] * (2 * extra)
    assert [o for o, _ in outcomes[10:10 + len(EXPECTED)]] == EXPECTED
    assert [o for o, _ in outcomes[-len(EXPECTED):]] == EXPECTED
    # Arm a: 'done' and 'quota0' before, then the bulk and 'fresh' (1.0 each in EXP, 0.0 in OTHER).
    assert raw.hget(keys.arms(EXP), "a:n") == str(2 + extra + 1)
    assert float(raw.hget(keys.arms(EXP), "a:s")) == 2 + extra + 1
    assert raw.hget(keys.arms(OTHER), "a:n") == str(2 + extra + 1)
    assert float(raw.hget(keys.arms(OTHER), "a:s")) == 2 + 1


def test_a_request_rewarded_twice_in_one_batch_counts_once(server, raw):
    async def go(store):
        assert await store.record_prediction(EXP, "r1", "a", {"pred": "[1]"}, 86_400, None)
        return await store.apply_rewards(
            [RewardItem(EXP, "r1", "a", 1.0), RewardItem(EXP, "r1", "a", 1.0), RewardItem(EXP, "r1", "a", 0.0)], T0, {})

    assert [o for o, _ in run(server, go)] == ["accepted", "duplicate", "duplicate"]
    assert raw.hget(keys.arms(EXP), "a:n") == "1"
    assert float(raw.hget(keys.arms(EXP), "a:s")) == 1.0
    assert raw.xlen(keys.feedback(EXP)) == 1


def test_an_item_the_script_fails_on_holds_back_no_other_item_of_its_call(server, raw):
    """A corrupt record (a deadline that is not a number) makes reward.lua fail on its item: the
    batch answers with the error, but every other item of the call is applied, once."""
    from redis.exceptions import ResponseError

    async def go(store):
        for rid in ("r1", "bad", "r2"):
            assert await store.record_prediction(EXP, rid, "a", {"pred": "[1]"}, 86_400, None, deadline=T0 + 3600)
        raw.hset(keys.request(EXP, "bad"), "dl", "not-a-number")
        items = [RewardItem(EXP, rid, "a", 1.0) for rid in ("r1", "bad", "r2")]
        with pytest.raises(ResponseError):
            await store.apply_rewards(items, T0, RULES)
        # The client retries: the two good items were applied exactly once the first time.
        with pytest.raises(ResponseError):
            await store.apply_rewards(items, T0, RULES)
        return await store.apply_rewards([items[0], items[2]], T0, RULES)

    assert [o for o, _ in run(server, go)] == ["duplicate", "duplicate"]
    assert raw.hget(keys.arms(EXP), "a:n") == "2"


def test_a_call_is_cut_by_label_rows_as_well_as_items():
    from gateway.store.reward_calls import LABEL_ROWS_PER_CALL, reward_calls

    wide = "[" + ",".join(["1"] * 400) + "]"
    items = [RewardItem(EXP, f"w{k}", "a", 1.0, label=wide) for k in range(5)] + [RewardItem(EXP, "one", "a", 1.0)]
    calls = reward_calls(items)
    assert [ids for _, ids in calls] == [[0, 1], [2, 3], [4, 5]]
    assert all(400 * sum(1 for i in ids if i < 5) <= LABEL_ROWS_PER_CALL for _, ids in calls)


def test_a_units_label_counts_take_a_list_only_when_every_value_is_0_or_1(server, raw):
    """As training does (it skips such a request whole): a unit's `labels` aggregate never counts
    labels its model is not trained on."""
    async def go(store):
        for rid in ("mixed", "binary"):
            assert await store.record_prediction(EXP, rid, "a", {"pred": "[1, 0]", "unit": "u1"}, 86_400, None,
                                                 unit_window_s=3600)
        items = [RewardItem(EXP, "mixed", "a", 0.5, label='[1, "yes"]', from_label=True),
                 RewardItem(EXP, "binary", "a", 0.5, label="[1, 0]", from_label=True)]
        outcomes = await store.apply_rewards(items, T0, {EXP: RewardRules(window_s=3600, unit_window_s=3600)})
        return outcomes, await store.unit_counters(EXP, "u1")

    outcomes, (n, labels, label_sum, rewards, _) = run(server, go)
    assert [o for o, _ in outcomes] == ["accepted", "accepted"]
    assert (n, labels, label_sum, rewards) == ("2", "2", "1", "2")
