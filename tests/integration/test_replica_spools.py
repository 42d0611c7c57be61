"""Exactly once across router replicas while Redis is away: two real DataPlanes (two replicas on
one node: one spool folder, one external redis-server killed and started again on its data),
real models, no Ray. The gateway-level run with GATEWAY_ROUTER_REPLICAS=2 is in
test_redis_outage.py; these pin the orders that run can only hit by chance.

The clock is real time plus an offset the test moves forward: an outage longer than the reward
window, without waiting for it."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml

from gateway.dataplane import DataPlane
from gateway.errors import Forbidden, NotFound
from gateway.policy import load_policy_file
from gateway.sim import churn
from gateway.store import keys
from gateway.store.embedded import EmbeddedRedis
from gateway.store.experiments import ExperimentStore
from gateway.store.snapshot import RewardItem, RewardRules
from gateway.store.spool import Spool
from gateway.dataplane.tokens import RewardTokens, TokenClaims
from tests.planes import BASE, run
from tests.models import loaded_variants

pytestmark = pytest.mark.integration

EXPERIMENT = "replicas"
# Long, so the tokens (valid twice the window) outlive a slow machine's steps by minutes
# after the clock is moved past the window.
WINDOW_S = 600.0
SECRET = "r" * 32


class ShiftedClock:
    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Node:
    """One redis-server and a spool folder shared by the replicas made here."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.redis = EmbeddedRedis(tmp / "redis").start()
        self.spool_dir = tmp / "spool"
        self.clock = ShiftedClock()
        path = tmp / f"{EXPERIMENT}.yaml"
        path.write_text(yaml.safe_dump({**BASE, "experiment": EXPERIMENT,
                                        "reward": {"type": "bernoulli", "default": 0.0, "window_s": WINDOW_S}}))
        self.policy = load_policy_file(path)
        self.variants = loaded_variants(self.policy, path, tmp / "state")

    def replica(self, seed: int) -> DataPlane:
        return DataPlane(
            {EXPERIMENT: self.policy}, ExperimentStore.from_url(self.redis.url), {EXPERIMENT: self.variants},
            RewardTokens(SECRET), clock=self.clock, rng=np.random.default_rng(seed), spool=Spool(self.spool_dir),
        )

    def kill_redis(self) -> None:
        self.redis.stop()

    def start_redis(self) -> None:
        self.redis = EmbeddedRedis(self.tmp / "redis").start()

    def raw(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.redis.socket), socket_timeout=10, decode_responses=True)

    def stop(self) -> None:
        self.redis.stop()


@pytest.fixture()
def node(tmp_path) -> Node:
    n = Node(tmp_path)
    try:
        yield n
    finally:
        n.stop()


async def wait_for(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def serve(plane: DataPlane, rows: list, prefix: str) -> list[dict]:
    return [await plane.predict(EXPERIMENT, {"instances": [r]}, f"{prefix}{i}") for i, r in enumerate(rows)]


async def reward_each(plane: DataPlane, served: list[dict], values: list[float]) -> list[tuple[int, dict]]:
    return [await plane.rewards({"request_id": p["request_id"], "reward": v, "token": p["reward_token"]})
            for p, v in zip(served, values)]


async def start_then_lose_redis(node: Node, *replicas: DataPlane) -> None:
    for plane in replicas:
        await plane.start()
    node.kill_redis()
    await wait_for(lambda: not any(p.store_ok for p in replicas), "the replicas to see Redis gone")


def applied(node: Node) -> dict:
    """What Redis holds: per variant (rewards, sum), and every feedback entry's request id."""
    r = node.raw()
    try:
        arms = r.hgetall(keys.arms(EXPERIMENT))
        entries = [fields for _, fields in r.xrange(keys.feedback(EXPERIMENT))]
    finally:
        r.close()
    per_variant = {}
    for key, value in arms.items():
        variant, _, counter = key.rpartition(":")
        per_variant.setdefault(variant, {})[counter] = float(value)
    return {"arms": per_variant, "feedback": entries}


def test_rewards_taken_by_one_replica_for_predictions_spooled_by_another_count_once_and_on_time(node):
    a, b = node.replica(1), node.replica(2)
    rows, _ = churn.make_churn(40, seed=11)
    rng = np.random.default_rng(5)
    values = [float(x) for x in rng.integers(0, 2, size=40)]

    async def scenario():
        try:
            await start_then_lose_redis(node, a, b)
            on_a = await serve(a, rows[:20], "a")
            on_b = await serve(b, rows[20:], "b")
            # Each replica takes the feedback for the other's predictions, and some of it twice.
            answers = await reward_each(b, on_a, values[:20]) + await reward_each(a, on_b, values[20:])
            repeats = await reward_each(b, on_a[:5], values[:5])
            # The outage outlasts the reward window: every deadline passes while Redis is away.
            node.clock.offset += WINDOW_S + 30
            # Replica A is slow to come back (its refresh loop is paused; its spool stays locked).
            await a.stop()
            node.start_redis()
            await wait_for(lambda: b.store_ok and b.spool.pending() <= 25, "replica B to replay what it can")
            await asyncio.sleep(2.5)  # B's sweeper runs and B retries its waiting rewards meanwhile
            waiting_on_b = b.spool.pending()
            await a.start()
            await wait_for(lambda: a.spool.pending() == 0 and b.spool.pending() == 0, "both spools to drain")
            await asyncio.sleep(1.5)  # one more sweep on each, after everything arrived
            return answers, repeats, waiting_on_b, a.readiness(), b.readiness()
        finally:
            await a.stop()
            await b.stop()

    answers, repeats, waiting_on_b, ready_a, ready_b = run(scenario())
    assert [code for code, _ in answers + repeats] == [202] * 45
    # B kept the 20 rewards (and 5 repeats) whose records were still in A's spool.
    assert waiting_on_b == 25
    assert ready_a["status"] == ready_b["status"] == "ok"
    got = applied(node)
    assert sum(v.get("req", 0) for v in got["arms"].values()) == 40
    assert sum(v.get("n", 0) for v in got["arms"].values()) == 40  # each request once: no loss, no double
    assert sum(v.get("s", 0) for v in got["arms"].values()) == sum(values)
    assert sorted(e["rid"] for e in got["feedback"]) == sorted([f"a{i}" for i in range(20)] + [f"b{i}" for i in range(20)])
    assert not [e for e in got["feedback"] if e.get("late") == "1"], "on-time feedback was demoted to late"


def test_a_running_replica_adopts_the_spool_of_one_that_stopped(node):
    a, b = node.replica(3), node.replica(4)
    rows, _ = churn.make_churn(10, seed=12)

    async def scenario():
        try:
            await start_then_lose_redis(node, a, b)
            on_a = await serve(a, rows, "gone")
            answers = await reward_each(b, on_a, [1.0] * len(on_a))
            # Replica A goes away for good (scaled down, or its process died): its lock is freed.
            await a.stop()
            a.spool.close()
            node.start_redis()
            await wait_for(lambda: b.spool.pending() == 0 and b.readiness()["status"] == "ok",
                           "replica B to adopt A's spool and drain both")
            return answers
        finally:
            await b.stop()

    answers = run(scenario())
    assert {body["status"] for _, body in answers} == {"queued"}
    got = applied(node)
    assert sum(v.get("req", 0) for v in got["arms"].values()) == 10
    assert sum(v.get("n", 0) for v in got["arms"].values()) == 10
    assert list(node.spool_dir.glob("*.sqlite")) == [b.spool.path]


def test_feedback_for_a_request_no_spool_holds_is_404_and_a_waiting_reward_ends_with_its_token(node):
    plane = node.replica(5)
    tokens = RewardTokens(SECRET)

    async def scenario():
        await plane.start()
        try:
            # Redis up, nothing spooled anywhere: a validly signed but never-served request.
            now = node.clock()
            ghost = tokens.sign("ghost", TokenClaims(EXPERIMENT, "logreg", now + 60))
            with pytest.raises(NotFound):
                await plane.rewards({"request_id": "ghost", "reward": 1, "token": ghost})
            # While a record is spooled the same feedback waits (202); if its record never comes
            # (here: it is never served) it is dropped once its token expired, not kept forever.
            node.kill_redis()
            await wait_for(lambda: not plane.store_ok, "the replica to see Redis gone")
            await plane.predict(EXPERIMENT, {"instances": [churn.make_churn(1, seed=1)[0][0]]}, "real")
            status, body = await plane.rewards({"request_id": "ghost", "reward": 1, "token": ghost})
            node.start_redis()
            await wait_for(lambda: plane.store_ok and plane.spool.pending() == 1, "the record to replay")
            waiting = plane.spool.pending()
            node.clock.offset += 70  # past the ghost token's expiry
            await wait_for(lambda: plane.spool.pending() == 0, "the expired reward to be dropped")
            return status, body, waiting
        finally:
            await plane.stop()

    status, body, waiting = run(scenario())
    assert (status, body["status"]) == (202, "queued")
    assert waiting == 1
    assert sum(v.get("n", 0) for v in applied(node)["arms"].values()) == 0


def test_a_record_replayed_after_its_deadline_waits_a_window_for_the_default_and_on_time_feedback_counts(node):
    plane = node.replica(6)
    row = churn.make_churn(1, seed=3)[0][0]

    async def scenario():
        try:
            await start_then_lose_redis(node, plane)
            served = await plane.predict(EXPERIMENT, {"instances": [row]}, "slow")
            on_time = node.clock()
            node.clock.offset += WINDOW_S + 30  # Redis comes back after the deadline
            node.start_redis()
            await wait_for(lambda: plane.store_ok and plane.spool.pending() == 0, "the record to replay")
            swept = await plane.store.expire_rewards(EXPERIMENT, 0.0, node.clock())
            # Feedback another replica spooled on time reaches Redis only now.
            (outcome, _), = await plane.store.apply_rewards(
                [RewardItem(EXPERIMENT, "slow", served["variant"], 1.0)], on_time, {EXPERIMENT: plane.experiments[EXPERIMENT].reward_rules})
            (late, _), = await plane.store.apply_rewards(
                [RewardItem(EXPERIMENT, "slow", served["variant"], 1.0)], node.clock(), {EXPERIMENT: plane.experiments[EXPERIMENT].reward_rules})
            swept_later = await plane.store.expire_rewards(EXPERIMENT, 0.0, node.clock() + WINDOW_S + 1)
            return swept, outcome, late, swept_later
        finally:
            await plane.stop()

    swept, outcome, late, swept_later = run(scenario())
    assert (swept, outcome) == (0, "accepted")
    assert late == "duplicate" and swept_later == 0  # rewarded once; nothing left to default


def test_feedback_spooled_on_time_counts_though_the_default_was_applied_before_it_reached_redis(node):
    """A request recorded in Redis; its feedback comes on time while Redis is away and waits in
    the spool; Redis returns after the deadline and a sweeper (another replica's, or this one's
    first refresh) gives the request the default before the spool is replayed. The feedback
    still counts, in place of the default: once, with its own value, as if it came first."""
    plane = node.replica(7)
    row = churn.make_churn(1, seed=4)[0][0]

    async def scenario():
        await plane.start()
        try:
            served = await plane.predict(EXPERIMENT, {"instances": [row]}, "waited")
            node.kill_redis()
            await wait_for(lambda: not plane.store_ok, "the replica to see Redis gone")
            queued = await plane.rewards({"request_id": "waited", "reward": 1, "token": served["reward_token"]})
        finally:
            await plane.stop()  # its spool keeps the feedback
        node.clock.offset += WINDOW_S + 30
        node.start_redis()
        sweeper = node.replica(8)
        try:
            swept = await sweeper.store.expire_rewards(EXPERIMENT, 0.0, node.clock())
        finally:
            await sweeper.store.close()
        await plane.start()
        try:
            await wait_for(lambda: plane.store_ok and plane.spool.pending() == 0, "the feedback to replay")
            again = await plane.rewards({"request_id": "waited", "reward": 1, "token": served["reward_token"]})
        finally:
            await plane.stop()
        return served["variant"], queued, swept, again

    variant, (code, body), swept, (_, again) = run(scenario())
    assert (code, body["status"], swept) == (202, "queued", 1)
    got = applied(node)
    # The feedback's 1, not the default's 0, counted once.
    assert {k: got["arms"][variant].get(k) for k in ("req", "n", "s", "ss")} == {"req": 1, "n": 1, "s": 1, "ss": 1}
    assert again["status"] == "duplicate"
    assert [e["rid"] for e in got["feedback"] if "late" not in e] == ["waited"]


def test_feedback_in_place_of_the_default_counts_everywhere_as_feedback_that_came_first(node):
    """Two experiments, two requests each with a segment, a linear context and a covariate: in
    one both get on-time feedback before any sweep; in the other one request is swept (the
    default 0.25) before its on-time feedback of 1 arrives. Every counter the reward feeds (the
    arms with the covariate's, the segment's, the linear model's) ends the same in both."""
    context = ("tenure",)
    rules = RewardRules(default=0.25, window_s=WINDOW_S, linear_context=context)
    fields = {"variant": "logreg", "seg": "plan=pro", "lx": "1,0.5", "cx": "2"}

    async def scenario():
        store = ExperimentStore.from_url(node.redis.url)
        try:
            t0 = node.clock()
            for experiment in ("direct", "swept"):
                for rid in ("a", "b"):
                    assert await store.record_prediction(experiment, rid, "logreg", fields, 3600, None, deadline=t0 + 60)
            on_time = t0 + 30
            items = {e: [RewardItem(e, rid, "logreg", 1.0) for rid in ("a", "b")] for e in ("direct", "swept")}
            direct = await store.apply_rewards(items["direct"], on_time, {"direct": rules})
            first = await store.apply_rewards(items["swept"][:1], on_time, {"swept": rules})
            swept = await store.expire_rewards("swept", 0.25, t0 + 61, linear_context=context)
            replaced = await store.apply_rewards(items["swept"][1:], on_time, {"swept": rules})
            again = await store.apply_rewards(items["swept"][1:], on_time, {"swept": rules})
            # Once feedback after the deadline was kept as late (training reads it), the on-time
            # copy still in a spool is a duplicate: the default stays.
            assert await store.record_prediction("late-first", "c", "logreg", fields, 3600, None, deadline=t0 + 60)
            late_then_on_time = [(await store.apply_rewards([RewardItem("late-first", "c", "logreg", 1.0)], at,
                                                            {"late-first": rules}))[0][0] for at in (t0 + 61, on_time)]
            return direct + first + replaced, swept, again, late_then_on_time
        finally:
            await store.close()

    outcomes, swept, again, late_then_on_time = run(scenario())
    assert [o for o, _ in outcomes] == ["accepted"] * 4 and swept == 1 and again[0][0] == "duplicate"
    assert late_then_on_time == ["late", "duplicate"]
    r = node.raw()
    try:
        assert (r.hget(keys.arms("late-first"), "logreg:n"), r.hget(keys.arms("late-first"), "logreg:s")) == ("1", "0.25")
        for key in (keys.arms, keys.segments, lambda e: keys.linear(e, context)):
            assert r.hgetall(key("swept")) == r.hgetall(key("direct")) != {}
    finally:
        r.close()


def test_a_request_id_reused_while_spooling_never_takes_the_first_predictions_reward(node):
    """While Redis is away reuse of a request id cannot be seen: both predictions are answered.
    On replay the second record is refused (the id is in use), and its token, though valid,
    names the second prediction: its reward does not land on the first, whose own reward then
    counts. The same unit, so the same variant both times (only the record tells them apart)."""
    plane = node.replica(9)
    rows, _ = churn.make_churn(2, seed=6)

    async def scenario():
        await start_then_lose_redis(node, plane)
        try:
            # The second of two rows: its label, two values, would not even fit the first.
            first, second = [await plane.predict(EXPERIMENT, {"instances": instances, "unit_id": "u7"}, "twice")
                             for instances in (rows[:1], rows)]
            _, queued = await plane.rewards({"request_id": "twice", "reward": 1, "token": second["reward_token"]})
            node.start_redis()
            await wait_for(lambda: plane.store_ok and plane.spool.pending() == 0, "the spool to replay")
            with pytest.raises(Forbidden):  # a label with it is refused too, not matched against the first
                await plane.rewards({"request_id": "twice", "label": [1, 0], "token": second["reward_token"]})
            _, own = await plane.rewards({"request_id": "twice", "reward": 0, "token": first["reward_token"]})
            return first, second, queued, own
        finally:
            await plane.stop()

    first, second, queued, own = run(scenario())
    assert first["variant"] == second["variant"] and queued["status"] == "queued"
    assert own["status"] == "accepted"
    arm = applied(node)["arms"][first["variant"]]
    assert (arm.get("req"), arm.get("n"), arm.get("s")) == (1, 1, 0)  # the first prediction, its own reward 0
