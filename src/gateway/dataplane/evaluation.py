"""Off-policy evaluation from an experiment's own log: each served request (its features, the
variant served and the propensity it was served with, all in the decision log) joined with the
reward the bandit learned for it, as gateway.evaluation's estimators take them.

Which reward: without a default reward, the feedback given (a request without feedback never
counts, as for the bandit). With a default, only requests whose window has ended count, each
with the reward the bandit counted (its on-time feedback, else the default): a request still in
its window is left out even when feedback came, or rows that did convert would be kept and rows
that will take the default dropped, biasing every estimate upward. `uniform` is uniform over
the live variants (a shadow, the holdout or a retired variant is never served by the bandit). A request of several rows contributes one row: the mean of its encoded features (the
reward is the request's)."""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from gateway.dataplane.runtime import ExperimentRuntime
from gateway.decisions import allocation
from gateway.errors import Unprocessable
from gateway.evaluation import ope
from gateway.learning.features import FeatureError
from gateway.store.experiments import ExperimentStore

# Newest served requests read for an evaluation (and for the state's corrected means).
DEFAULT_ROWS = 20_000
MAX_ROWS = 200_000
_SHARE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,62})=([0-9.eE+-]+)$")


def parse_target(raw: str | None, arms: tuple[str, ...]) -> str | dict[str, float]:
    """'uniform' (the default), a variant's name, or shares as 'a=0.3,b=0.7'; 422 otherwise."""
    text = (raw or "uniform").strip()
    if text == "uniform" or text in arms:
        return text
    if "=" not in text:
        raise Unprocessable(f"target: {text!r} is none of 'uniform', the variants {list(arms)}, or shares like "
                            "'a=0.5,b=0.5'", code="invalid_target")
    shares: dict[str, float] = {}
    for part in text.split(","):
        m = _SHARE.match(part.strip())
        if not m:
            raise Unprocessable(f"target: {part!r} is not 'variant=share'", code="invalid_target")
        try:
            shares[m.group(1)] = float(m.group(2))
        except ValueError:
            raise Unprocessable(f"target: {m.group(2)!r} is not a number", code="invalid_target") from None
    return shares


def _reward(decision: Mapping[str, str], feedback: Mapping[str, str] | None, default: float | None,
            window_s: float, now: float) -> float | None:
    on_time = feedback is not None and feedback.get("late") != "1"
    if default is None:
        return float(feedback["reward"]) if on_time else None
    if now <= float(decision["t"]) + window_s:
        return None  # its outcome is not final yet
    return float(feedback["reward"]) if on_time else default


def join(rt: ExperimentRuntime, decisions: list[dict[str, str]], feedback: Mapping[str, Mapping[str, str]],
         now: float) -> ope.LoggedData:
    """LoggedData over every variant of the experiment, from decision-log entries (oldest first)
    and feedback by request id."""
    arms = tuple(rt.policy.variant_names)
    index = {v: i for i, v in enumerate(arms)}
    spec = rt.policy.reward
    rows, actions, props, rewards = [], [], [], []
    for d in decisions:
        if d.get("variant") not in index or "prop" not in d:
            continue
        r = _reward(d, feedback.get(d.get("rid", "")), spec.default, spec.window_s, now)
        if r is None:
            continue
        try:
            x = rt.encoder.encode(json.loads(d["x"]))
        except (FeatureError, ValueError, KeyError):
            continue  # a row the current feature list cannot read (the policy changed)
        rows.append(np.nan_to_num(x.mean(axis=0)))  # imputed (NaN) features count as 0
        actions.append(index[d["variant"]])
        props.append(float(d["prop"]))
        rewards.append(r)
    width = rt.encoder.width
    features = np.vstack(rows) if rows else np.zeros((0, width))
    return ope.LoggedData(arms, features, np.asarray(actions, dtype=np.int64), np.asarray(props), np.asarray(rewards))


async def logged(store: ExperimentStore, rt: ExperimentRuntime, rows: int, now: float) -> ope.LoggedData:
    name = rt.policy.experiment
    decisions = await store.recent_decisions(name, rows)
    # Feedback trails its request: read more of it than requests, so the oldest ones find theirs.
    feedback = await store.recent_feedback(name, 2 * rows)
    return await asyncio.to_thread(join, rt, decisions, feedback, now)


async def evaluate(store: ExperimentStore, rt: ExperimentRuntime, target: str | None, rows: int,
                   now: float) -> dict[str, Any]:
    """The target policy's estimated value (IPS, SNIPS, DR); 422 `poor_overlap` when the log
    cannot support it."""
    data = await logged(store, rt, rows, now)
    parsed = parse_target(target, data.arms)
    if parsed == "uniform" and rt.snapshot is not None:
        live = allocation.live_arms(rt.policy, rt.snapshot.meta)
        parsed = {v: (1.0 / len(live) if v in live else 0.0) for v in data.arms}
    try:
        out = await asyncio.to_thread(ope.evaluate, data, parsed)
    except ope.PoorOverlap as err:
        raise Unprocessable(f"poor overlap: {err}", code="poor_overlap") from None
    except ValueError as err:  # a share vector that is not a distribution, an unknown name
        raise Unprocessable(f"target: {err}", code="invalid_target") from None
    if parse_target(target, data.arms) == "uniform":
        out["target"] = "uniform"  # as asked: the live variants' shares are its meaning here
    return {"experiment": rt.policy.experiment, **out}


async def corrected_means(store: ExperimentStore, rt: ExperimentRuntime, rows: int, now: float) -> dict[str, dict]:
    data = await logged(store, rt, rows, now)
    return await asyncio.to_thread(ope.corrected_means, data)
