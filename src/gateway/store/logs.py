"""The store's reads of the decision log, the feedback stream and the KPI counters: what the
monitor and the retrainer read back (written by the scripts in store/lua)."""
from __future__ import annotations

from gateway.store import keys


class LogReads:
    """Mixed into ExperimentStore: uses its client."""

    async def kpi_counts(self, experiments: list[str]) -> dict[str, dict[str, dict[str, int]]]:
        """Lifetime confusion counts per experiment and variant: {tp, fp, tn, fn, correct}."""
        pipe = self.client.pipeline(transaction=False)
        for e in experiments:
            pipe.hgetall(keys.kpis(e))
        out: dict[str, dict[str, dict[str, int]]] = {}
        for e, raw in zip(experiments, await pipe.execute()):
            per: dict[str, dict[str, int]] = {}
            for key, value in raw.items():
                variant, _, cell = key.rpartition(":")
                per.setdefault(variant, {})[cell] = int(value)
            out[e] = per
        return out

    async def decisions_since(self, experiment: str, since: float, count: int) -> list[dict[str, str]]:
        """The first `count` decision-log entries logged at or after `since` (unix seconds)."""
        raw = await self.client.xrange(keys.decision_log(experiment), min=str(int(since * 1000)), count=count)
        return [fields for _, fields in raw]

    async def decisions_between(self, experiment: str, start: float, end: float, count: int) -> list[dict[str, str]]:
        """The newest `count` decision-log entries logged between `start` and `end`, oldest first."""
        raw = await self.client.xrevrange(
            keys.decision_log(experiment), max=str(int(end * 1000)), min=str(int(start * 1000)), count=count
        )
        return [fields for _, fields in reversed(raw)]

    async def newest_feedback(
        self, experiment: str, variants: list[str], per_variant: int, max_entries: int, page: int = 1000
    ) -> list[dict[str, str]]:
        """Feedback-stream entries, oldest first, reading back from the newest until each of
        `variants` has `per_variant` of them (or `max_entries` were read, or the stream ends)."""
        seen = dict.fromkeys(variants, 0)
        out: list[dict[str, str]] = []
        upper = "+"
        while len(out) < max_entries and any(n < per_variant for n in seen.values()):
            raw = await self.client.xrevrange(keys.feedback(experiment), max=upper, count=page)
            for _, fields in raw:
                out.append(fields)
                if fields.get("variant") in seen:
                    seen[fields["variant"]] += 1
            if len(raw) < page:
                break
            upper = "(" + raw[-1][0]  # exclusive: continue below the oldest entry read
        return out[::-1]

    async def recent_decisions(self, experiment: str, count: int) -> list[dict[str, str]]:
        """The newest `count` decision-log entries, oldest first."""
        raw = await self.client.xrevrange(keys.decision_log(experiment), count=count)
        return [fields for _, fields in reversed(raw)]

    async def recent_feedback(self, experiment: str, count: int) -> dict[str, dict[str, str]]:
        """Feedback by request id, from the newest `count` entries of the feedback stream (the
        served variant's: a shadow's late-scored entry carries the same label)."""
        raw = await self.client.xrevrange(keys.feedback(experiment), count=count)
        return {fields["rid"]: fields for _, fields in raw if fields.get("role") != "shadow"}
