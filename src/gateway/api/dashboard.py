"""The web dashboard: a live page per experiment at GET /dashboard, and the same charts as one
self-contained HTML file (`render_static_report`) for the demo's report.

The page is static HTML plus one script (static/dashboard.js) that reads the JSON API
(/v1/experiments, /v1/experiments/{e}, /v1/experiments/{e}/series) every 2 s and draws with
plotly.js. plotly.js comes from the installed plotly package and is served by the gateway
itself: no CDN, so the page works on machines without internet access.
"""
from __future__ import annotations

import gzip
import hashlib
import html
import json
import math
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

PLOTLY_JS = "plotly.min.js"
DASHBOARD_JS = "dashboard.js"
DASHBOARD_CSS = "dashboard.css"
LONG_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    """A script served from memory: its bytes, gzipped bytes, and a content hash."""

    body: bytes
    gzipped: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> Asset:
        return cls(body, gzip.compress(body, compresslevel=6, mtime=0), hashlib.sha256(body).hexdigest()[:16])

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def _static_file(name: str) -> bytes:
    return (resources.files("gateway.api") / "static" / name).read_bytes()


@cache
def asset(name: str) -> Asset:
    """plotly.min.js from the installed plotly package; the others from gateway/api/static/."""
    if name == PLOTLY_JS:
        body = (resources.files("plotly") / "package_data" / PLOTLY_JS).read_bytes()
    else:
        body = _static_file(name)
    return Asset.of(body)


def _finite(value: Any) -> Any:
    """NaN and infinities become null: JSON has no spelling for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _script_json(data: Any) -> str:
    """JSON safe to embed in a <script type="application/json"> element."""
    return (
        json.dumps(_finite(data), separators=(",", ":"), allow_nan=False, default=str)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _inline_script(source: str) -> str:
    # "</script" would end the element early and "<!--" could start the escaped state of the
    # HTML tokenizer; plotly.min.js and the page script have neither, but be sure.
    return source.replace("</script", "<\\/script").replace("<!--", "<\\!--")


PAGE = Template(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<title>$title</title>
<style>
$css
</style>
</head>
<body data-mode="$mode" data-state="loading">
<header class="topbar">
  <div class="brand"><span class="logo">&#9670;</span>Model gateway<span class="sub">$subtitle</span></div>
  <div class="controls">
    <span id="experiment-picker" hidden><label for="experiment-select">Experiment</label>
      <select id="experiment-select" aria-label="Experiment"></select></span>
    <span id="live-indicator" class="live"><span class="dot"></span><span>Loading &hellip;</span></span>
  </div>
</header>
<main>
$summary
  <div class="title-row"><h1 id="experiment-title"></h1><span id="experiment-meta" class="meta"></span></div>
  <div id="banner" class="banner" role="status" hidden></div>
  <noscript><div class="banner error">This page needs JavaScript to draw its charts.</div></noscript>
  <section id="overview" class="cards" aria-label="Overview"></section>
  <section class="panel" aria-labelledby="variants-heading">
    <div class="panel-head"><h2 id="variants-heading">Variants</h2>
      <span class="hint">posterior mean with 95% credible interval; P(best) and expected loss from the posterior</span></div>
    <div class="table-wrap"><table id="variants-table" class="variants">
      <thead><tr><th>Variant</th><th>Mean [95% interval]</th><th>Posterior</th><th>P(best)</th>
        <th>Expected loss</th><th>Traffic</th><th>Requests</th><th>Rewards</th></tr></thead>
      <tbody id="variants-body"></tbody>
    </table></div>
  </section>
  <section id="monitoring" class="panel" aria-labelledby="monitoring-heading" hidden>
    <div class="panel-head"><h2 id="monitoring-heading">Model monitoring</h2>
      <span class="hint">online KPIs from labelled feedback (window: each variant's newest labels); drift (PSI) of live traffic against the reference</span></div>
    <div id="drift-summary" class="drift-summary" data-level="" data-max-psi=""></div>
    <div class="table-wrap"><table id="kpi-table" class="variants" data-variants="[]">
      <thead><tr><th>Variant</th><th>Accuracy</th><th>F1</th><th>ROC AUC</th><th>Labels</th>
        <th>Lifetime accuracy</th><th>Lifetime labels</th></tr></thead>
      <tbody id="kpi-body"></tbody>
    </table></div>
  </section>
  <section id="segments" class="panel" aria-labelledby="segments-heading" hidden>
    <div class="panel-head"><h2 id="segments-heading">Routing by segment</h2>
      <span class="hint">contextual routing: each segment's champion once its own evidence promoted one, else
        the shares it routes by (mean reward and rewards per variant in the segment)</span></div>
    <div class="table-wrap"><table id="segments-table" class="variants" data-segments="0">
      <thead><tr><th>Segment</th><th>Champion</th><th>Shares · mean (rewards)</th></tr></thead>
      <tbody id="segments-body"></tbody>
    </table></div>
  </section>
  <section id="ope" class="panel" aria-labelledby="ope-heading" hidden>
    <div class="panel-head"><h2 id="ope-heading">Off-policy evaluation</h2>
      <span class="hint">what another policy would have earned, estimated from the logged traffic and the
        propensities it was served with (IPS, self-normalised IPS, doubly robust), with 95% intervals</span></div>
    <form id="ope-form" class="ope-form">
      <label for="ope-target">Target</label>
      <input id="ope-target" name="target" value="uniform" size="32" spellcheck="false"
        title="uniform, a variant's name, or shares such as a=0.3,b=0.7">
      <button type="submit">Estimate</button>
    </form>
    <div id="ope-result" class="table-wrap" data-target="" data-status=""></div>
  </section>
  <div id="legend" class="legend"></div>
  <section class="grid" aria-label="Charts">
    <div class="panel"><h2 id="posterior-title">Posterior reward rate</h2>
      <p id="posterior-hint" class="hint">Beta density of each variant's reward rate now; dotted lines at the means</p>
      <div id="chart-posterior" class="chart" data-chart="posterior" data-variants="[]" data-points="0"></div></div>
    <div class="panel"><h2>Traffic share</h2>
      <p class="hint">share of requests the bandit routes to each variant</p>
      <div id="chart-traffic" class="chart" data-chart="traffic" data-variants="[]" data-points="0"></div></div>
    <div class="panel"><h2 id="reward-title">Reward rate</h2>
      <p class="hint">posterior mean over time, with 95% credible-interval bands</p>
      <div id="chart-reward" class="chart" data-chart="reward" data-variants="[]" data-points="0"></div></div>
    <div class="panel"><h2>Probability to be best</h2>
      <p id="prob-best-hint" class="hint">posterior probability that each variant has the highest reward rate</p>
      <div id="chart-prob-best" class="chart" data-chart="prob-best" data-variants="[]" data-points="0"></div></div>
  </section>
  <section class="panel" aria-labelledby="timeline-heading">
    <div class="panel-head"><h2 id="timeline-heading">Decision timeline</h2>
      <span class="hint">promotions, rollbacks, pauses, challengers and alarms, newest first</span></div>
    <ol id="timeline" class="timeline" data-entries="0"></ol>
  </section>
</main>
<footer>$footer</footer>
<script type="application/json" id="dashboard-config">$config</script>
$scripts
</body>
</html>
"""
)


def _page(*, title: str, subtitle: str, mode: str, config: dict, scripts: str, summary: str = "", footer: str = "") -> str:
    return PAGE.substitute(
        title=html.escape(title),
        subtitle=html.escape(subtitle),
        css=asset(DASHBOARD_CSS).text,
        mode=mode,
        summary=summary,
        footer=footer,
        config=_script_json(config),
        scripts=scripts,
    )


def render_live_page(root_path: str = "") -> str:
    """The page the gateway serves: it loads plotly.js and the page script from the gateway and
    reads the JSON API under `root_path` (the mount point, empty at the root)."""
    base = root_path.rstrip("/")
    scripts = "\n".join(
        f'<script src="{html.escape(base)}/dashboard/{name}?v={asset(name).etag}"></script>'
        for name in (PLOTLY_JS, DASHBOARD_JS)
    )
    return _page(
        title="Gateway dashboard",
        subtitle="experiments, live",
        mode="live",
        config={"mode": "live", "api_base": base, "refresh_ms": 2000},
        scripts=scripts,
        footer="Refreshes every 2 s from this gateway's API &middot; "
        '<a href="' + html.escape(base) + '/v1/experiments">/v1/experiments</a>',
    )


def _normalise_experiment(entry: dict) -> dict:
    """Accept {"state", "points", "history"}, {"state", "series": {...}} or a bare state."""
    if "state" not in entry and "variants" in entry:
        entry = {"state": entry}
    state = entry.get("state") or {}
    series = entry.get("series") or {}
    points = entry.get("points", series.get("points", []))
    history = entry.get("history", series.get("history", state.get("history", [])))
    return {"state": state, "points": list(points or []), "history": list(history or [])}


def _summary_block(summary: dict[str, Any]) -> str:
    cards = "".join(
        f'<div class="card"><div class="label">{html.escape(str(k))}</div>'
        f'<div class="value small">{html.escape(str(v))}</div></div>'
        for k, v in summary.items()
    )
    return f'  <section id="report-summary" class="cards report-summary" aria-label="Summary">{cards}</section>'


def render_static_report(experiments_data: dict) -> str:
    """One self-contained HTML file with the dashboard's charts: plotly.js and the page script
    inlined, the data embedded as JSON. Opens from disk, offline.

    `experiments_data`:
      - "experiments": a list, each {"state": <GET /v1/experiments/{e}>, "points": <series
        points, as GET /v1/experiments/{e}/series gives them>, "history": <decision history,
        default the state's>} (a {"series": {...}} key or a bare state is accepted too);
      - "title" (optional): the page title;
      - "summary" (optional): {label: value} shown as cards at the top;
      - "generated_at" (optional): unix seconds, default now.
    """
    experiments = [_normalise_experiment(e) for e in experiments_data.get("experiments", [])]
    generated_at = float(experiments_data.get("generated_at") or time.time())
    names = [e["state"].get("name") or e["state"].get("experiment") or "" for e in experiments]
    title = experiments_data.get("title") or ("Gateway report: " + ", ".join(n for n in names if n))
    config = {"mode": "static", "generated_at": generated_at, "experiments": experiments}
    scripts = "\n".join(f"<script>{_inline_script(asset(n).text)}</script>" for n in (PLOTLY_JS, DASHBOARD_JS))
    summary = experiments_data.get("summary") or {}
    return _page(
        title=title,
        subtitle="report",
        mode="static",
        config=config,
        scripts=scripts,
        summary=_summary_block(summary) if summary else "",
        footer=html.escape(title) + " &middot; self-contained: plotly.js and data are embedded in this file",
    )


# ---- routes ------------------------------------------------------------------------------


async def dashboard_page(request: Request) -> Response:
    return HTMLResponse(
        render_live_page(request.scope.get("root_path", "")),
        headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"},
    )


def _asset_response(request: Request, name: str) -> Response:
    a = asset(name)
    etag = f'"{a.etag}"'
    # The page asks for ?v=<content hash>, so a cached copy never outlives its content.
    # plotly.min.js changes only with the plotly package: long-lived even without it.
    versioned = request.query_params.get("v") == a.etag or name == PLOTLY_JS
    headers = {
        "cache-control": LONG_CACHE if versioned else "no-cache",
        "etag": etag,
        "vary": "accept-encoding",
        "x-content-type-options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    media = "text/javascript; charset=utf-8"
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(a.gzipped, media_type=media, headers={**headers, "content-encoding": "gzip"})
    return Response(a.body, media_type=media, headers=headers)


async def plotly_js(request: Request) -> Response:
    return _asset_response(request, PLOTLY_JS)


async def dashboard_js(request: Request) -> Response:
    return _asset_response(request, DASHBOARD_JS)


def dashboard_routes() -> list[Route]:
    """GET /dashboard, /dashboard/plotly.min.js and /dashboard/dashboard.js (HEAD too)."""
    return [
        Route("/dashboard", dashboard_page, methods=["GET"], name="dashboard"),
        Route(f"/dashboard/{PLOTLY_JS}", plotly_js, methods=["GET"], name="dashboard-plotly"),
        Route(f"/dashboard/{DASHBOARD_JS}", dashboard_js, methods=["GET"], name="dashboard-script"),
    ]
