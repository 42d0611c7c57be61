"""The demo's HTML report: the dashboard's charts in one self-contained file (plotly.js, the
page script and the data inlined; no CDN), with a short summary of the run at the top."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gateway.api.dashboard import render_static_report

SERIES_KEYS = ("traffic_share", "prob_best", "mean", "credible_interval", "requests", "rewards")


def series_points(timeline: list[dict], state: dict[str, Any]) -> list[dict]:
    """The demo's timeline ({"t", "variants": {name: <variant as in the state>}}) as series
    points, the shape GET /v1/experiments/{e}/series answers."""
    points = []
    for point in sorted(timeline, key=lambda p: p["t"]):
        points.append(
            {
                "t": float(point["t"]),
                "status": point.get("status"),
                "champion": point.get("champion"),
                "variants": {
                    name: {k: v.get(k) for k in SERIES_KEYS if k in v}
                    for name, v in (point.get("variants") or {}).items()
                },
            }
        )
    if points:
        # The run's last point carries the final status; earlier ones only what the timeline had.
        points[-1]["status"] = points[-1]["status"] or state.get("status")
        points[-1]["champion"] = points[-1]["champion"] or state.get("champion")
    return points


def _promotions(summary: dict[str, Any], state: dict[str, Any]) -> str:
    promotions = summary.get("promotions")
    if promotions is None:
        promotions = [{"variant": e.get("variant")} for e in state.get("history", []) if e.get("action") == "promote"]
    if not promotions:
        return "none"
    return ", ".join(
        f"{p.get('variant')}" + (f" at reward {p['at_reward']:,}" if isinstance(p.get("at_reward"), int) else "")
        for p in promotions
    )


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else ("–" if value is None else str(value))


def summary_cards(summary: dict[str, Any], state: dict[str, Any]) -> dict[str, str]:
    cards = {
        "Requests": _count(summary.get("requests")),
        "Rewards": _count(summary.get("rewards")),
        "Promotions": _promotions(summary, state),
        "Seed": _count(summary.get("seed")),
    }
    if summary.get("challengers_added"):
        cards["Challengers added"] = ", ".join(str(c.get("variant")) for c in summary["challengers_added"])
    if summary.get("duration_s") is not None:
        cards["Run"] = f"{summary['duration_s']} s" + (" (quick)" if summary.get("quick") else "")
    return cards


def write_report(path: Path, timeline: list[dict], state: dict[str, Any], summary: dict[str, Any]) -> Path:
    name = state.get("name") or state.get("experiment") or "experiment"
    doc = render_static_report(
        {
            "title": f"Gateway demo report: {name}",
            "summary": summary_cards(summary, state),
            "generated_at": time.time(),
            "experiments": [
                {"state": state, "points": series_points(timeline, state), "history": state.get("history", [])}
            ],
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path
