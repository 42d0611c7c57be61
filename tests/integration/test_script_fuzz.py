"""Property tests: no Lua script ever leaves a partial write, and state never becomes poison.

Redis does not undo a script's earlier writes when a later command in it fails, so every script
in src/gateway/store/lua must check all of its arguments (and that the variant's reward sums stay
finite) before its first write. A bad argument gets either an error reply (ResponseError) or the
outcome 'invalid' for every item (reward.lua); in both cases the database must be exactly as it was.

The scripts run on one embedded redis-server for the whole module (FLUSHALL and a fresh seed
through the public API before every example), called directly by evalsha with arguments that mix
valid values, floats at the overflow edge, huge integers, numbers that Lua's tonumber and Redis's
own parsers read differently (' 5', '1e3', '05', '0x10', '1e-400'), long strings, unicode and
wrong argument counts.
"""
from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from gateway.store import keys
from gateway.store.experiments import (
    DECISION_LOG_BYTES,
    DECISION_LOG_MAXLEN,
    FEEDBACK_BYTES,
    FEEDBACK_MAXLEN,
    HISTORY_MAXLEN,
    SERIES_MAXLEN,
    ExperimentStore,
)
from gateway.store.limits import SHADOW_LOG_BYTES, SHADOW_LOG_MAXLEN
from gateway.store.snapshot import RewardItem, RewardRules

from tests.integration.batch_store import server  # noqa: F401 - a fixture: one embedded Redis for the module

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=150,
    derandomize=True,  # the same examples on every run
    deadline=None,
    database=None,  # no .hypothesis directory in the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

EXP = "exp"
# An experiment with no state: its series and retraining locks are free, so series.lua and
# claim_retrain.lua get past their SET NX and reach their later writes.
FRESH = "fresh"
T0 = 1_700_000_000.0
# unit_window_s: records and rewards also add to the units' aggregate counters (record.lua, reward.lua).
SEED_RULES = RewardRules(default=0.0, max_per_unit=5, window_s=3600, unit_window_s=3600)
# (request id, variant, reward deadline, unit id)
SEED_REQUESTS = [
    ("r0", "a", T0 + 3600, "u0"),  # rewarded below (quota key for u0)
    ("r1", "b", T0 + 3600, "u1"),  # rewarded below
    ("r2", "a", None, "u2"),  # no reward yet, a unit without a quota key: reward.lua reaches its EXPIRE
    ("r3", "b", T0 - 60, None),  # past its deadline: takes the default, then its feedback is late
    ("r4", "a", T0 + 3600, "u4"),  # still pending
    ("r5", "b", None, None),
]
REQUEST_IDS = [rid for rid, *_ in SEED_REQUESTS] + ["n0", "n1"]  # n*: never served
# reward.lua's keys before the request records of its items.
REW_SHARED_KEYS = [keys.arms(EXP), keys.feedback(EXP), keys.meta(EXP), keys.pending(EXP), keys.kpis(EXP), keys.paired(EXP),
                   keys.segments(EXP), keys.shadow_rewards(EXP), keys.linear(EXP)]
# shadow.lua's keys before the request records of its answers.
SHADOW_SHARED_KEYS = [keys.kpis(EXP), keys.paired(EXP), keys.shadow_log(EXP), keys.feedback(EXP), keys.shadow_rewards(EXP),
                      keys.meta(EXP), keys.arms(EXP)]
SCRIPTS = ["record", "reward", "expire", "series", "claim_retrain", "retrain_lock", "transition", "annotate", "add_variant",
           "shadow", "set_role"]


# ---------------------------------------------------------------------------------------------
# Fixtures: one server, one event loop, one store for the module.


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    try:
        yield lp
    finally:
        lp.close()


@pytest.fixture(scope="module")
def store(server, loop) -> Iterator[ExperimentStore]:
    s = ExperimentStore.from_url(server.url)
    loop.run_until_complete(s._load_scripts())
    try:
        yield s
    finally:
        loop.run_until_complete(s.close())


@pytest.fixture(scope="module")
def raw(server) -> Iterator[redis.Redis]:
    """A synchronous, byte-exact client for the direct evalsha calls and the snapshots."""
    c = redis.Redis.from_url(server.url, decode_responses=False)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def shas(raw, store) -> dict[str, str]:
    return {name: str(raw.script_load(src)) for name, src in store._sources.items()}


# ---------------------------------------------------------------------------------------------
# Seed, snapshot, compare.


async def _seed(store: ExperimentStore) -> None:
    """Realistic state through the public API: served requests, accepted rewards (so arms have
    counters and sums), a late reward, history, a run-time challenger, a series point, a lock."""
    await store.ensure_experiment(EXP, T0)
    await store.reward_secret()
    for i, (rid, variant, deadline, unit) in enumerate(SEED_REQUESTS):
        record = {"pred": "1", "tp": f"00-{i + 1:032x}-{i + 1:016x}-01", "scores": "[0.25, 0.75]"}
        if i % 2:
            record["seg"] = "plan=pro"  # routed by its context segment: rewards count there too
        else:
            record["cx"] = "12.5"  # a covariate (variance reduction): summed with the reward
        if i % 3 != 1:
            # A context vector (linear_thompson): rewards add to the variant's linear counters.
            record["lx"] = f"1.0,{i - 2.5!r},0.5"
        if unit:
            record["unit"] = unit
            await store.unit_counters(EXP, unit)  # the unit's aggregates, read (the record counts it)
        assert await store.record_prediction(
            EXP, rid, variant, record, ttl_s=86_400, log_entry={"rid": rid, "variant": variant, "x": "[1.5, 2]"},
            deadline=deadline, nonce=f"nonce-{rid}", unit_window_s=3600 if unit else None,
        )
    outcomes = await store.apply_rewards(
        [RewardItem(EXP, "r0", "a", 1.0, label="1"), RewardItem(EXP, "r1", "b", 0.25, label="0"),
         RewardItem(EXP, "r3", "b", 0.5)],
        T0 + 1, {EXP: SEED_RULES},
    )
    assert [o for o, _ in outcomes] == ["accepted", "accepted", "late"]
    assert await store.annotate(EXP, "note", "seeded", {"kind": "note", "t": T0})
    assert await store.transition(
        EXP, expected_status="exploring", new_status="exploring", champion="a", entry={"kind": "champion"}, now=T0
    )
    assert await store.add_variant(EXP, "c", {"path": "/m/c.skops", "sha256": "0" * 64}, {"kind": "challenger"}, T0)
    assert await store.record_shadow(EXP, "r0", "s", "[1]", "[0.75]", T0 + 2) == "scored"
    assert await store.append_series(EXP, {"t": T0, "share": {"a": 0.5, "b": 0.5}}, interval_s=3600)
    assert await store.claim_retrain(EXP, 0, 3600, "owner-1")


def reset(raw: redis.Redis, store: ExperimentStore, loop: asyncio.AbstractEventLoop) -> None:
    raw.flushall()
    loop.run_until_complete(_seed(store))


def hold_ttls(raw: redis.Redis) -> None:
    """Push short expiries an hour out before a 'before' snapshot. A key set by an earlier call
    of the same example with a ttl of a few ms (a fuzzed lock ttl) could otherwise expire between
    the two snapshots and look like a change. Only the presence of a ttl is compared, which this
    keeps, so it hides nothing that a script did."""
    names = list(raw.scan_iter(count=1000))
    pipe = raw.pipeline(transaction=False)
    for key in names:
        pipe.pttl(key)
    for key, ttl in zip(names, pipe.execute()):
        if 0 <= ttl < 600_000:
            raw.pexpire(key, 3_600_000)


_READ = {
    "string": lambda p, k: p.get(k),
    "hash": lambda p, k: p.hgetall(k),
    "list": lambda p, k: p.lrange(k, 0, -1),
    "zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
    "set": lambda p, k: p.smembers(k),
    "stream": lambda p, k: p.xrange(k, "-", "+"),
}


def db_state(raw: redis.Redis) -> dict[bytes, tuple]:
    """Every key: its type, full content, encoding and whether it has a ttl. Nothing ignored."""
    names = sorted(raw.scan_iter(count=1000))
    pipe = raw.pipeline(transaction=False)
    for key in names:
        pipe.type(key)
    kinds = [k.decode() for k in pipe.execute()]
    pipe = raw.pipeline(transaction=False)
    for key, kind in zip(names, kinds):
        if kind not in _READ:
            raise AssertionError(f"unexpected type {kind} for {key!r}")
        _READ[kind](pipe, key)
        if kind == "stream":
            pipe.xinfo_stream(key)  # length, last generated id, radix tree size
        pipe.object("encoding", key)
        pipe.pttl(key)
    replies = iter(pipe.execute())
    out: dict[bytes, tuple] = {}
    for key, kind in zip(names, kinds):
        content = next(replies)
        if kind == "hash":
            content = sorted(content.items())
        elif kind == "set":
            content = sorted(content)
        elif kind == "stream":
            content = (content, sorted(next(replies).items(), key=lambda kv: str(kv[0])))
        encoding, ttl = next(replies), next(replies)
        out[key] = (kind, content, encoding, ttl >= 0)
    return out


def _short(value, n: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= n else f"{text[:n]}...({len(text)} chars)"


def describe_diff(before: dict, after: dict) -> str:
    lines = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if b == a:
            continue
        if b is None:
            lines.append(f"  + {key!r} created: {_short(a, 400)}")
        elif a is None:
            lines.append(f"  - {key!r} deleted (was {_short(b)})")
        elif b[0] == a[0] == "hash":
            hb, ha = dict(b[1]), dict(a[1])
            changed = {f: (hb.get(f), ha.get(f)) for f in sorted(set(hb) | set(ha)) if hb.get(f) != ha.get(f)}
            lines.append(f"  ~ {key!r} hash fields (before, after): {_short(changed, 600)}; ttl {b[3]} -> {a[3]}")
        else:
            lines.append(f"  ~ {key!r}: {_short(b)} -> {_short(a)}")
    return "\n".join(lines)


def describe_call(script: str, ks: list[str], argv: list) -> str:
    if len(argv) > 40:
        shown = ", ".join(_short(a, 60) for a in argv[:12]) + f", ... ({len(argv)} arguments)"
    else:
        shown = ", ".join(_short(a, 60) for a in argv)
    return f"{script}.lua KEYS={ks} ARGV=[{shown}]"


def call(raw: redis.Redis, shas: dict[str, str], script: str, ks: list[str], argv: list) -> tuple[bool, object]:
    """Run one script; (refused, reply): refused when it was an error reply or 'invalid'."""
    try:
        reply = raw.evalsha(shas[script], len(ks), *ks, *argv)
    except ResponseError as e:
        return True, f"ResponseError: {e}"
    # reward.lua answers {outcome, traceparent} per item: refused when every item is 'invalid'.
    refused = script == "reward" and all(item[0] == b"invalid" for item in reply)
    return refused, reply


def assert_no_partial_write(raw, shas, script: str, ks: list[str], argv: list) -> object:
    hold_ttls(raw)
    before = db_state(raw)
    refused, reply = call(raw, shas, script, ks, argv)
    if refused:
        after = db_state(raw)
        if after != before:
            raise AssertionError(
                f"partial write: {describe_call(script, ks, argv)}\n  reply: {_short(reply, 300)}\n"
                f"  changed:\n{describe_diff(before, after)}"
            )
    return reply


def assert_sums_finite(store: ExperimentStore, loop, experiments=(EXP, FRESH)) -> None:
    snaps = loop.run_until_complete(store.snapshots(list(experiments)))
    for exp, snap in snaps.items():
        for variant, arm in snap.arms.items():
            assert math.isfinite(arm.reward_sum) and math.isfinite(arm.reward_sq_sum), (
                f"poisoned sums for {exp}/{variant!r}: {arm}"
            )
        # LinearStats refuses non-finite counters when the snapshot is read; and within the limit:
        for variant, lin in snap.linear.items():
            assert max(abs(lin.xtx).max(), abs(lin.xty).max(), lin.yty.max()) <= 1e300, (
                f"linear counters of {exp}/{variant!r} past the limit"
            )


# ---------------------------------------------------------------------------------------------
# Strategies.

EDGE_FLOATS = [1e154, 1.3407807929942596e154, 1e155, 1e300, 1.7e308, -1e308, 1.7976931348623157e308, 5e-324]
HUGE_INTS = [2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**17, 10**20, 10**30, 10**400, -(2**63), -(10**30)]
# Numbers Lua's tonumber takes but Redis's integer/float parsers may refuse (whitespace, sign,
# leading zeros, exponent, hex, underflow), and plain oddities.
PARSE_EDGES = [
    " 5", "5 ", "\t7", "5\n", "+5", "05", "1.0", "1e3", "1E2", "0x10", "0X1A", "0x1p4", "1e-400", "-1e-400",
    "0", "00", "-0", "-0.0", "1", "2", "-1", "0.5",
]
SPECIALS = ["inf", "-inf", "nan", "-nan", "NaN", "1e999", "-1e999", "infinity", "Infinity",
            float("inf"), float("-inf"), float("nan")]
TEXT = ["", "abc", "1e", "0x", "1,5", "--1", "1..2", "true", "nil", "{}", "[1]", "é", "🙂", "١٢٣", "\x00", "\u00a05"]

# For the arguments the scripts read as numbers: parser disagreements most often.
numeric_fuzz = st.one_of(
    st.sampled_from(PARSE_EDGES),
    st.sampled_from(PARSE_EDGES),
    st.sampled_from(PARSE_EDGES),
    st.sampled_from(SPECIALS),
    st.sampled_from(EDGE_FLOATS + [repr(x) for x in EDGE_FLOATS] + ["1e154", "1e155", "1e300", "1.7e308", "-1e308"]),
    st.sampled_from(HUGE_INTS + [str(x) for x in HUGE_INTS]),
)

# For any argument: all of the above, plus other huge and negative numbers, empty and
# non-numeric text, unicode, long strings (up to 100 kB) and any float.
fuzz_value = st.one_of(
    numeric_fuzz,
    st.integers(min_value=2**53, max_value=10**40).map(str),
    st.integers(min_value=-(10**6), max_value=-1),
    st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False),
    st.sampled_from(TEXT),
    st.text(max_size=20),
    st.integers(min_value=1_000, max_value=100_000).flatmap(
        lambda n: st.sampled_from(["x" * n, "9" * n, "0." + "0" * n + "1", "1" + "0" * n, "é" * (n // 2)])
    ),
    st.floats(),
)


def _json(d) -> str:
    return json.dumps(d, sort_keys=True)


@st.composite
def valid_reward_call(draw, now: str, max_items: int) -> tuple[list[str], list]:
    """reward.lua's keys and arguments for a batch of 1..max_items items, as apply_rewards sends them."""
    # Half the time a request that has a unit and no reward yet: the full path, quota included.
    rids = draw(st.lists(st.one_of(st.sampled_from(REQUEST_IDS), st.sampled_from(["r2", "r4"])), min_size=1,
                         max_size=max_items))
    default = draw(st.sampled_from([None, 0.0, 1.0]))
    quota = draw(st.sampled_from([None, 5, 5]))
    ks = [*REW_SHARED_KEYS, *(keys.request(EXP, rid) for rid in rids)]
    argv = [
        now, str(FEEDBACK_MAXLEN), "" if default is None else repr(default), "" if quota is None else str(quota),
        keys.quota_prefix(EXP), "3600", str(FEEDBACK_BYTES),
        # Half the time the policy keeps per-unit aggregates: the unit's counters grow too.
        *draw(st.sampled_from([["", ""], [keys.unit_prefix(EXP), "3600"]])),
    ]
    for rid in rids:
        # The nonce: the record's (its token's), none (an older token), or another prediction's
        # under the same id ('mismatch').
        argv += [draw(st.sampled_from(["a", "b"])), repr(draw(st.floats(-10, 10))),
                 draw(st.sampled_from(["", "1", "[0]", '"x"'])), draw(st.sampled_from(["0", "1"])),
                 draw(st.sampled_from([f"nonce-{rid}", f"nonce-{rid}", "", "other-prediction"]))]
    return ks, argv


@st.composite
def valid_call(draw) -> tuple[str, list[str], list]:
    """A call as ExperimentStore makes it (same keys, same argument layout) on the seeded state."""
    script = draw(st.sampled_from(SCRIPTS))
    now = repr(T0 + draw(st.sampled_from([1.0, 120.0, 7200.0])))
    if script == "record":
        # Half the time an id never served, so the script goes past its "already recorded" exit.
        rid = draw(st.one_of(st.sampled_from(REQUEST_IDS), st.sampled_from([f"n{k}" for k in range(10)])))
        variant = draw(st.sampled_from(["a", "b", "c"]))
        unit = draw(st.sampled_from(["u0", "u9"]))
        record = {"pred": "1", "unit": unit}
        log = {"rid": rid, "variant": variant} if draw(st.booleans()) else None
        deadline = draw(st.sampled_from([None, T0 + 3600, T0 - 60]))
        sweep = None if deadline is None else draw(st.sampled_from([None, T0 + 7200]))
        # Half the time the policy keeps per-unit aggregates: the record counts the unit's request.
        counted = draw(st.booleans())
        ks = [keys.request(EXP, rid), keys.arms(EXP), keys.decision_log(EXP), keys.pending(EXP),
              *([keys.unit_prefix(EXP) + unit] if counted else [])]
        argv = [
            variant, "86400", str(DECISION_LOG_MAXLEN if log else 0), "" if deadline is None else repr(deadline),
            draw(st.sampled_from([f"nonce-{rid}", "another-nonce"])),
            "" if sweep is None else repr(max(deadline, sweep)), str(DECISION_LOG_BYTES), str(len(record)),
            str(draw(st.sampled_from([60, 3600]))) if counted else "",
            *[x for kv in record.items() for x in kv], *[x for kv in (log or {}).items() for x in kv],
        ]
    elif script == "reward":
        # A batch of one or two (the same request twice, sometimes).
        ks, argv = draw(valid_reward_call(now, max_items=2))
    elif script == "expire":
        ks = [keys.pending(EXP), keys.arms(EXP), keys.segments(EXP), keys.linear(EXP)]
        argv = [now, repr(draw(st.sampled_from([0.0, 1.0, -0.5]))), str(draw(st.sampled_from([1, 10, 1000]))),
                keys.request_prefix(EXP)]
    elif script == "series":
        exp = draw(st.sampled_from([EXP, FRESH]))
        ks = [keys.series_lock(exp), keys.series(exp)]
        argv = [str(draw(st.sampled_from([60_000, 3_600_000]))), str(SERIES_MAXLEN), _json({"t": T0, "share": {"a": 1.0}})]
    elif script == "claim_retrain":
        exp = draw(st.sampled_from([EXP, FRESH]))
        ks = [keys.meta(exp), keys.retrain_lock(exp)]
        argv = [str(draw(st.sampled_from([0, 1, 100]))), str(draw(st.sampled_from([60_000, 3_600_000]))),
                draw(st.sampled_from(["owner-1", "owner-2"]))]
    elif script == "retrain_lock":
        exp = draw(st.sampled_from([EXP, FRESH]))
        ks = [keys.retrain_lock(exp)]
        argv = [draw(st.sampled_from(["owner-1", "owner-2"])), draw(st.sampled_from(["0", "60000"]))]
    elif script == "transition":
        ks = [keys.meta(EXP), keys.history(EXP)]
        argv = [
            draw(st.sampled_from(["*", "exploring", "promoted"])), draw(st.sampled_from(["exploring", "promoted", "paused"])),
            draw(st.sampled_from(["", "-", "a", "b"])), _json({"kind": "promotion"}), now,
            draw(st.sampled_from(["", json.dumps({"a": 0.5, "b": 0.5})])), draw(st.sampled_from(["", "a"])),
            str(HISTORY_MAXLEN),
        ]
    elif script == "annotate":
        ks = [keys.meta(EXP), keys.history(EXP)]
        argv = [draw(st.sampled_from(["note", "drift"])), draw(st.sampled_from(["seeded", "x"])), _json({"kind": "note"}),
                draw(st.sampled_from(["", "1"])), str(HISTORY_MAXLEN),
                *draw(st.sampled_from([[], ["", ""], ["1", "seeded"], ["1", ""]]))]
    elif script == "shadow":
        # Requests with a label (scored at once), without, and never served; a batch of one or
        # two answers (the same request and variant twice, sometimes).
        rids = draw(st.lists(st.sampled_from(["r0", "r2", "n1"]), min_size=1, max_size=2))
        ks = [*SHADOW_SHARED_KEYS, *(keys.request(EXP, rid) for rid in rids)]
        argv = [now, str(SHADOW_LOG_MAXLEN), str(SHADOW_LOG_BYTES), str(FEEDBACK_MAXLEN), str(FEEDBACK_BYTES)]
        for _ in rids:
            argv += [draw(st.sampled_from(["s", "t"])), draw(st.sampled_from(["[1]", "[0]", '"x"'])),
                     draw(st.sampled_from(["", "[0.5]"]))]
    elif script == "set_role":
        ks = [keys.meta(EXP), keys.history(EXP), keys.shadow_rewards(EXP), keys.arms(EXP)]
        argv = [draw(st.sampled_from(["s", "c"])), draw(st.sampled_from(["live", "shadow"])),
                draw(st.sampled_from(["live", "shadow"])), draw(st.sampled_from(["live", "shadow"])),
                _json({"action": "live"}), now, str(HISTORY_MAXLEN), draw(st.sampled_from(["0", "1"])),
                draw(st.sampled_from(["0", "1"]))]
    else:  # add_variant
        ks = [keys.dynamic_variants(EXP), keys.meta(EXP), keys.history(EXP)]
        argv = [draw(st.sampled_from(["c", "d"])), _json({"path": "/m/d.skops"}), _json({"kind": "challenger"}), now,
                str(HISTORY_MAXLEN)]
    return script, ks, argv


# ARGV positions (0-based) that the scripts read as numbers: most replacements land on one of
# these, where Lua's and Redis's parsers can disagree.
NUMERIC_ARGS = {
    "record": [1, 2, 3, 5, 6, 7, 8], "reward": [0, 1, 2, 3, 5, 6, 8, 10], "expire": [0, 1, 2], "series": [0, 1],
    "claim_retrain": [0, 1], "retrain_lock": [1], "transition": [4, 7], "annotate": [4], "add_variant": [3, 4],
    "shadow": [0, 1, 2, 3, 4], "set_role": [5, 6],
}


@st.composite
def fuzzed_call(draw) -> tuple[str, list[str], list]:
    """A valid call with some arguments replaced by fuzz values and, sometimes, the wrong number
    of arguments (too few, a few extra, or thousands extra)."""
    script, ks, argv = draw(valid_call())
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 3]))):
        if draw(st.integers(0, 3)) < 3:
            i, value = draw(st.sampled_from(NUMERIC_ARGS[script])), draw(numeric_fuzz)
        else:
            i, value = draw(st.integers(0, len(argv) - 1)), draw(fuzz_value)
        if script == "add_variant" and i == 1:
            # The variant's description is stored verbatim by contract (its only caller sends
            # json.dumps output, and snapshots() json-decodes it); fuzz it, but as JSON text.
            value = json.dumps(value)
        argv[i] = value
    shape = draw(st.sampled_from(["keep"] * 6 + ["truncate", "extend", "many"]))
    if shape == "truncate":
        argv = argv[: draw(st.integers(0, len(argv) - 1))]
    elif shape == "extend":
        argv = argv + draw(st.lists(fuzz_value, min_size=1, max_size=3))
    elif shape == "many":
        argv = argv + ["f", "v"] * draw(st.integers(4_001, 5_000))
    return script, ks, argv


# ---------------------------------------------------------------------------------------------
# 1 + 2: direct calls never leave a partial write; after any sequence, the sums stay finite.


@FUZZ
@given(calls=st.lists(fuzzed_call(), min_size=1, max_size=8))
def test_scripts_never_leave_a_partial_write(raw, shas, store, loop, calls):
    reset(raw, store, loop)
    for i, (script, ks, argv) in enumerate(calls):
        note(f"call {i}: {describe_call(script, ks, argv)}")  # printed with a failing example
        assert_no_partial_write(raw, shas, script, ks, argv)
    assert_sums_finite(store, loop)


# Partial writes found while writing this test (by the fuzzer above and by probes of where Lua's
# tonumber accepts what Redis then refuses), kept as fixed cases so that each fails on its own,
# whatever the fuzzer happens to reach first, until the scripts check these arguments the way
# Redis will parse them.
def _rec(ttl="86400", deadline="", log_pairs=("rid", "n0"), unit_ttl="") -> list:
    return ["a", ttl, str(DECISION_LOG_MAXLEN), deadline, "nonce", "", str(DECISION_LOG_BYTES), "1", unit_ttl, "pred", "1",
            *log_pairs]


def _rew(window="3600", maxlen=str(FEEDBACK_MAXLEN), budget=str(FEEDBACK_BYTES), quota="5", unit=("", "")) -> list:
    return [repr(T0 + 1), maxlen, "", quota, keys.quota_prefix(EXP), window, budget, *unit, "a", "1.0", "", "0", ""]


def _sh() -> list:
    return [repr(T0 + 1), str(SHADOW_LOG_MAXLEN), str(SHADOW_LOG_BYTES), str(FEEDBACK_MAXLEN), str(FEEDBACK_BYTES)]


# reward.lua's arguments per item: variant, reward, label, from_label, nonce.
REWARD_ITEM_ARGS = 5
REC_KEYS = [keys.request(EXP, "n0"), keys.arms(EXP), keys.decision_log(EXP), keys.pending(EXP)]
REW_KEYS = [*REW_SHARED_KEYS, keys.request(EXP, "r2")]
HIST = [keys.meta(EXP), keys.history(EXP)]

FOUND = [
    pytest.param("record", REC_KEYS, _rec(ttl="1e3"), id="record-ttl-1e3"),
    pytest.param("record", REC_KEYS, _rec(ttl="05"), id="record-ttl-05"),
    pytest.param("record", REC_KEYS, _rec(deadline=" 5"), id="record-deadline-leading-space"),
    pytest.param("record", REC_KEYS, _rec(deadline="1e-400"), id="record-deadline-underflow"),
    pytest.param("record", REC_KEYS, _rec(log_pairs=("f", "v") * 5_000), id="record-10000-log-fields"),
    pytest.param("reward", REW_KEYS, _rew(window="1.0"), id="reward-quota-window-1.0"),
    pytest.param("reward", REW_KEYS, _rew(maxlen="1e20", budget="1e30", quota=""), id="reward-feedback-maxlen-1e20"),
    pytest.param("reward", REW_KEYS, _rew(unit=(keys.unit_prefix(EXP), "1e3")), id="reward-unit-ttl-1e3"),
    pytest.param("reward", REW_KEYS, _rew(unit=(keys.unit_prefix(EXP), "")), id="reward-unit-key-without-ttl"),
    # One argument short of an item: an error, before anything is written.
    pytest.param("reward", [*REW_KEYS, keys.request(EXP, "r4")], [*_rew(), "a", "1.0", "", "0"], id="reward-item-short"),
    # A batch whose second answer is bad (one argument short; a variant name that is no name):
    # an error, and the first answer not written either.
    pytest.param("shadow", [*SHADOW_SHARED_KEYS, keys.request(EXP, "r2"), keys.request(EXP, "r4")],
                 [*_sh(), "s", "[1]", "", "t", "[1]"], id="shadow-item-short"),
    pytest.param("shadow", [*SHADOW_SHARED_KEYS, keys.request(EXP, "r2"), keys.request(EXP, "r4")],
                 [*_sh(), "s", "[1]", "", "t:x", "[1]", ""], id="shadow-second-variant-bad"),
    pytest.param("record", [*REC_KEYS, keys.unit_prefix(EXP) + "u0"], _rec(unit_ttl="3600.0"), id="record-unit-ttl-3600.0"),
    pytest.param("record", [*REC_KEYS, keys.unit_prefix(EXP) + "u0"], _rec(), id="record-unit-key-without-ttl"),
    pytest.param("record", REC_KEYS, _rec(unit_ttl="3600"), id="record-unit-ttl-without-key"),
    pytest.param("series", [keys.series_lock(FRESH), keys.series(FRESH)], ["60000", "1e3", "{}"], id="series-maxlen-1e3"),
    pytest.param("series", [keys.series_lock(FRESH), keys.series(FRESH)], ["60000", "10000"], id="series-no-point"),
    pytest.param("annotate", HIST, ["note", "x", "{}", "", "inf"], id="annotate-cap-inf"),
    pytest.param("transition", HIST, ["*", "paused", "b", "{}", repr(T0), "", "", "1e300"], id="transition-cap-1e300"),
    pytest.param("add_variant", [keys.dynamic_variants(EXP), *HIST], ["d", "{}", "{}", repr(T0 + 5), "1e20"],
                 id="add_variant-cap-1e20"),
]


@pytest.mark.parametrize(("script", "ks", "argv"), FOUND)
def test_found_partial_writes(raw, shas, store, loop, script, ks, argv):
    reset(raw, store, loop)
    assert_no_partial_write(raw, shas, script, ks, argv)
    assert_sums_finite(store, loop)


@pytest.mark.parametrize(("ks", "argv"), [pytest.param(*p.values[1:], id=p.id) for p in FOUND if p.values[0] == "shadow"])
def test_a_bad_answer_refuses_the_whole_shadow_batch(raw, shas, store, loop, ks, argv):
    reset(raw, store, loop)
    reply = assert_no_partial_write(raw, shas, "shadow", ks, argv)
    assert str(reply).startswith("ResponseError: shadow:")


# ---------------------------------------------------------------------------------------------
# 2b: one bad item in a batch of rewards. reward.lua's contract (its header, and apply_rewards'):
# an item whose own arguments are bad is 'invalid' with nothing of it written, and the other items
# of the call apply as if it had not been sent. So the call with the bad item must leave exactly
# the state that the same call without it leaves, from the same starting state.

# Rewards that are not a finite number within the scripts' +-1e300 by any parser (Lua's tonumber
# included: hex, padding and exponents are left out, as Lua reads those as numbers).
BAD_REWARDS = ["", "abc", "nan", "-nan", "NaN", "inf", "-inf", "infinity", "1e999", "-1e999", "1e301", "-1e301",
               str(10**400), "1e", "--1", "1..2", "1,5", "true", "nil", "{}", "[1]", "é", "🙂", "١٢٣", "\x00", "\u00a05"]
bad_reward = st.one_of(
    st.sampled_from(BAD_REWARDS),
    st.floats(min_value=1.0000001e300).map(repr),
    st.floats(max_value=-1.0000001e300).map(repr),
)
# from_label must be '', '0' or '1'.
bad_from_label = st.one_of(
    st.sampled_from(["2", "-1", "01", "00", " 1", "1 ", "1.0", "true", "yes", "\x00"]),
    st.text(max_size=5).filter(lambda t: t not in ("", "0", "1")),
)
# xinfo fields that hold entry ids: XADD '*' takes its ids from the clock, so two runs of the same
# call differ there and only there.
_STREAM_ID_FIELDS = {"last-generated-id", "first-entry", "last-entry", "max-deleted-entry-id", "recorded-first-entry-id",
                     "radix-tree-keys", "radix-tree-nodes"}


def db_state_without_stream_ids(raw: redis.Redis) -> dict[bytes, tuple]:
    out = db_state(raw)
    for key, (kind, content, encoding, has_ttl) in out.items():
        if kind == "stream":
            entries, info = content
            content = ([fields for _, fields in entries], [kv for kv in info if str(kv[0]) not in _STREAM_ID_FIELDS])
            out[key] = (kind, content, encoding, has_ttl)
    return out


def dump_all(raw: redis.Redis) -> list[tuple[bytes, int, bytes]]:
    names = list(raw.scan_iter(count=1000))
    pipe = raw.pipeline(transaction=False)
    for key in names:
        pipe.pttl(key)
        pipe.dump(key)
    replies = pipe.execute()
    return [(key, replies[2 * i], replies[2 * i + 1]) for i, key in enumerate(names)]


def restore_all(raw: redis.Redis, dumped: list[tuple[bytes, int, bytes]]) -> None:
    """Back to the dumped state, byte for byte (RESTORE keeps encodings and the streams' ids)."""
    raw.flushall()
    pipe = raw.pipeline(transaction=False)
    for key, pttl, payload in dumped:
        pipe.restore(key, max(pttl, 0), payload)
    pipe.execute()


@st.composite
def reward_call_with_a_bad_item(draw) -> tuple[list[str], list, int]:
    """A valid reward.lua call of 2-4 items, then one item's reward or from_label made bad; the
    bad item's index."""
    now = repr(T0 + draw(st.sampled_from([1.0, 120.0, 7200.0])))
    ks, argv = draw(valid_reward_call(now, max_items=4).filter(lambda c: len(c[0]) - len(REW_SHARED_KEYS) >= 2))
    n = len(ks) - len(REW_SHARED_KEYS)
    bad = draw(st.integers(0, n - 1))
    first = len(argv) - REWARD_ITEM_ARGS * (n - bad)  # the bad item's variant; then reward, label, from_label
    if draw(st.booleans()):
        argv[first + 1] = draw(bad_reward)
    else:
        argv[first + 3] = draw(bad_from_label)
    return ks, argv, bad


@FUZZ
@given(call_and_bad=reward_call_with_a_bad_item())
def test_a_bad_item_writes_nothing_and_holds_back_no_other(raw, shas, store, loop, call_and_bad):
    ks, argv, bad = call_and_bad
    n = len(ks) - len(REW_SHARED_KEYS)
    first = len(argv) - REWARD_ITEM_ARGS * (n - bad)
    ks_without = ks[: len(REW_SHARED_KEYS) + bad] + ks[len(REW_SHARED_KEYS) + bad + 1:]
    argv_without = argv[:first] + argv[first + REWARD_ITEM_ARGS:]
    note(f"with item {bad} bad: {describe_call('reward', ks, argv)}")
    reset(raw, store, loop)
    hold_ttls(raw)
    start = dump_all(raw)

    replies = raw.evalsha(shas["reward"], len(ks), *ks, *argv)
    with_bad = db_state_without_stream_ids(raw)
    restore_all(raw, start)
    replies_without = raw.evalsha(shas["reward"], len(ks_without), *ks_without, *argv_without)
    without = db_state_without_stream_ids(raw)

    assert replies[bad] == [b"invalid", b""], f"item {bad} has bad arguments but read {replies[bad]!r}"
    assert replies[:bad] + replies[bad + 1:] == replies_without, "the bad item changed the other items' outcomes"
    if with_bad != without:
        raise AssertionError(f"the bad item {bad} wrote, or changed what the others wrote:\n"
                             f"{describe_diff(without, with_bad)}")
    assert_sums_finite(store, loop)


# ---------------------------------------------------------------------------------------------
# 3: rewards through the public API, including values at the overflow edge.

# A reward whose square is just under DBL_MAX, then rewards whose squares are just under half an
# ulp of DBL_MAX: each passes reward.lua's check (done in doubles, where the sum rounds back to
# DBL_MAX), but HINCRBYFLOAT adds in long doubles and the stored sum of squares climbs past the
# largest double until it reads back as inf.
SQRT_DBL_MAX = 1.3407807929942596e154
# What reward.lua and expire.lua let the sums reach (their 'num' check).
SUM_LIMIT = 1e300
JUST_UNDER_HALF_ULP = math.sqrt(0.99) * 2.0**485

reward_value = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e154, SQRT_DBL_MAX, 1e155, 1e300, 1.7e308, -1e308, 1.7976931348623157e308,
                     -1.7976931348623157e308, 5e-324, -0.0, JUST_UNDER_HALF_ULP]),
    st.floats(min_value=-1e10, max_value=1e10),
)


def _arm(raw: redis.Redis, variant: str) -> tuple[int, float, float]:
    n, s, ss = raw.hmget(keys.arms(EXP), f"{variant}:n", f"{variant}:s", f"{variant}:ss")
    return int(n or 0), float(s or 0), float(ss or 0)


@FUZZ
@given(
    default=st.sampled_from([None, 0.0, 1.0, 1e154]),
    steps=st.lists(st.tuples(reward_value, st.sampled_from(["new", "new", "past-deadline", "again"])), min_size=1, max_size=10),
)
@example(default=None, steps=[(1e154, "new")] * 3)  # the second would overflow the sum of squares
@example(default=None, steps=[(1e300, "new"), (-1e300, "again")])
@example(default=None, steps=[(SQRT_DBL_MAX, "new")] + [(JUST_UNDER_HALF_ULP, "new")] * 4)
def test_apply_rewards_is_all_or_nothing(raw, store, loop, default, steps):
    reset(raw, store, loop)
    rules = {EXP: RewardRules(default=default)}
    last_rid = None
    defaulted: set[str] = set()  # requests that took the default (their feedback came late)
    for i, (value, kind) in enumerate(steps):
        if kind == "again" and last_rid is not None:
            rid, now = last_rid, T0 + 1
        else:
            rid = f"q{i}"
            # With a default, the request has a deadline; 'past-deadline' rewards after it.
            assert loop.run_until_complete(store.record_prediction(
                EXP, rid, "a", {"pred": "1"}, ttl_s=86_400, log_entry=None,
                deadline=None if default is None else T0 + 60,
            ))
            now = T0 + (120 if kind == "past-deadline" else 1)
        last_rid = rid
        hold_ttls(raw)
        before = db_state(raw)
        n0, s0, ss0 = _arm(raw, "a")
        [(outcome, _)] = loop.run_until_complete(store.apply_rewards([RewardItem(EXP, rid, "a", value)], now, rules))
        after = db_state(raw)
        where = f"step {i}: reward {value!r} ({kind}) for {rid} at {now!r}, default {default!r}"
        note(f"{where}: {outcome}; arm a before: n={n0}, s={s0!r}, ss={ss0!r}")
        assert outcome in {"accepted", "invalid", "duplicate", "late"}, f"{where}: outcome {outcome}"
        if outcome == "invalid":
            if after != before:
                raise AssertionError(f"{where}: 'invalid' but the state changed:\n{describe_diff(before, after)}")
            # 'invalid' only for a value (or the default it would take) that takes a sum past the
            # scripts' limit, +-1e300: well inside a double, as Redis adds in long doubles.
            candidates = [value] + ([default] if default is not None else [])
            assert any(abs(r) > SUM_LIMIT or abs(s0 + r) > SUM_LIMIT or ss0 + r * r > SUM_LIMIT for r in candidates), (
                f"{where}: 'invalid' although no sum would pass the limit (s={s0!r}, ss={ss0!r})"
            )
        elif outcome == "accepted" and rid in defaulted:
            # On-time feedback replayed after the default: it takes the default's place.
            defaulted.discard(rid)
            assert _arm(raw, "a")[0] == n0, f"{where}: took the default's place but the reward count moved"
        elif outcome == "accepted":
            assert _arm(raw, "a")[0] == n0 + 1, f"{where}: accepted but the reward count did not grow"
        if outcome == "late":
            defaulted.add(rid)
        if outcome == "accepted":
            _, s1, ss1 = _arm(raw, "a")
            assert abs(s1) <= SUM_LIMIT and ss1 <= SUM_LIMIT, f"{where}: sums past the limit: s={s1!r}, ss={ss1!r}"
        assert_sums_finite(store, loop, (EXP,))
