"""Experiment state in Redis: served requests, rewards applied exactly once, posteriors'
counters, status and decision history. Async, for the router replicas."""
from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from importlib import resources

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import AskError, NoScriptError, ResponseError, TryAgainError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store import keys
from gateway.store.reward_calls import reward_calls
from gateway.store.connect import STORE_DOWN, Replication, drop_idle_connections, open_redis, split_url
from gateway.store.limits import (
    DECISION_LOG_BYTES,
    DECISION_LOG_MAXLEN,
    FEEDBACK_BYTES,
    FEEDBACK_MAXLEN,
    HISTORY_MAXLEN,
    SERIES_MAXLEN,
)
from gateway.store.logs import LogReads
from gateway.store.replication import ReplicaWaits, ScriptCalls, each_call_judged, execute
from gateway.store.shadow import ShadowRecords
from gateway.store.snapshot import RewardItem, RewardRules, Snapshot, parse_arms, parse_linear, parse_segments
from gateway.store.turn_calls import TurnCalls

# Shared functions each script starts with: scoring of labelled predictions, linear-model counters,
# what a 0/1 label is.
_LIBS = {"reward.lua": ("labels.lua", "scoring.lua", "linear.lua", "reward_rule.lua"), "shadow.lua": ("labels.lua", "scoring.lua"),
         "expire.lua": ("linear.lua",)}


# A call's answer that says only that it did not run (or may not have): run again on a retry.
_RETRIED = (NoScriptError, RedisConnectionError, RedisTimeoutError, AskError)


def _lua(name: str) -> str:
    folder = resources.files("gateway.store").joinpath("lua")
    libs = "".join(folder.joinpath("lib", lib).read_text() for lib in _LIBS.get(name, ()))
    return libs + folder.joinpath(name).read_text()


class ExperimentStore(ShadowRecords, LogReads):
    def __init__(self, client: aioredis.Redis | RedisCluster, replication: Replication = Replication()):
        self.client = client
        self.waits = ReplicaWaits(replication)  # replicas that must confirm scripted writes
        self._sources = {name: _lua(f"{name}.lua") for name in (
            "record", "reward", "expire", "transition", "annotate", "series", "add_variant", "claim_retrain",
            "retrain_lock", "shadow", "set_role",
        )}
        self._shas: dict[str, str] = {}
        # The records and unit reads of requests under way together: one pipeline per turn.
        self._turn = TurnCalls(client, lambda build: self._run_scripted(build, isolate=True),
                               reads_apart=bool(replication.replicas))

    @classmethod
    def from_url(cls, url: str) -> ExperimentStore:
        """One server, or a Redis Cluster with redis+cluster:// (gateway.store.connect)."""
        return cls(open_redis(url), split_url(url)[1])

    async def close(self) -> None:
        await self.client.aclose()

    async def _load_scripts(self) -> None:
        # On a cluster SCRIPT LOAD goes to every master (redis-py's routing for it), so each
        # experiment's slot finds the scripts wherever it lives.
        for name, src in self._sources.items():
            self._shas[name] = await self.client.script_load(src)

    async def _run_scripted(self, build, isolate: bool = False) -> list:
        """Run a pipeline that calls our scripts by sha; reload them once if Redis lost them
        (a restarted server forgets its script cache, and so may a replica promoted in a
        cluster failover). Scripts are called as EVALSHA commands (redis-py blocks pipe.evalsha
        on a cluster): a cluster pipeline then sends each to the node of its keys' slot (redis-py
        refuses a call whose keys span slots), the calls of one node on one connection.
        `isolate`: a call's own error (a script's refusal) is its answer, for the calls of
        different requests in one pipeline, and writes the replicas did not confirm fail only
        the calls that wrote on that master; else the first error is raised."""
        if not self._shas:
            await self._load_scripts()
        reconnected = reloaded = remapped = False
        # Answers from the try before, when only some calls failed: of the calls (not the confirmations).
        earlier: list | None = None
        while True:
            pipe = self.client.pipeline(transaction=False)
            calls = ScriptCalls(pipe)
            build(calls)
            masters, of_call = await self.waits.add(self.client, pipe, calls.first_keys)
            try:
                results = await execute(pipe, masters)
                # This try's confirmations: they cover an earlier try's writes too (ReplicaWaits).
                answers, confirmations = self.waits.split(results, masters)
                if earlier is not None:
                    # The calls that failed only for want of the script or a connection ran again;
                    # every other keeps its first answer (a reward accepted then reads 'duplicate'
                    # now; a record's own error stays its error).
                    answers = [new if isinstance(old, _RETRIED) else old for old, new in zip(earlier, answers)]
                    earlier = None
                # A cluster pipeline reports a connection cut on one node in that node's results.
                cut = next((r for r in results if isinstance(r, (RedisConnectionError, RedisTimeoutError))), None)
                if cut is not None:
                    if not reconnected:
                        earlier = answers
                    raise cut
            except (RedisConnectionError, RedisTimeoutError):
                # A connection cut mid-command: our scripts are safe to run again (rewards are
                # claimed once, a record carries its call's nonce), so retry once on a new one.
                if reconnected:
                    raise
                reconnected = True
                await drop_idle_connections(self.client)
                continue
            if not reloaded and any(isinstance(r, NoScriptError) for r in answers):
                await self._load_scripts()
                reloaded = True
                earlier = answers  # on a cluster, only the node that lost them answered NOSCRIPT
                continue
            # Redirected (MOVED, or ASK: only under wait_replicas, see replication.execute): the
            # slot map is stale; learn it and send again, where this try's calls now belong.
            if not remapped and any(isinstance(r, AskError) for r in results):
                await self.client.nodes_manager.initialize()
                remapped = True
                earlier = answers
                continue
            if remapped:  # still redirected: the slot is being moved; the caller spools, as for TRYAGAIN
                answers = [TryAgainError(f"the slot is being moved: {a}") if isinstance(a, AskError) else a
                           for a in answers]
            if not isolate:
                for r in answers:
                    if isinstance(r, Exception):
                        raise r
            failed = self.waits.unconfirmed(masters, confirmations)
            if failed and not isolate:
                raise next(iter(failed.values()))
            # Under isolate only the calls that wrote on a master left unconfirmed fail.
            return each_call_judged(answers, of_call, failed) if failed else answers

    async def ensure_experiment(self, experiment: str, now: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hsetnx(keys.meta(experiment), "status", "exploring")
        pipe.hsetnx(keys.meta(experiment), "started_at", repr(now))
        await pipe.execute()

    async def reward_secret(self) -> str:
        """The HMAC key shared by all router replicas, made once."""
        await self.client.set(keys.SECRET, secrets.token_hex(32), nx=True)
        return await self.client.get(keys.SECRET)

    async def record_prediction(
        self,
        experiment: str,
        request_id: str,
        variant: str,
        record: dict[str, str],
        ttl_s: float,
        log_entry: dict[str, str] | None,
        deadline: float | None = None,
        nonce: str | None = None,
        sweep_at: float | None = None,
        unit_window_s: float | None = None,
    ) -> bool:
        """One round trip: the request record (for exactly-once rewards and label joins), the
        variant's request counter, the decision log and, with a `deadline`, the pending set the
        default reward is applied from (at `sweep_at`, default the deadline; feedback counts as
        on time until the deadline either way). With `unit_window_s` (the policy's aggregates)
        and a unit on the record, the unit's request count too, kept that long since its last
        activity: counted with the record, so exactly once per request id, spool or not. False
        if the id was already used."""
        record_args = [x for kv in record.items() for x in kv]
        log_args = [x for kv in (log_entry or {}).items() for x in kv]
        nonce = nonce or secrets.token_hex(8)
        unit = record.get("unit") if unit_window_s is not None else None
        unit_keys = [keys.unit_prefix(experiment) + unit] if unit else []

        def build(pipe):
            pipe.execute_command("EVALSHA",
                self._shas["record"], 4 + len(unit_keys),
                keys.request(experiment, request_id), keys.arms(experiment), keys.decision_log(experiment),
                keys.pending(experiment), *unit_keys,
                variant, str(max(1, int(ttl_s))), str(DECISION_LOG_MAXLEN if log_entry else 0),
                "" if deadline is None else repr(deadline), nonce,
                "" if deadline is None or sweep_at is None else repr(max(deadline, sweep_at)),
                str(DECISION_LOG_BYTES), str(len(record)), str(max(1, int(unit_window_s))) if unit else "",
                *record_args, *log_args,
            )

        # With the records and unit reads of the requests under way with this one (store.turn_calls).
        return bool(await self._turn.call(build))

    async def unit_counters(self, experiment: str, unit: str) -> list[str | None]:
        """The unit's aggregate counters as they stand [n, ln, ls, rn, rs] (None: never set),
        read only (record_prediction counts the request): one round trip, shared with the
        requests under way together (store.turn_calls)."""
        before = await self._turn.read_unit(keys.unit_prefix(experiment) + unit)
        return [None if v is None else (v.decode() if isinstance(v, bytes) else str(v)) for v in before]

    async def read_requests(self, experiment: str, request_ids: list[str]) -> list[dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for rid in request_ids:
            pipe.hgetall(keys.request(experiment, rid))
        return await pipe.execute()

    async def apply_rewards(
        self, items: list[RewardItem], now: float, rules: dict[str, RewardRules] | None = None
    ) -> list[tuple[str, str]]:
        """Each item's outcome (accepted, also on time in place of a default the sweeper gave
        first; duplicate; late: after the window, kept but not learned; quota: the unit used its
        rewards; unknown: no such served request; mismatch: served by another variant, or
        another prediction under the request id (the token's nonce); invalid: not a finite
        number, or the variant's sums would overflow, nothing written) with the prediction's
        traceparent when accepted. `rules` by experiment (defaults: no default reward, no quota)."""
        if not items:
            return []
        rules = rules or {}
        chunks = reward_calls(items)
        try:
            return await self._apply_chunks(items, chunks, now, rules)
        except ResponseError as err:
            if isinstance(err, STORE_DOWN) or all(len(ids) == 1 for _, ids in chunks):
                raise
            # A script error in one item (a corrupt value in Redis) must not hold back the others
            # of its call: one item a call, so every other item applies (those applied already
            # read 'duplicate') and only the bad one fails, as before rewards were batched.
            return await self._apply_chunks(items, [(e, [i]) for e, ids in chunks for i in ids], now, rules)

    async def _apply_chunks(self, items: list[RewardItem], chunks: list[tuple[str, list[int]]], now: float,
                            rules: dict[str, RewardRules]) -> list[tuple[str, str]]:
        def build(pipe):
            for experiment, ids in chunks:
                r = rules.get(experiment) or RewardRules()
                item_args = []
                for i in ids:
                    it = items[i]
                    item_args += (it.variant, repr(float(it.reward)), it.label, "1" if it.from_label and r.shadows_earn else "0",
                                  it.nonce)
                pipe.execute_command(
                    "EVALSHA", self._shas["reward"], 9 + len(ids),
                    keys.arms(experiment), keys.feedback(experiment), keys.meta(experiment), keys.pending(experiment),
                    keys.kpis(experiment), keys.paired(experiment), keys.segments(experiment),
                    keys.shadow_rewards(experiment), keys.linear(experiment, r.linear_context),
                    *(keys.request(experiment, items[i].request_id) for i in ids),
                    repr(now), str(FEEDBACK_MAXLEN), "" if r.default is None else repr(float(r.default)),
                    "" if r.max_per_unit is None else str(r.max_per_unit), keys.quota_prefix(experiment),
                    str(max(1, int(r.window_s))), str(FEEDBACK_BYTES),
                    *(("", "") if r.unit_window_s is None else (keys.unit_prefix(experiment), str(max(1, int(r.unit_window_s))))),
                    *item_args,
                )

        outcomes: list[tuple[str, str]] = [("", "")] * len(items)
        for (_, ids), replies in zip(chunks, await self._run_scripted(build)):
            if len(replies) != len(ids):
                raise ResponseError(f"reward.lua answered {len(replies)} items of {len(ids)}")
            for i, (outcome, tp) in zip(ids, replies):
                outcomes[i] = (outcome, tp)
        return outcomes

    async def expire_rewards(
        self, experiment: str, default: float, now: float, limit: int = 1000, linear_context: Sequence[str] = ()
    ) -> int:
        """Give the default reward to up to `limit` requests whose window ended without
        feedback; the number that took it. `linear_context`: linear_thompson's (keys.linear)."""

        def build(pipe):
            pipe.execute_command(
                "EVALSHA", self._shas["expire"], 4, keys.pending(experiment), keys.arms(experiment),
                keys.segments(experiment), keys.linear(experiment, linear_context),
                repr(now), repr(float(default)), str(limit), keys.request_prefix(experiment),
            )

        (applied,) = await self._run_scripted(build)
        return int(applied)

    async def snapshots(
        self, experiments: list[str], linear_contexts: Mapping[str, Sequence[str]] | None = None
    ) -> dict[str, Snapshot]:
        """Each experiment's counters and meta; the linear models' only for the experiments in
        `linear_contexts` (linear_thompson: experiment -> its context)."""
        linear_contexts = linear_contexts or {}
        pipe = self.client.pipeline(transaction=False)
        for e in experiments:
            pipe.hgetall(keys.arms(e))
            pipe.hgetall(keys.meta(e))
            pipe.hgetall(keys.dynamic_variants(e))
            pipe.hgetall(keys.segments(e))
        # Every refresh (10 a second) reads these: the linear counters only where they exist.
        linear = [e for e in experiments if e in linear_contexts]
        for e in linear:
            pipe.hgetall(keys.linear(e, linear_contexts[e]))
        raw = await pipe.execute()
        models = dict(zip(linear, raw[4 * len(experiments):]))
        return {
            e: Snapshot(
                arms=parse_arms(raw[4 * i]),
                meta=raw[4 * i + 1],
                dynamic={k: json.loads(v) for k, v in raw[4 * i + 2].items()},
                segments=parse_segments(raw[4 * i + 3]),
                linear=parse_linear(models.get(e, {})),
            )
            for i, e in enumerate(experiments)
        }

    async def history(self, experiment: str) -> list[dict]:
        """The newest HISTORY_MAXLEN decisions, oldest first."""
        return [json.loads(x) for x in await self.client.lrange(keys.history(experiment), -HISTORY_MAXLEN, -1)]

    async def transition(
        self,
        experiment: str,
        *,
        expected_status: str,
        new_status: str,
        champion: str,
        entry: dict,
        now: float,
        frozen_weights: dict[str, float] | None = None,
        expected_champion: str = "",
    ) -> bool:
        """Atomically move the experiment to `new_status` if it is still in `expected_status`
        ('*' for any) with `expected_champion` ('' for any). `champion`: a variant, '' to keep,
        '-' to clear. True if it happened."""

        def build(pipe):
            pipe.execute_command("EVALSHA",
                self._shas["transition"], 2, keys.meta(experiment), keys.history(experiment),
                expected_status, new_status, champion, json.dumps(entry, sort_keys=True), repr(now),
                json.dumps(frozen_weights) if frozen_weights else "", expected_champion, str(HISTORY_MAXLEN),
            )

        (done,) = await self._run_scripted(build)
        return bool(done)

    async def annotate(self, experiment: str, field: str, value: str, entry: dict, *, only_if_changed: bool = False,
                       expected: str | None = None) -> bool:
        """Set a meta field and append its history entry atomically; with `only_if_changed`,
        nothing happens when the field already holds `value`; with `expected`, unless it holds
        that now ('' for absent). True if it was set."""

        def build(pipe):
            pipe.execute_command("EVALSHA",
                self._shas["annotate"], 2, keys.meta(experiment), keys.history(experiment),
                field, value, json.dumps(entry, sort_keys=True), "1" if only_if_changed else "", str(HISTORY_MAXLEN),
                "" if expected is None else "1", expected or "",
            )

        (done,) = await self._run_scripted(build)
        return bool(done)

    async def append_series(self, experiment: str, point: dict, interval_s: float) -> bool:
        """Add a time-series point unless another replica already did in this interval."""

        def build(pipe):
            pipe.execute_command("EVALSHA",
                self._shas["series"], 2, keys.series_lock(experiment), keys.series(experiment),
                str(max(1, int(interval_s * 1000))), str(SERIES_MAXLEN), json.dumps(point, sort_keys=True),
            )

        (done,) = await self._run_scripted(build)
        return bool(done)

    async def series(self, experiment: str, since: float | None = None, limit: int = 2000) -> list[dict]:
        """Points in time order, newest `limit` (after `since`, unix seconds, if given)."""
        start = f"{int(since * 1000) + 1}" if since is not None else "-"
        raw = await self.client.xrevrange(keys.series(experiment), max="+", min=start, count=limit)
        return [json.loads(fields["p"]) for _, fields in reversed(raw)]

    async def add_variant(self, experiment: str, name: str, variant: dict, entry: dict, now: float) -> bool:
        """Record a run-time challenger and reopen exploration; False if the name is taken."""

        def build(pipe):
            pipe.execute_command("EVALSHA",
                self._shas["add_variant"], 3, keys.dynamic_variants(experiment), keys.meta(experiment),
                keys.history(experiment), name, json.dumps(variant, sort_keys=True),
                json.dumps(entry, sort_keys=True), repr(now), str(HISTORY_MAXLEN),
            )

        (done,) = await self._run_scripted(build)
        return bool(done)

    async def claim_retrain(self, experiment: str, labels_needed: int, lock_s: float, owner: str) -> bool:
        """Take the retraining turn (0 labels needed: an explicit request) under `owner`'s lock."""

        def build(pipe):
            pipe.execute_command("EVALSHA",
                self._shas["claim_retrain"], 2, keys.meta(experiment), keys.retrain_lock(experiment),
                str(labels_needed), str(int(lock_s * 1000)), owner,
            )

        (done,) = await self._run_scripted(build)
        return bool(done)

    async def renew_retrain(self, experiment: str, owner: str, lock_s: float) -> bool:
        """Extend `owner`'s lock; False if it is no longer theirs."""
        return await self._retrain_lock(experiment, owner, str(int(lock_s * 1000)))

    async def release_retrain(self, experiment: str, owner: str) -> bool:
        """Free the lock if `owner` still holds it."""
        return await self._retrain_lock(experiment, owner, "0")

    async def _retrain_lock(self, experiment: str, owner: str, ttl_ms: str) -> bool:
        def build(pipe):
            pipe.execute_command("EVALSHA", self._shas["retrain_lock"], 1, keys.retrain_lock(experiment), owner, ttl_ms)

        (done,) = await self._run_scripted(build)
        return bool(done)

    async def set_meta(self, experiment: str, field_name: str, value: str) -> None:
        await self.client.hset(keys.meta(experiment), field_name, value)
