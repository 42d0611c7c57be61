"""The store's part for shadow variants: their answers recorded once on the live request (and
scored against its label), run-time roles, and the paired outcomes shadow-first decides on."""
from __future__ import annotations

import json
from typing import Any

from gateway.store import keys
from gateway.store.reward_calls import bounded_calls, label_rows
from gateway.store.limits import (
    FEEDBACK_BYTES,
    FEEDBACK_MAXLEN,
    HISTORY_MAXLEN,
    SHADOW_LOG_BYTES,
    SHADOW_LOG_MAXLEN,
)

# A shadow answer costs the script about what a reward does (a few commands, and per row when the
# label came first): the same bounds keep one call as short.
SHADOWS_PER_CALL = 100
SHADOW_ROWS_PER_CALL = 1000


class ShadowRecords:
    """Mixed into ExperimentStore: uses its client and scripts."""

    async def record_shadow(
        self, experiment: str, request_id: str, variant: str, predictions: str, scores: str | None, now: float
    ) -> str:
        """A shadow's answer (predictions and scores as JSON): recorded | scored (the label came
        first) | duplicate | gone (the request's record expired)."""
        (outcome,) = await self.record_shadows(experiment, [(request_id, variant, predictions, scores)], now)
        return outcome

    async def record_shadows(
        self, experiment: str, answers: list[tuple[str, str, str, str | None]], now: float
    ) -> list[str]:
        """Several shadow answers (request id, variant, predictions, scores) in one round trip and
        a few script calls (bounded by answers and rows, as rewards are): an outcome per answer,
        as record_shadow gives, in order."""
        calls = bounded_calls([label_rows(predictions) for _, _, predictions, _ in answers],
                              SHADOWS_PER_CALL, SHADOW_ROWS_PER_CALL)
        shared_keys = (keys.kpis(experiment), keys.paired(experiment), keys.shadow_log(experiment),
                       keys.feedback(experiment), keys.shadow_rewards(experiment), keys.meta(experiment),
                       keys.arms(experiment))
        shared_args = (repr(now), str(SHADOW_LOG_MAXLEN), str(SHADOW_LOG_BYTES), str(FEEDBACK_MAXLEN), str(FEEDBACK_BYTES))

        def build(pipe):
            for ids in calls:
                call = [answers[i] for i in ids]
                pipe.execute_command(
                    "EVALSHA", self._shas["shadow"], len(shared_keys) + len(call), *shared_keys,
                    *(keys.request(experiment, request_id) for request_id, *_ in call), *shared_args,
                    *(x for _, variant, predictions, scores in call for x in (variant, predictions, scores or "")),
                )

        return [outcome for outcomes in await self._run_scripted(build) for outcome in outcomes] if answers else []

    async def set_role(
        self, experiment: str, variant: str, role: str, *, expected: str, policy_role: str, entry: dict[str, Any],
        now: float, reopen: bool = True, credit: bool = False,
    ) -> bool:
        """Move `variant` to `role` if its role is still `expected` (`policy_role` when no run-time
        role is set), recording `entry`; going live reopens exploration when `reopen`, and with
        `credit` its posterior takes the rewards it earned in shadow."""

        def build(pipe):
            pipe.execute_command("EVALSHA",
                self._shas["set_role"], 4, keys.meta(experiment), keys.history(experiment),
                keys.shadow_rewards(experiment), keys.arms(experiment),
                variant, role, expected, policy_role, json.dumps(entry), repr(now), str(HISTORY_MAXLEN),
                "1" if reopen else "0", "1" if credit else "0",
            )

        (done,) = await self._run_scripted(build)
        return bool(done)

    async def paired_counts(self, experiment: str) -> dict[tuple[str, str], dict[str, int]]:
        """(shadow, served) -> {sw: only the shadow right, lw: only the served one, n: rows}."""
        out: dict[tuple[str, str], dict[str, int]] = {}
        for key, value in (await self.client.hgetall(keys.paired(experiment))).items():
            pair, _, cell = key.rpartition(":")
            shadow, _, served = pair.partition("|")
            out.setdefault((shadow, served), {"sw": 0, "lw": 0, "n": 0})[cell] = int(value)
        return out

    async def shadow_rewards(self, experiment: str) -> dict[str, dict[str, float]]:
        """shadow -> {n, s, ss}: the rewards it earned in shadow, not yet added to its arm."""
        out: dict[str, dict[str, float]] = {}
        for key, value in (await self.client.hgetall(keys.shadow_rewards(experiment))).items():
            variant, _, cell = key.rpartition(":")
            out.setdefault(variant, {"n": 0, "s": 0.0, "ss": 0.0})[cell] = float(value)
        return out

    async def shadow_answers(self, experiment: str, count: int) -> list[dict[str, str]]:
        """The newest `count` shadow answers, oldest first."""
        raw = await self.client.xrevrange(keys.shadow_log(experiment), count=count)
        return [fields for _, fields in reversed(raw)]
