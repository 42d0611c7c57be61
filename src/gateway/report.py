"""The demo's HTML report: plotly charts, with plotly's JavaScript inlined (no CDN)."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from scipy import stats


def _series(timeline: list[dict], variant: str, key: str) -> list[float | None]:
    out = []
    for point in timeline:
        v = point["variants"].get(variant)
        out.append(None if v is None else v.get(key))
    return out


def _decision_lines(fig: go.Figure, history: list[dict], t0: float) -> None:
    for entry in history:
        x = entry["at"] - t0
        fig.add_vline(x=x, line_dash="dash", line_color="#888")
        fig.add_annotation(x=x, y=1.02, yref="paper", text=f"{entry['action']} {entry.get('variant', '')}", showarrow=False)


def traffic_figure(timeline: list[dict], variants: list[str], history: list[dict], t0: float) -> go.Figure:
    t = [p["t"] - t0 for p in timeline]
    fig = go.Figure([go.Scatter(x=t, y=_series(timeline, v, "traffic_share"), name=v, mode="lines") for v in variants])
    fig.update_layout(title="Traffic share", xaxis_title="seconds", yaxis_title="share", yaxis_range=[0, 1.05])
    _decision_lines(fig, history, t0)
    return fig


def prob_best_figure(timeline: list[dict], variants: list[str], history: list[dict], t0: float) -> go.Figure:
    t = [p["t"] - t0 for p in timeline]
    fig = go.Figure([go.Scatter(x=t, y=_series(timeline, v, "prob_best"), name=v, mode="lines") for v in variants])
    fig.update_layout(title="Probability to be best", xaxis_title="seconds", yaxis_range=[0, 1.05])
    _decision_lines(fig, history, t0)
    return fig


def reward_rate_figure(timeline: list[dict], variants: list[str], t0: float) -> go.Figure:
    t = [p["t"] - t0 for p in timeline]
    traces = []
    for v in variants:
        mean = _series(timeline, v, "mean")
        ci = [p["variants"].get(v, {}).get("credible_interval") or [None, None] for p in timeline]
        lo, hi = [c[0] for c in ci], [c[1] for c in ci]
        traces.append(go.Scatter(x=t + t[::-1], y=hi + lo[::-1], fill="toself", opacity=0.2, line_width=0,
                                 name=f"{v} 95% interval", showlegend=False, hoverinfo="skip"))
        traces.append(go.Scatter(x=t, y=mean, name=v, mode="lines"))
    fig = go.Figure(traces)
    fig.update_layout(title="Reward rate (posterior mean, 95% credible interval)", xaxis_title="seconds")
    return fig


def posterior_figure(state: dict[str, Any]) -> go.Figure:
    x = np.linspace(0, 1, 400)
    traces = []
    for v in state["variants"]:
        a, b = v["posterior"]["alpha"], v["posterior"]["beta"]
        traces.append(go.Scatter(x=x, y=stats.beta.pdf(x, a, b), name=f"{v['name']} Beta({a:g}, {b:g})", mode="lines"))
    fig = go.Figure(traces)
    fig.update_layout(title="Posterior density of each variant's reward rate", xaxis_title="reward rate")
    return fig


def write_report(path: Path, timeline: list[dict], state: dict[str, Any], summary: dict[str, Any]) -> Path:
    variants = [v["name"] for v in state["variants"]]
    t0 = timeline[0]["t"] if timeline else 0.0
    history = state.get("history", [])
    figures = [
        traffic_figure(timeline, variants, history, t0),
        prob_best_figure(timeline, variants, history, t0),
        reward_rate_figure(timeline, variants, t0),
        posterior_figure(state),
    ]
    parts = [
        pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0), default_height=380)
        for i, fig in enumerate(figures)
    ]
    rows = "".join(
        f"<tr><td>{html.escape(v['name'])}</td><td>{v['mean']:.4f}</td>"
        f"<td>[{v['credible_interval'][0]:.4f}, {v['credible_interval'][1]:.4f}]</td>"
        f"<td>{(v['prob_best'] if v['prob_best'] is not None else float('nan')):.3f}</td>"
        f"<td>{v['traffic_share']:.3f}</td><td>{v['requests']}</td><td>{v['rewards']}</td></tr>"
        for v in state["variants"]
    )
    decisions = "".join(
        f"<li>{html.escape(e['action'])} <b>{html.escape(str(e.get('variant', '')))}</b>: "
        f"{html.escape(str(e.get('reason', '')))}</li>"
        for e in history
    ) or "<li>none</li>"
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Gateway demo report: {html.escape(state['name'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head>
<body><h1>Experiment <code>{html.escape(state['name'])}</code></h1>
<p>Status: <b>{html.escape(state['status'])}</b>, champion: <b>{html.escape(str(state.get('champion')))}</b>.
Requests: {summary.get('requests')}, rewards: {summary.get('rewards')}, seed: {summary.get('seed')}.</p>
<table><tr><th>variant</th><th>mean</th><th>95% interval</th><th>P(best)</th><th>traffic</th><th>requests</th><th>rewards</th></tr>
{rows}</table>
<h2>Decisions</h2><ul>{decisions}</ul>
{''.join(parts)}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
    return path
