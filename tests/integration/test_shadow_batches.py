"""Shadow answers recorded in batches (one shadow.lua call per chunk of answers) answer and write
exactly as the same answers recorded one at a time, on a real embedded Redis."""
from __future__ import annotations

import pytest

from gateway.store import keys
from gateway.store.experiments import ExperimentStore
from gateway.store.reward_calls import bounded_calls
from gateway.store.shadow import SHADOW_ROWS_PER_CALL, SHADOWS_PER_CALL
from gateway.store.snapshot import RewardItem, RewardRules
from tests.integration.batch_store import raw, run, server, state  # noqa: F401 - raw, server are fixtures

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
EXP = "exp"
# Label-made rewards let the shadows earn theirs, so that path is compared too.
RULES = {EXP: RewardRules(default=0.0, window_s=3600, shadows_earn=True)}
# More answers than one call carries, so the batch takes several calls.
BULK = 2 * SHADOWS_PER_CALL + 7


async def seed(store: ExperimentStore) -> None:
    """Served requests: unlabelled ones, one labelled with a label-made reward (a shadow answer
    arriving now is scored and earns), one labelled with the client's own reward, one whose
    label came late (after the default: not scored), and one of many rows."""
    for k in range(BULK):
        assert await store.record_prediction(EXP, f"bulk-{k}", "a", {"pred": "[1]"}, 86_400, None, nonce=f"n-{k}")
    for rid, pred, deadline in (("by-label", "[1]", T0 + 3600), ("own-reward", "[0]", T0 + 3600),
                                ("late", "[1]", T0 - 60), ("rows", "[1, 0, 1]", T0 + 3600)):
        assert await store.record_prediction(EXP, rid, "a", {"pred": pred}, 86_400, {"rid": rid}, deadline=deadline,
                                             nonce=f"n-{rid}")
    rewards = [RewardItem(EXP, "by-label", "a", 1.0, label="1", from_label=True),
               RewardItem(EXP, "own-reward", "a", 0.5, label="1"),
               RewardItem(EXP, "late", "a", 1.0, label="0", from_label=True),
               RewardItem(EXP, "rows", "a", 1.0, label="[1, 1, 1]", from_label=True)]
    assert [o for o, _ in await store.apply_rewards(rewards, T0 + 1, RULES)] == ["accepted", "accepted", "late", "accepted"]


MIXED = [
    ("by-label", "s", "[1]", "[0.75]"),  # scored, and earns
    ("own-reward", "s", "[0]", None),  # scored, earns nothing
    ("never-served", "s", "[1]", None),  # gone
    ("by-label", "s", "[0]", None),  # duplicate, within the same call
    ("by-label", "t", "[0]", "[0.25]"),  # another shadow of the same request: its own answer
    ("late", "s", "[0]", None),  # recorded: a late label is not scored
    ("rows", "t", "[1, 1, 0]", "[0.9, 0.8, 0.1]"),  # scored row by row
]
EXPECTED = ["scored", "scored", "gone", "duplicate", "scored", "recorded", "scored"]


def answers() -> list[tuple[str, str, str, str | None]]:
    bulk = [(f"bulk-{k}", "s", "[1]", None) for k in range(BULK)]
    return bulk[:10] + MIXED + bulk[10:]


def test_a_mixed_batch_answers_and_writes_as_the_same_answers_one_at_a_time(server, raw):
    async def batch(store):
        await seed(store)
        return await store.record_shadows(EXP, answers(), T0 + 2)

    async def one_by_one(store):
        await seed(store)
        return [await store.record_shadow(EXP, rid, v, p, s, T0 + 2) for rid, v, p, s in answers()]

    together = run(server, batch)
    after_batch = state(raw)
    raw.flushall()
    alone = run(server, one_by_one)
    assert together[10:10 + len(MIXED)] == EXPECTED
    assert together[:10] + together[10 + len(MIXED):] == ["recorded"] * BULK
    assert together == alone
    assert state(raw) == after_batch


def test_answers_of_many_rows_are_cut_into_calls_and_all_recorded(server, raw):
    # Each answer of more rows than a third of a call's budget: a call carries two at most.
    rows = SHADOW_ROWS_PER_CALL // 3 + 1
    pred = "[" + ", ".join(["1"] * rows) + "]"
    assert bounded_calls([rows] * 5, SHADOWS_PER_CALL, SHADOW_ROWS_PER_CALL) == [[0, 1], [2, 3], [4]]

    async def go(store):
        for k in range(5):
            assert await store.record_prediction(EXP, f"big-{k}", "a", {"pred": pred}, 86_400, None)
        return await store.record_shadows(EXP, [(f"big-{k}", "s", pred, None) for k in range(5)], T0 + 2)

    assert run(server, go) == ["recorded"] * 5
    assert all(raw.hget(keys.request(EXP, f"big-{k}"), "sh:s") == pred for k in range(5))
