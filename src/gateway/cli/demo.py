"""`gateway demo`: the whole system on this machine with simulated users, live progress, a
promotion, and an HTML report."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live

from gateway.policy import load_policy_file
from gateway.cli.fit import Column, fitted_tables
from gateway.cli.report import write_report
from gateway.cli.status_view import fmt, interval_text
from gateway.cli.terminal import log_path, ray_output_to_log
from gateway.cli.local import LocalGateway, quiet_ray_environment
from gateway.serving.ports import free_port
from gateway.settings import load_settings
from gateway.sim.churn import make_churn
from gateway.sim.traffic import SimulatedUsers, TrafficStats, poll_state


class DemoError(RuntimeError):
    pass


@dataclass(frozen=True)
class DemoPlan:
    """How long the simulated world runs, and whether it drifts."""

    max_traffic_s: float
    max_requests: int
    requests_after_promotion: int
    concurrency: int
    # Requests after the first promotion at which the world switches to the churn generator's
    # concept 1 (None: no drift); the demo then waits for a retrained challenger to win.
    drift_after_promotion: int | None = None


QUICK = DemoPlan(max_traffic_s=110, max_requests=8000, requests_after_promotion=300, concurrency=8)
FULL = DemoPlan(
    max_traffic_s=420, max_requests=30000, requests_after_promotion=400, concurrency=8, drift_after_promotion=500
)


def _fresh_state_dir(state_dir: Path | None) -> Path:
    if state_dir is None:
        return Path(".gateway") / "demos" / datetime.now().strftime("%Y%m%d-%H%M%S")
    if state_dir.exists() and any(state_dir.iterdir()):
        raise DemoError(f"--state-dir {state_dir} is not empty; the demo starts from a new state")
    return state_dir


def _progress(console: Console, state: dict[str, Any], stats: TrafficStats, elapsed: float) -> Group:
    title = (f"{state['name']}: {state['status']} ({state['allocation']}), champion {state.get('champion') or '-'}, "
             f"{stats.requests} requests, {stats.rewards_accepted} rewards, {elapsed:.0f}s")
    variants = state["variants"]
    key = Column("variant", [v["name"] for v in variants], justify="left")
    columns = [
        Column("traffic", [f"{v['traffic_share']:.3f}" for v in variants]),
        Column("P(best)", [fmt(v["prob_best"], ".3f") for v in variants]),
        Column("mean", [f"{v['mean']:.3f}" for v in variants]),
        Column("95% interval", [interval_text(v["credible_interval"], ".3f") for v in variants]),
        Column("requests", [str(v["requests"]) for v in variants]),
        Column("rewards", [str(v["rewards"]) for v in variants]),
    ]
    return Group(*fitted_tables(console, title, key, columns))


class _Story:
    """What happened so far, read from the experiment's state as the demo polls it."""

    def __init__(self) -> None:
        self.first_promotion_at: int | None = None
        self.drift_at: int | None = None
        self.challenger_won_at: int | None = None

    def update(self, state: dict, requests: int) -> None:
        if state["status"] == "promoted" and self.first_promotion_at is None:
            self.first_promotion_at = requests
        added = {h["variant"] for h in state["history"] if h["action"] == "challenger_added"}
        if self.challenger_won_at is None and any(
            h["action"] == "promote" and h.get("variant") in added for h in state["history"]
        ):
            self.challenger_won_at = requests


async def _drive(url: str, experiment: str, plan: DemoPlan, seed: int, console: Console):
    rows, labels = make_churn(plan.max_requests, seed=seed + 1000)
    users = SimulatedUsers(url, experiment, rows, labels, seed=seed, concurrency=plan.concurrency)
    timeline: list[dict] = []
    started = time.monotonic()
    story = _Story()

    def should_stop() -> bool:
        n = users.stats.requests
        if time.monotonic() - started > plan.max_traffic_s or n >= plan.max_requests:
            return True
        if plan.drift_after_promotion is None:
            return story.first_promotion_at is not None and n - story.first_promotion_at >= plan.requests_after_promotion
        return story.challenger_won_at is not None and n - story.challenger_won_at >= plan.requests_after_promotion

    def maybe_drift() -> None:
        if plan.drift_after_promotion is None or story.drift_at is not None or story.first_promotion_at is None:
            return
        if users.stats.requests - story.first_promotion_at >= plan.drift_after_promotion:
            # The world changes under the served models: same features, a new labelling rule.
            users.rows, users.labels = make_churn(plan.max_requests, seed=seed + 2000, concept=1)
            story.drift_at = users.stats.requests
            console.print(f"[yellow]the world drifts at request {story.drift_at}[/yellow]")

    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        state = await poll_state(url, experiment, client)
        traffic = asyncio.create_task(users.run(should_stop))
        with Live(_progress(console, state, users.stats, 0), console=console, refresh_per_second=4) as live:
            while not traffic.done():
                await asyncio.sleep(0.5)
                state = await poll_state(url, experiment, client)
                timeline.append({"t": time.time(), "variants": {v["name"]: v for v in state["variants"]}})
                story.update(state, users.stats.requests)
                maybe_drift()
                live.update(_progress(console, state, users.stats, time.monotonic() - started))
            stats = await traffic
            await asyncio.sleep(0.5)  # let the router's refresh see the last rewards
            state = await poll_state(url, experiment, client)
            timeline.append({"t": time.time(), "variants": {v["name"]: v for v in state["variants"]}})
            live.update(_progress(console, state, stats, time.monotonic() - started))
    return stats, state, timeline, story


def run_demo(
    *,
    quick: bool,
    seed: int,
    state_dir: Path | None,
    policy: Path,
    port: int | None,
    console: Console,
    consoles: list[Console] | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """`consoles`: the CLI's own, which keep the terminal while Ray's lines go to the log file."""
    if not policy.exists():
        raise DemoError(f"--policy {policy}: no such file (run the demo from the repository root, or pass --policy)")
    experiment = load_policy_file(policy).experiment
    state_dir = _fresh_state_dir(state_dir)
    settings = load_settings(policy=policy, state_dir=state_dir, http_port=port or free_port(), verbose=verbose or None)
    plan = QUICK if quick else FULL
    quiet_ray_environment()
    t0 = time.monotonic()
    # soft_wrap on lines that name a path: one cut at the terminal's edge could not be pasted
    console.print(f"starting Redis, Ray and Serve with {policy} (state in {state_dir}) ...", highlight=False,
                  soft_wrap=True)
    gateway = LocalGateway(settings)
    log_file = log_path(state_dir)
    with ray_output_to_log(log_file, consoles or [console], settings.verbose), gateway:
        startup_s = time.monotonic() - t0
        console.print(f"gateway up at {gateway.url} after {startup_s:.1f}s; simulated users start", highlight=False)
        if not settings.verbose:
            console.print(f"Ray's own messages go to {log_file} (--verbose: here)", highlight=False, soft_wrap=True)
        stats, state, timeline, story = asyncio.run(_drive(gateway.url, experiment, plan, seed, console))
    series = {p["t"]: p for p in timeline}

    def rewards_at(t: float) -> int:
        """Total rewards the experiment had when a decision was taken (nearest earlier poll)."""
        before = [p for ts, p in series.items() if ts <= t]
        point = before[-1] if before else (timeline[0] if timeline else {"variants": {}})
        return int(sum(v["rewards"] for v in point["variants"].values()))

    promotions = [
        {
            "experiment": experiment,
            "variant": e["variant"],
            "at_reward": sum(arm["rewards"] for arm in e.get("evidence", {}).get("arms", {}).values())
            if e.get("evidence") else rewards_at(e["at"]),
        }
        for e in state["history"]
        if e["action"] == "promote"
    ]
    challengers = [
        {"experiment": experiment, "variant": e["variant"], "at_reward": rewards_at(e["at"])}
        for e in state["history"]
        if e["action"] == "challenger_added"
    ]
    summary: dict[str, Any] = {
        "experiment": experiment,
        "promotions": promotions,
        "challengers_added": challengers,
        "drift_at_request": story.drift_at,
        "requests": stats.requests,
        "rewards": stats.rewards_accepted,
        "request_errors": stats.request_errors,
        "reward_errors": stats.reward_errors,
        "champion": state.get("champion"),
        "status": state["status"],
        "variants": {v["name"]: {"mean": v["mean"], "requests": v["requests"], "rewards": v["rewards"]} for v in state["variants"]},
        "seed": seed,
        "quick": quick,
        "startup_s": round(startup_s, 1),
        "duration_s": round(time.monotonic() - t0, 1),
        "state_dir": str(state_dir),
    }
    report = write_report(Path(state_dir) / "report.html", timeline, state, summary)
    summary["report"] = str(report.resolve())
    console.print(
        f"\n[bold]done[/bold] in {summary['duration_s']}s: {stats.requests} requests, {stats.rewards_accepted} rewards; "
        f"promotions: {', '.join(p['variant'] + ' at reward ' + str(p['at_reward']) for p in promotions) or 'none'}",
        highlight=False,
    )
    console.print(f"report: {summary['report']}", highlight=False, soft_wrap=True)
    if stats.errors:
        console.print(f"[yellow]{len(stats.errors)} errors, first: {stats.errors[0]}[/yellow]", highlight=False)
    return summary
