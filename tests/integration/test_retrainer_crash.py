"""Retrainer crash (issue 8: "the retrainer killed mid-training leaves no partial variant"; "a
crash of the retrainer leaves serving and the registry intact").

An admin retraining of 'drift' is asked for in a background thread and, while it is in flight
(its `ray::train_challenger` task is running), a process is SIGKILLed:

1. the Retrainer deployment's replica (`ray::ServeReplica:gateway:Retrainer`): the admin call
   must answer, not hang: 503 `retrain_failed` (or, if the kill came too late, a normal
   outcome: then the scenario is tried again, a bounded number of times, until the kill lands
   mid-run at least once);
2. the `ray::train_challenger` task's worker: the call must answer too (503, or a normal
   outcome when Ray retries the task).

After each: the killed run added no variant and no `challenger_added` history entry; every entry
of the registry folder `<state_dir>/registry/drift` is complete (metadata present, the
artifact's sha256 matches it; an artifact without metadata is never listed); predictions kept
answering 200 throughout; Serve brings the Retrainer back and a later admin retrain answers 200
(the experiment's retrain lock was released) within a bounded time.

Processes are found by their title among the descendants of this session's `gateway serve`, so
other gateways on the machine are never touched.

Why 'drift': it is the only test policy with `retrain.enabled`, and test_retrain.py is its only
other user. So as not to disturb that test whichever runs first: the labelled rows fed here come
from the churn generator's concept 0 (the world the bootstrapped variants were trained on, so a
challenger trained here is not admitted against them by retrain.margin 0.05), and each row
carries an explicit reward, balanced half 0 / half 1 within each variant, so the bandit's
posteriors are not pushed towards a promotion. Every admin retrain resets the experiment's
`labels_since_retrain`, so no automatic retrain is triggered by these labels either."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx
import numpy as np
import psutil
import pytest

from gateway.learning.registry import META_SUFFIX, ModelRegistry
from gateway.learning.retrain import MIN_ROWS
from gateway.serving.app import APP_NAME
from gateway.sim.churn import make_churn
from tests.integration.conftest import ADMIN_TOKEN, ROW

pytestmark = pytest.mark.integration

EXPERIMENT = "drift"
SEED = 808
FEED_ROWS = 240  # >= MIN_ROWS labelled rows, with a margin for any join that misses
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
CALL_TIMEOUT_S = 60.0  # the admin call must answer within this (no hang)
ATTEMPTS = 4  # per scenario, until a kill lands while the call is in flight
RECOVERY_S = 45.0  # the Retrainer must be back and a retrain answer 200 within this
BUDGET_S = 115.0  # per test body
PREDICT_EVERY_S = 0.1
PREDICT_RETRIES = 3

RETRAINER_TITLE = re.compile(rf"(^|\s|::)ServeReplica:{re.escape(APP_NAME)}:Retrainer(\.|\s|$)")
TASK_TITLE = re.compile(r"(^|\s)ray::train_challenger(\s|$|\()")


# -- processes ---------------------------------------------------------------------------------


def the_retrainer(gateway, timeout_s: float, not_pids: set[int] = frozenset()) -> psutil.Process | None:
    deadline = time.monotonic() + timeout_s
    while True:
        procs = [p for p in gateway.processes(RETRAINER_TITLE) if p.pid not in not_pids]
        if procs:
            return procs[0]
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def no_task_running(gateway, timeout_s: float) -> list[int]:
    """Wait until no train_challenger task runs (e.g. one left by an earlier kill); the pids
    still running at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = [p.pid for p in gateway.processes(TASK_TITLE)]
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.2)


# -- HTTP ------------------------------------------------------------------------------------------


def error_code(r: httpx.Response) -> str:
    try:
        return r.json().get("error", {}).get("code", "")
    except ValueError:
        return ""


def state(c: httpx.Client) -> dict:
    for _ in range(40):
        r = c.get(f"/v1/experiments/{EXPERIMENT}")
        if r.status_code == 200:
            return r.json()
        time.sleep(0.25)
    raise AssertionError(f"GET /v1/experiments/{EXPERIMENT}: {r.status_code} {r.text}")


def retrain_until_answered(c: httpx.Client, bound_s: float) -> tuple[httpx.Response, list[str]]:
    """POST the admin retrain until it answers 200 or `bound_s` passes; the failed answers seen."""
    deadline = time.monotonic() + bound_s
    seen: list[str] = []
    while True:
        try:
            r = c.post(f"/v1/experiments/{EXPERIMENT}/retrain", headers=AUTH, timeout=CALL_TIMEOUT_S)
        except httpx.TransportError as err:
            seen.append(type(err).__name__)
            r = None
        if r is not None:
            if r.status_code == 200:
                return r, seen
            seen.append(f"{r.status_code}:{error_code(r)}")
        if time.monotonic() >= deadline:
            return r, seen
        time.sleep(1.0)


def predict(c: httpx.Client, row: list, failures: list[str] | None = None) -> httpx.Response:
    """One logical prediction, sent again (new request id) on a 5xx or a transport error, up to
    PREDICT_RETRIES times, as an idempotent client does: a loaded machine can make a variant
    call time out (503 variant_unavailable) whatever the retrainer does."""
    failures = [] if failures is None else failures
    for attempt in range(1 + PREDICT_RETRIES):
        try:
            r = c.post(f"/v1/experiments/{EXPERIMENT}/predict", json={"instances": [row]})
        except httpx.TransportError as err:
            failures.append(type(err).__name__)
            if attempt == PREDICT_RETRIES:
                raise
            time.sleep(0.2)
            continue
        if r.status_code < 500 or attempt == PREDICT_RETRIES:
            return r
        failures.append(f"{r.status_code}:{error_code(r)}")
        time.sleep(0.2)
    raise AssertionError("unreachable")


class Predictions:
    """A steady trickle of (unlabelled) predictions to the experiment, recorded."""

    def __init__(self, url: str, row: list) -> None:
        self.url, self.row = url, row
        self.results: list[tuple[float, int | str]] = []
        self.failed_attempts: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.is_set():
                try:
                    status: int | str = predict(c, self.row, self.failed_attempts).status_code
                except httpx.HTTPError as err:
                    status = type(err).__name__
                self.results.append((time.monotonic(), status))
                self.stop.wait(PREDICT_EVERY_S)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(35)

    def summary(self) -> dict:
        statuses = [s for _, s in self.results]
        return {"sent": len(statuses), "ok": statuses.count(200), "not_ok": sorted({str(s) for s in statuses if s != 200}),
                "failed_attempts_retried": len(self.failed_attempts), "failed_attempt_kinds": sorted(set(self.failed_attempts))}


# -- registry --------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def registry_check(gateway) -> dict:
    """Every metadata file of the experiment's registry folder describes a present artifact
    whose sha256 matches; what the registry lists is exactly those; an artifact without
    metadata (a crash between the two writes) is never listed."""
    reg = ModelRegistry.in_state_dir(gateway.state_dir)
    folder = reg.folder(EXPERIMENT)
    files = sorted(f.name for f in folder.iterdir()) if folder.is_dir() else []
    listed = {e.name: e for e in reg.entries(EXPERIMENT)}
    problems, complete = [], {}
    for name in files:
        if name.startswith(".") or not name.endswith(META_SUFFIX):
            continue
        meta_path = folder / name
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError as err:
            problems.append(f"{name}: unreadable metadata ({err})")
            continue
        artifact = folder / meta.get("artifact", "")
        if not artifact.is_file():
            problems.append(f"{name}: its artifact {meta.get('artifact')!r} is missing")
            continue
        digest = sha256(artifact)
        if digest != meta.get("sha256"):
            problems.append(f"{artifact.name}: sha256 {digest[:12]} does not match the metadata's {str(meta.get('sha256'))[:12]}")
            continue
        if meta.get("name") not in listed or listed[meta["name"]].sha256 != digest:
            problems.append(f"{name}: a complete entry the registry does not list")
        complete[meta["name"]] = digest
    for name in set(listed) - set(complete):
        problems.append(f"{name}: listed by the registry but not complete")
    orphans = [
        n for n in files
        if not n.startswith(".") and n.endswith((".ubj", ".skops")) and n + META_SUFFIX not in files
    ]
    return {
        "complete": sorted(complete),
        "orphan_artifacts": orphans,  # never listed (checked above), removed by gc()
        "temp_files": [n for n in files if n.startswith(".")],
        "problems": problems,
    }


# -- the labelled data -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled(gateway) -> dict:
    """At least MIN_ROWS labelled requests in 'drift' (see the module docstring), and one
    admin retrain that reaches training (it warms the task worker too)."""
    started = time.monotonic()
    rows, labels = make_churn(FEED_ROWS, seed=SEED, concept=0)
    rng = np.random.default_rng(SEED)
    with gateway.client() as c:
        served = []
        for row, label in zip(rows, labels):
            r = predict(c, row)
            assert r.status_code == 200, r.text
            out = r.json()
            served.append({"request_id": out["request_id"], "token": out["reward_token"], "label": int(label), "variant": out["variant"]})
        # Balanced explicit rewards within each variant: the label is kept for retraining, the
        # bandit learns nothing from these rows.
        for v in sorted({s["variant"] for s in served}):
            mine = [s for s in served if s["variant"] == v]
            for s, reward in zip(mine, rng.permutation(np.arange(len(mine)) % 2).tolist()):
                s["reward"] = float(reward)
        pending = [{k: s[k] for k in ("request_id", "token", "label", "reward")} for s in served]
        accepted = 0
        for _ in range(10):  # the decision record is written behind the response
            retry = []
            for i in range(0, len(pending), 50):
                r = c.post("/v1/rewards", json={"rewards": pending[i : i + 50]})
                assert r.status_code == 200, r.text
                for item, res in zip(pending[i : i + 50], r.json()["results"]):
                    if res["status"] in ("accepted", "duplicate"):
                        accepted += 1
                    elif res.get("error", {}).get("code") == "request_not_found" or res["status"] == "queued":
                        retry.append(item)
                    else:
                        raise AssertionError(f"feedback refused: {res}")
            pending = retry
            if not pending:
                break
            time.sleep(0.5)
        assert accepted >= MIN_ROWS, f"only {accepted} labelled requests accepted"
        # A retraining may be running already (labels or drift trigger): wait for our turn.
        t0 = time.monotonic()
        r, seen = retrain_until_answered(c, 120.0)
        warm_s = time.monotonic() - t0
    assert r is not None and r.status_code == 200, f"the warm-up retrain did not answer 200: {seen}"
    body = r.json()
    assert body["outcome"] in {"rejected", "admitted"} and body["rows"] >= MIN_ROWS, (
        f"the warm-up retrain did not reach training: {body}"
    )
    info = {"accepted_labels": accepted, "warmup": {"outcome": body["outcome"], "rows": body["rows"],
            "s": round(warm_s, 1), "before": seen}, "setup_s": round(time.monotonic() - started, 1)}
    print("retrainer crash setup:", json.dumps(info, sort_keys=True))
    return info


# -- one attempt -----------------------------------------------------------------------------------


@dataclass
class Attempt:
    target: str
    victim_pid: int | None = None
    victim_title: str = ""
    seen_task_after_s: float | None = None
    killed_after_s: float | None = None
    answered_after_s: float | None = None
    status: int | None = None
    code: str = ""
    outcome: str | None = None
    transport_error: str | None = None
    task_pid: int | None = None
    task_still_running_after_answer: bool | None = None
    landed: bool = False  # the kill was delivered while the call was still in flight
    mid_run: bool = False  # ... and it hit the run: the Retrainer's call failed, or the task died
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "", [])}


def killed_retrain(gateway, target: str, retrainer: psutil.Process) -> Attempt:
    """POST the admin retrain in a thread; as soon as its train_challenger task runs, SIGKILL
    the Retrainer replica (target 'retrainer') or the task's worker (target 'task')."""
    a = Attempt(target)
    done = threading.Event()

    def call() -> None:
        try:
            r = httpx.post(f"{gateway.url}/v1/experiments/{EXPERIMENT}/retrain", headers=AUTH, timeout=CALL_TIMEOUT_S)
            a.status, a.code = r.status_code, error_code(r)
            if r.status_code == 200:
                a.outcome = r.json().get("outcome")
        except httpx.HTTPError as err:
            a.transport_error = repr(err)
        a.answered_after_s = round(time.monotonic() - t0, 2)
        done.set()

    t0 = time.monotonic()
    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    killed_at = None
    while not done.is_set() and time.monotonic() - t0 < CALL_TIMEOUT_S:
        tasks = gateway.processes(TASK_TITLE)
        if tasks:
            a.seen_task_after_s = round(time.monotonic() - t0, 2)
            a.task_pid = tasks[0].pid
            victim = tasks[0] if target == "task" else retrainer
            try:
                a.victim_title = " ".join(victim.cmdline())[:80]
                os.kill(victim.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                a.victim_pid = victim.pid
                a.killed_after_s = round(killed_at - t0, 2)
            except (ProcessLookupError, psutil.NoSuchProcess):
                a.notes.append("the victim was gone before the kill")
            break
        time.sleep(0.01)
    caller.join(CALL_TIMEOUT_S + 5)
    # Landed: delivered while the call had not answered yet (the call's answer comes after).
    a.landed = killed_at is not None and a.answered_after_s is not None and killed_at - t0 < a.answered_after_s
    if target == "retrainer" and a.task_pid is not None:
        # Does the task outlive its owner (the killed replica)? Ray should reap it.
        a.task_still_running_after_answer = a.task_pid in {p.pid for p in gateway.processes(TASK_TITLE)}
    # Mid-run: the Retrainer died while it was waiting for its task (the call failed), or the
    # task's worker died while the call waited for it. A 200 after a Retrainer kill means the
    # run had already handed its result back: too late.
    a.mid_run = a.landed and (target == "task" or a.status == 503)
    if killed_at is None:
        a.notes.append("no train_challenger task seen while the call ran: nothing killed")
    elif not a.landed:
        a.notes.append("too late: the kill came after the call had answered")
    elif not a.mid_run:
        a.notes.append("too late: the run had finished when the Retrainer was killed")
    return a


def run_scenario(gateway, target: str) -> dict:
    """Attempts until a kill lands mid-run; after each, the invariants. Returns the figures."""
    started = time.monotonic()
    attempts: list[dict] = []
    recoveries: list[dict] = []
    with gateway.client() as c:
        with Predictions(gateway.url, ROW) as load:
            for _ in range(ATTEMPTS):
                leftover = no_task_running(gateway, 20.0)
                assert not leftover, f"a train_challenger task is still running (pids {leftover}) 20 s after the last attempt"
                retrainer = the_retrainer(gateway, RECOVERY_S)
                assert retrainer is not None, f"no ServeReplica:{APP_NAME}:Retrainer process under gateway pid {gateway.process.pid}"
                before = state(c)
                variants_before = [v["name"] for v in before["variants"]]
                history_len = len(before["history"])
                reg_before = registry_check(gateway)

                a = killed_retrain(gateway, target, retrainer)
                after = state(c)
                new_history = after["history"][history_len:]
                reg = registry_check(gateway)
                record = a.describe() | {
                    "new_history": [(h.get("action"), h.get("trigger"), h.get("outcome")) for h in new_history],
                    "registry": {k: v for k, v in reg.items() if v},
                }
                attempts.append(record)
                print(f"retrainer crash [{target}] attempt {len(attempts)}:", json.dumps(record, sort_keys=True))

                assert a.transport_error is None and a.answered_after_s is not None and a.answered_after_s < CALL_TIMEOUT_S, (
                    f"the admin retrain did not answer within {CALL_TIMEOUT_S}s: {record}"
                )
                assert a.status in (200, 503), f"unexpected answer to the admin retrain: {record}"
                if a.status == 503:
                    assert a.code == "retrain_failed", record
                    assert a.killed_after_s is not None, f"503 without a kill: {record}"
                if a.status == 200:
                    assert a.outcome in {"skipped", "rejected", "admitted"}, record
                assert not reg["problems"], f"the registry is not intact after the kill: {record}"
                gone = set(reg_before["complete"]) - set(reg["complete"])
                assert not gone, f"complete registry entries disappeared after the kill: {sorted(gone)}"
                if a.status != 200 or a.outcome != "admitted":
                    # The killed run added nothing: same variants, no challenger_added entry.
                    assert [v["name"] for v in after["variants"]] == variants_before, (
                        f"the variants changed although the run failed: {variants_before} -> "
                        f"{[v['name'] for v in after['variants']]}: {record}"
                    )
                    assert not [h for h in new_history if h.get("action") == "challenger_added"], (
                        f"a challenger_added entry from the killed run: {new_history}"
                    )
                    served = {v["name"] for v in after["variants"]}
                    assert not (set(reg["orphan_artifacts"]) & served), record

                # Serve brings the Retrainer back (if it was killed) and a retrain answers 200.
                t_rec = time.monotonic()
                back = None
                if a.victim_pid == retrainer.pid:
                    back = the_retrainer(gateway, RECOVERY_S, not_pids={retrainer.pid})
                    assert back is not None, (
                        f"Serve did not bring the Retrainer back within {RECOVERY_S}s of the kill: {record}"
                    )
                back_s = time.monotonic() - t_rec
                r, seen = retrain_until_answered(c, max(1.0, RECOVERY_S - back_s))
                rec = {
                    "retrainer_back_after_s": None if back is None else round(back_s, 1),
                    "retrainer_pid": f"{retrainer.pid} -> {back.pid}" if back is not None else retrainer.pid,
                    "retrain_200_after_s": round(time.monotonic() - t_rec, 1),
                    "failed_answers_before": seen,
                    "outcome": None if r is None or r.status_code != 200 else r.json().get("outcome"),
                }
                recoveries.append(rec)
                print(f"retrainer crash [{target}] recovery {len(recoveries)}:", json.dumps(rec, sort_keys=True))
                if r is None or r.status_code != 200:
                    stuck = [s for s in seen if s.startswith("409")]
                    raise AssertionError(
                        f"no admin retrain answered 200 within {RECOVERY_S}s of the kill "
                        + (f"(the retrain lock was never released: {len(stuck)} x 409 retrain_running) " if stuck else "")
                        + f"{rec}; attempt {record}"
                    )
                reg = registry_check(gateway)
                assert not reg["problems"], f"the registry is not intact after the recovery retrain: {reg}"
                if a.mid_run:
                    break
        preds = load.summary()
    figures = {"target": target, "attempts": attempts, "recoveries": recoveries, "predictions": preds,
               "mid_run": any(x.get("mid_run") for x in attempts), "test_s": round(time.monotonic() - started, 1)}
    print(f"retrainer crash [{target}]:", json.dumps({k: v for k, v in figures.items() if k not in ("attempts", "recoveries")}, sort_keys=True))
    assert preds["sent"] > 0 and preds["ok"] == preds["sent"], f"predictions did not all answer 200: {preds}"
    return figures


def test_a_retrainer_killed_mid_training_leaves_no_partial_variant(gateway, labelled):
    figures = run_scenario(gateway, "retrainer")
    assert figures["mid_run"], (
        f"in {ATTEMPTS} attempts the Retrainer was never killed while a retraining was in flight: {figures['attempts']}"
    )


def test_a_training_task_killed_mid_run_leaves_no_partial_variant(gateway, labelled):
    figures = run_scenario(gateway, "task")
    assert figures["mid_run"], (
        f"in {ATTEMPTS} attempts the train_challenger worker was never killed while it ran: {figures['attempts']}"
    )
