"""The retrainer, off the request path: joins the decision log with labelled feedback, trains
the policy's candidates in a Ray task, and adds an admitted challenger as a new variant."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve

from gateway.decisions import allocation
from gateway.learning import aggregates
from gateway.learning.registry import ModelRegistry
from gateway.learning.retrain import MIN_ROWS, LabelledData, live_refs, retrain_against_live
from gateway.serving.drain import DRAIN_POLL_S
from gateway.policy import Policy
from gateway.store.experiments import ExperimentStore
from gateway.telemetry.logs import setup_logging
from gateway.telemetry.tracing import setup_tracing, shutdown_tracing, tracer

log = logging.getLogger("gateway.retrainer")

# Held while a retraining runs; it expires by itself if the retrainer dies mid-way.
LOCK_S = 600.0


@ray.remote(num_cpus=1)
def train_challenger(
    policy: dict, data: LabelledData, live: list[dict], registry_root: str, seed: int, taken: list[str]
) -> dict[str, Any]:
    """A Ray task, so a cluster can run it anywhere (see retrain_against_live)."""
    return retrain_against_live(Policy.model_validate(policy), data, live, ModelRegistry(Path(registry_root)), seed, taken)


def _refs(base: dict[str, dict], experiment: str, dynamic: dict[str, dict], policy: Policy) -> dict[str, dict]:
    """Each variant's artifact and, when it takes a feature subset, its features."""
    out = {name: {**ref, **({"features": list(v.features)} if (v := _variant(policy, name)) and v.features else {})}
           for name, ref in base.items()}
    for name, v in dynamic.items():
        out[name] = {"experiment": experiment, "variant": name, "path": v["path"], "sha256": v["sha256"],
                     **({"features": v["features"]} if v.get("features") else {})}
    return out


def _variant(policy: Policy, name: str):
    return next((v for v in policy.variants if v.name == name), None)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=8,
                  graceful_shutdown_wait_loop_s=DRAIN_POLL_S)
class Retrainer:
    def __init__(self, policies: dict[str, dict], artifacts: dict[str, dict[str, dict]], redis_url: str, registry_root: str):
        setup_tracing("retrainer")
        setup_logging("retrainer")
        self.policies = {e: Policy.model_validate(p) for e, p in policies.items()}
        self.artifacts = artifacts
        self.store = ExperimentStore.from_url(redis_url)
        self.registry_root = registry_root

    async def retrain(self, experiment: str, trigger: str) -> dict[str, Any]:
        """One retraining run, its own trace. The caller holds the experiment's retrain lock
        (renews it while this runs, and frees it)."""
        with tracer().start_as_current_span("retrain", context=None) as span:
            span.set_attributes({"gateway.experiment": experiment, "gateway.trigger": trigger})
            summary = await self._retrain(experiment, trigger)
            span.set_attributes({"gateway.outcome": summary["outcome"], "gateway.rows": summary.get("rows", 0)})
            return summary

    async def _retrain(self, experiment: str, trigger: str) -> dict[str, Any]:
        base = self.policies[experiment]
        now = time.time()
        snap = (await self.store.snapshots([experiment]))[experiment]
        policy = allocation.effective_policy(base, snap.dynamic)
        window = base.retrain.window_labels
        decisions = await self.store.recent_decisions(experiment, window * 4)
        feedback = await self.store.recent_feedback(experiment, window * 4)
        # Rows whose logged aggregates are not the policy's current ones are left out.
        data = LabelledData.from_decisions(decisions, feedback, keep=partial(aggregates.matches, policy))
        if len(data) > window:
            data = data.take(np.argsort(data.t, kind="stable")[-window:])
        base_entry = {"at": now, "by": "retrainer", "trigger": trigger, "rows": len(data)}
        if len(data) < MIN_ROWS:
            entry = {**base_entry, "action": "retrain", "outcome": "skipped",
                     "reason": f"{len(data)} labelled requests; at least {MIN_ROWS} are needed"}
            await self.store.annotate(experiment, "last_retrain_at", repr(now), entry)
            return {"outcome": "skipped", "reason": entry["reason"], "rows": len(data)}
        refs = _refs(self.artifacts[experiment], experiment, snap.dynamic, base)
        live = live_refs(policy, snap.meta, refs)
        with tracer().start_as_current_span("retrain.train") as span:
            span.set_attributes({"gateway.candidates": [c if isinstance(c, str) else c.label
                                                        for c in base.retrain.candidates],
                                 "gateway.live": [r["variant"] for r in live]})
            out = await train_challenger.remote(
                base.model_dump(mode="json"), data, live, self.registry_root, int(now), list(refs)
            )
            span.set_attribute("gateway.compared_against", out["compared_against"])
        champion = refs[out["compared_against"]]
        result = out["result"]
        if not out["admitted"]:
            entry = {**base_entry, "action": "retrain", "outcome": "rejected", "reason": result.get("reason"),
                     "window": data.window(), "compared_against": champion["variant"]}
            await self.store.annotate(experiment, "last_retrain_at", repr(now), entry)
            return {"outcome": "rejected", "reason": result.get("reason"), "rows": len(data), "result": result}
        new = dict(out["entry"])
        uses, feature_set = new.pop("features", None), new.pop("feature_set", False)
        variant = {**new, "added_at": now, "parent": champion["variant"], "window": data.window()}
        if feature_set:  # served with its own columns; otherwise the policy's, as before
            variant["features"] = uses
        if base.retrain.shadow_first is not None:
            # It answers copies of live requests until it beats the best live model on them.
            variant |= {"role": "shadow", "shadow_first": True}
        entry = {**base_entry, "action": "challenger_added", "variant": new["name"], "outcome": "admitted",
                 "role": variant.get("role", "live"),
                 "reason": result.get("reason"), "window": data.window(), "compared_against": champion["variant"],
                 "features": uses,
                 "metrics": {k: v.get("metrics") for k, v in result.get("candidates", {}).items()}
                 | {"champion": result.get("champion")}}
        if "mlflow" in out:
            entry["mlflow"] = out["mlflow"]
            if "error" in out["mlflow"]:
                log.warning("challenger %s of %s not logged to MLflow: %s", new["name"], experiment, out["mlflow"]["error"])
        await self.store.add_variant(experiment, new["name"], variant, entry, now)
        retired = await self._retire_extra(experiment, base)
        log.info("added challenger %s to %s (%d rows)", new["name"], experiment, len(data))
        return {"outcome": "admitted", "variant": new["name"], "rows": len(data), "retired": retired, "result": result}

    async def _retire_extra(self, experiment: str, base: Policy) -> list[str]:
        """Beyond retrain.max_variants, retire the live arms with the lowest posterior mean
        (never the champion, never a challenger still without rewards)."""
        snap = (await self.store.snapshots([experiment]))[experiment]
        policy = allocation.effective_policy(base, snap.dynamic)
        gone = allocation.arms_to_retire(policy, snap.arms, snap.meta, base.retrain.max_variants)
        retired = allocation.retired(snap.meta)
        for v in gone:
            retired.add(v)
            await self.store.annotate(
                experiment, "retired", json.dumps(sorted(retired)),
                {"action": "retire", "variant": v, "at": time.time(), "by": "retrainer",
                 "reason": f"lowest posterior mean beyond retrain.max_variants={base.retrain.max_variants}"},
            )
        return gone

    async def __del__(self):
        await self.store.close()
        # Flushing waits on the exporter process: not on the event loop that still answers.
        await asyncio.to_thread(shutdown_tracing)
