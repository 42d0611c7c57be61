"""Unit tests for the dashboard's HTML: the self-contained report (render_static_report, the
demo's write_report) and the routes that serve the live page and its scripts."""
from __future__ import annotations

import asyncio
import gzip
import json
import re
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest
from scipy import stats
from starlette.applications import Starlette

from gateway import monitoring
from gateway.api.dashboard import dashboard_routes, render_static_report
from gateway.policy import parse_policy
from gateway.cli.report import write_report
from gateway.decisions.state import experiment_state
from gateway.store.snapshot import ArmCounts, Snapshot

CHART_IDS = ["chart-posterior", "chart-traffic", "chart-reward", "chart-prob-best", "timeline"]
T0 = 1_790_000_000.0


def make_state(history: list[dict] | None = None) -> dict:
    policy = parse_policy(
        {
            "experiment": "churn",
            "features": [{"name": "x"}],
            "variants": [{"name": "logreg", "model": "a.m"}, {"name": "xgb", "model": "b.m"}],
            "promotion": {"min_samples": 50},
        }
    )
    arms = {
        "logreg": ArmCounts(rewards=300, reward_sum=200.0, requests=320),
        "xgb": ArmCounts(rewards=700, reward_sum=640.0, requests=720),
    }
    meta = {"status": "promoted", "champion": "xgb", "started_at": repr(T0)}
    return experiment_state(policy, Snapshot(arms=arms, meta=meta), history or [])


def make_points(state: dict, n: int = 5) -> list[dict]:
    keys = ("traffic_share", "prob_best", "mean", "credible_interval", "requests", "rewards")
    return [
        {
            "t": T0 + 2 * i,
            "status": "exploring",
            "champion": None,
            "variants": {v["name"]: {k: v[k] for k in keys} for v in state["variants"]},
        }
        for i in range(n)
    ]


HISTORY = [
    {"action": "promote", "variant": "xgb", "at": T0 + 6, "reason": "prob_best 0.99 >= 0.95", "by": "rule", "evidence": {}},
    {"action": "drift_alarm", "variant": "xgb", "at": T0 + 8, "reason": "feature drift on tenure", "by": "monitor"},
]


class Elements(HTMLParser):
    """Start tags with their attributes, and the text of each <script>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._in_script: dict | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "script":
            self._in_script, self._text = a, []

    def handle_data(self, data):
        if self._in_script is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._in_script is not None:
            self.scripts.append((self._in_script, "".join(self._text)))
            self._in_script = None

    def by_id(self, id_: str) -> tuple[str, dict] | None:
        return next(((t, a) for t, a in self.tags if a.get("id") == id_), None)


def parse(doc: str) -> Elements:
    p = Elements()
    p.feed(doc)
    p.close()
    return p


def embedded_config(doc: str) -> dict:
    el = parse(doc)
    (text,) = [body for attrs, body in el.scripts if attrs.get("id") == "dashboard-config"]
    return json.loads(text)


@pytest.fixture(scope="module")
def report() -> str:
    state = make_state(HISTORY)
    return render_static_report(
        {
            "title": "Report of churn",
            "summary": {"Requests": "1,040", "Seed": "7"},
            "generated_at": T0 + 20,
            "experiments": [{"state": state, "points": make_points(state), "history": HISTORY}],
        }
    )


def test_report_embeds_the_data(report):
    config = embedded_config(report)
    assert config["mode"] == "static"
    (exp,) = config["experiments"]
    assert exp["state"]["name"] == "churn"
    assert [v["name"] for v in exp["state"]["variants"]] == ["logreg", "xgb"]
    assert [v["posterior"] for v in exp["state"]["variants"]] == [{"alpha": 201.0, "beta": 101.0}, {"alpha": 641.0, "beta": 61.0}]
    assert len(exp["points"]) == 5 and exp["points"][0]["t"] == T0
    assert [e["action"] for e in exp["history"]] == ["promote", "drift_alarm"]


def test_report_is_self_contained(report):
    el = parse(report)
    srcs = [attrs.get("src") for attrs, _ in el.scripts if attrs.get("src")]
    assert srcs == [], f"the report must not load scripts: {srcs}"
    assert not re.search(r"""<script[^>]+src\s*=\s*["']?(https?:)?//""", report, re.IGNORECASE)
    assert not re.search(r"""<link[^>]+href\s*=\s*["']?(https?:)?//""", report, re.IGNORECASE)
    bodies = [body for attrs, body in el.scripts if not attrs.get("type")]
    assert any("plotly.js v" in b[:400] for b in bodies), "plotly.js is inlined"
    assert any("gatewayDashboard" in b for b in bodies), "the page script is inlined"


def test_report_has_the_charts_and_summary(report):
    el = parse(report)
    for id_ in CHART_IDS:
        assert el.by_id(id_) is not None, id_
    for id_ in CHART_IDS[:-1]:
        _, attrs = el.by_id(id_)
        assert "chart" in attrs["class"].split()
        assert json.loads(attrs["data-variants"]) == [] and attrs["data-points"] == "0"  # filled by the script
    assert el.by_id("report-summary") is not None
    assert "Report of churn" in report and "1,040" in report


def test_hostile_text_cannot_break_out_of_the_embedded_json():
    evil = "</script><script>alert(1)</script><!--"
    state = make_state([{"action": "pause", "variant": None, "at": T0, "reason": evil, "by": "admin"}])
    doc = render_static_report({"experiments": [{"state": state, "points": []}], "summary": {"Note": evil}})
    assert doc.count("<script") == doc.count("</script>") == 3  # config, plotly, page script
    assert len(parse(doc).scripts) == 3
    assert "<script>alert(1)" not in doc
    assert embedded_config(doc)["experiments"][0]["history"][0]["reason"] == evil


def test_non_finite_numbers_become_null():
    state = make_state()
    state["variants"][0]["expected_loss"] = float("nan")
    points = make_points(state, 2)
    points[1]["variants"]["xgb"]["mean"] = float("inf")
    config = embedded_config(render_static_report({"experiments": [{"state": state, "points": points}]}))
    exp = config["experiments"][0]
    assert exp["state"]["variants"][0]["expected_loss"] is None
    assert exp["points"][1]["variants"]["xgb"]["mean"] is None


def test_bare_states_and_nested_series_are_accepted():
    state = make_state(HISTORY)
    doc = render_static_report({"experiments": [state, {"state": state, "series": {"points": make_points(state, 3)}}]})
    a, b = embedded_config(doc)["experiments"]
    assert a["points"] == [] and len(a["history"]) == 2
    assert len(b["points"]) == 3 and len(b["history"]) == 2


def test_write_report_converts_the_demo_timeline(tmp_path: Path):
    state = make_state(HISTORY)
    timeline = [{"t": T0 + i, "variants": {v["name"]: v for v in state["variants"]}} for i in range(4)]
    promotions = [{"experiment": "churn", "variant": "xgb", "at_reward": 812}]
    summary = {"requests": 1040, "rewards": 1000, "seed": 7, "promotions": promotions}
    path = write_report(tmp_path / "out" / "report.html", timeline, state, summary)
    doc = path.read_text()
    (exp,) = embedded_config(doc)["experiments"]
    assert [p["t"] for p in exp["points"]] == [T0 + i for i in range(4)]
    point = exp["points"][0]["variants"]["xgb"]
    assert set(point) == {"traffic_share", "prob_best", "mean", "credible_interval", "requests", "rewards"}
    assert exp["points"][-1]["champion"] == "xgb"
    el = parse(doc)
    assert el.by_id("report-summary") is not None
    for text in ("1,040", "1,000", "xgb at reward 812", "Seed"):
        assert text in doc, text


# ---- the live page's routes ------------------------------------------------------------


class Http:
    """Requests to an ASGI app in process."""

    def __init__(self, app, root_path: str = "") -> None:
        self.app, self.root_path = app, root_path

    def request(self, method: str, path: str, headers: dict | None = None) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, root_path=self.root_path)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
                return await c.request(method, path, headers=headers)

        return asyncio.run(go())

    def get(self, path: str, headers: dict | None = None) -> httpx.Response:
        return self.request("GET", path, headers)

    def head(self, path: str) -> httpx.Response:
        return self.request("HEAD", path)


@pytest.fixture(scope="module")
def http() -> Http:
    return Http(Starlette(routes=dashboard_routes()))


def test_dashboard_page_loads_its_scripts_from_the_gateway(http):
    r = http.get("/dashboard?experiment=churn")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    el = parse(r.text)
    srcs = [attrs["src"] for attrs, _ in el.scripts if attrs.get("src")]
    assert [s.split("?")[0] for s in srcs] == ["/dashboard/plotly.min.js", "/dashboard/dashboard.js"]
    assert embedded_config(r.text)["mode"] == "live"
    for id_ in CHART_IDS:
        assert el.by_id(id_) is not None, id_
    for src in srcs:
        js = http.get(src)
        assert js.status_code == 200, src
        assert "javascript" in js.headers["content-type"]
        assert "max-age=31536000" in js.headers["cache-control"]


def test_plotly_is_served_compressed_cached_and_revalidated(http):
    r = http.get("/dashboard/plotly.min.js", headers={"accept-encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert "immutable" in r.headers["cache-control"]
    assert "plotly.js v" in r.text[:400]  # the client decompressed it
    plain = http.get("/dashboard/plotly.min.js", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == r.content
    assert len(gzip.compress(plain.content)) < len(plain.content)
    again = http.get("/dashboard/plotly.min.js", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert http.head("/dashboard/plotly.min.js").status_code == 200


def test_unversioned_page_script_is_revalidated(http):
    r = http.get("/dashboard/dashboard.js")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    assert "gatewayDashboard" in r.text


def test_page_honours_the_mount_point():
    r = Http(Starlette(routes=dashboard_routes()), root_path="/gw").get("/gw/dashboard")
    assert r.status_code == 200
    doc = r.text
    srcs = [attrs["src"] for attrs, _ in parse(doc).scripts if attrs.get("src")]
    assert all(s.startswith("/gw/dashboard/") for s in srcs), srcs
    assert embedded_config(doc)["api_base"] == "/gw"


# ---- the page script on gaussian rewards, KPIs and drift (run by node, plotly stubbed) ----------

NODE = shutil.which("node") or shutil.which("nodejs")
# Skipped only outside CI: .ci/run installs node, so there a missing node fails the tests.
needs_node = pytest.mark.skipif(
    NODE is None and not os.environ.get("CI"), reason="node is not installed; it runs the page script here"
)

# A DOM just large enough for dashboard.js: elements by id that keep their attributes and HTML,
# and a Plotly whose react() records what would be drawn. Prints what the page shows.
HARNESS = r"""
const fs = require("fs");
const [script, configPath] = process.argv.slice(2);
const elements = {};
function element(id) {
  return { id, textContent: "", innerHTML: "", hidden: false, className: "", value: "", style: {}, attrs: {},
    setAttribute(k, v) { this.attrs[k] = String(v); }, getAttribute(k) { return this.attrs[k] ?? null; },
    addEventListener() {} };
}
global.window = global;
global.document = {
  getElementById: (id) => (elements[id] = elements[id] || element(id)),
  body: element("body"), title: "", hidden: false,
};
global.getComputedStyle = () => ({ fontFamily: "sans-serif" });
Object.defineProperty(global, "location", { value: { href: "file:///report.html" } });
const drawn = {};
global.Plotly = { react(el, traces, layout) { drawn[el.id] = { traces, layout }; } };
document.getElementById("dashboard-config").textContent = fs.readFileSync(configPath, "utf8");
eval(fs.readFileSync(script, "utf8"));
const out = { body: document.body.attrs, drawn: {}, elements: {} };
for (const [id, d] of Object.entries(drawn)) {
  out.drawn[id] = d.traces.map((t) => ({ name: t.name, x: t.x, y: t.y }));
}
for (const [id, e] of Object.entries(elements)) {
  if (id !== "dashboard-config") out.elements[id] = { html: e.innerHTML, text: e.textContent, hidden: e.hidden, attrs: e.attrs };
}
process.stdout.write(JSON.stringify(out));
"""


def run_page(tmp_path: Path, config: dict) -> dict:
    (tmp_path / "harness.js").write_text(HARNESS)
    (tmp_path / "config.json").write_text(json.dumps(config))
    script = Path(__file__).parents[2] / "src" / "gateway" / "api" / "static" / "dashboard.js"
    out = subprocess.run([NODE, str(tmp_path / "harness.js"), str(script), str(tmp_path / "config.json")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


GAUSSIAN_POLICY = parse_policy(
    {
        "experiment": "revenue",
        "features": [{"name": "tenure"}, {"name": "plan", "type": "categorical", "values": ["basic", "pro"]}],
        "reward": {"type": "gaussian"},
        "holdout": {"variant": "base", "fraction": 0.1},
        "monitoring": {"window": 50, "min_drift_rows": 20},
        "variants": [{"name": "base", "model": "a.m"}, {"name": "b", "model": "b.m"}, {"name": "c", "model": "c.m"}],
    }
)
DRIFT_ALARM = {"action": "drift_alarm", "at": T0 + 6, "by": "monitor", "reason": "PSI 1.200 exceeds retrain.drift_psi 0.25",
               "evidence": {"psi": {"tenure": 1.2, "prediction:b": 0.05}, "reference": "first predictions served",
                            "reference_rows": 60, "live_rows": 60}}


def decisions(shift: float, seed: int, n: int = 60) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    return [
        {"x": json.dumps([[float(rng.normal(shift, 1)), "pro" if rng.random() < 0.5 else "basic"]]),
         "pred": json.dumps([int(rng.random() < 0.5)]), "variant": ["b", "c"][i % 2]}
        for i in range(n)
    ]


def gaussian_state() -> dict:
    """A gaussian experiment as GET /v1/experiments/{e} shows it once the monitor has run."""
    arms = {
        "base": ArmCounts(rewards=30, reward_sum=60.0, reward_sq_sum=150.0, requests=30),
        "b": ArmCounts(rewards=200, reward_sum=500.0, reward_sq_sum=1500.0, requests=210),
        "c": ArmCounts(rewards=150, reward_sum=330.0, reward_sq_sum=900.0, requests=160),
    }
    state = experiment_state(GAUSSIAN_POLICY, Snapshot(arms=arms, meta={"started_at": repr(T0)}), [DRIFT_ALARM])
    feedback = [{"variant": "b", "label": "[1]", "pred": "[1]", "scores": "[0.9]"},
                {"variant": "b", "label": "[0]", "pred": "[1]", "scores": "[0.2]"}]
    counts = {"b": {"tp": 30, "fp": 10, "tn": 50, "fn": 10, "correct": 80}}
    state["kpis"] = monitoring.variant_kpis(GAUSSIAN_POLICY.variant_names, counts, monitoring.window_kpis(feedback, 50))
    state["drift"] = monitoring.drift_report(GAUSSIAN_POLICY, decisions(0.0, 1), decisions(1.5, 2), "first predictions served")
    return state


def static_config(state: dict) -> dict:
    doc = render_static_report({"generated_at": T0 + 20,
                                "experiments": [{"state": state, "points": make_points(state), "history": state["history"]}]})
    return embedded_config(doc)


def test_report_embeds_gaussian_posteriors_kpis_and_drift():
    config = static_config(gaussian_state())
    state = config["experiments"][0]["state"]
    assert state["reward_type"] == "gaussian"
    assert all(set(v["posterior"]) == {"mu", "kappa", "alpha", "beta"} for v in state["variants"])
    assert state["kpis"]["b"]["window"]["accuracy"] == 0.5 and state["drift"]["level"] == "significant"
    doc = render_static_report({"experiments": [{"state": state}]})
    el = parse(doc)
    for id_ in ("monitoring", "kpi-table", "drift-summary", "posterior-title", "posterior-hint"):
        assert el.by_id(id_) is not None, id_
    assert "hidden" in el.by_id("monitoring")[1]  # shown by the script once there is something to show


@needs_node
def test_gaussian_posterior_is_drawn_as_the_student_t_marginal(tmp_path):
    state = gaussian_state()
    page = run_page(tmp_path, static_config(state))
    assert page["body"]["data-state"] == "ready"
    traces = {t["name"]: t for t in page["drawn"]["chart-posterior"]}
    assert set(traces) == {"base", "b", "c"}
    for v in state["variants"]:
        p = v["posterior"]
        x, y = np.array(traces[v["name"]]["x"]), np.array(traces[v["name"]]["y"], dtype=float)
        expected = stats.t.pdf(x, 2 * p["alpha"], loc=p["mu"], scale=np.sqrt(p["beta"] / (p["alpha"] * p["kappa"])))
        np.testing.assert_allclose(y, expected, rtol=1e-9, atol=1e-300)
    # The x axis spans the means (rewards around 2.5, not a rate in [0, 1]).
    b = traces["b"]
    assert min(b["x"]) < state["variants"][2]["mean"] < state["variants"][1]["mean"] < max(b["x"])
    assert max(b["y"]) > 1
    assert page["elements"]["posterior-title"]["text"] == "Posterior mean reward"
    assert "μ 2.5 · κ 200" in page["elements"]["variants-body"]["html"]


@needs_node
def test_bernoulli_posterior_is_still_the_beta_density(tmp_path):
    state = make_state(HISTORY)
    page = run_page(tmp_path, static_config(state))
    traces = {t["name"]: t for t in page["drawn"]["chart-posterior"]}
    for v in state["variants"]:
        x, y = np.array(traces[v["name"]]["x"]), np.array(traces[v["name"]]["y"], dtype=float)
        assert 0 <= x.min() and x.max() <= 1
        np.testing.assert_allclose(y, stats.beta.pdf(x, v["posterior"]["alpha"], v["posterior"]["beta"]), rtol=1e-9)
    assert page["elements"]["posterior-title"]["text"] == "Posterior reward rate"
    assert page["elements"]["monitoring"]["hidden"] is True  # no KPIs, no drift


@needs_node
def test_kpi_table_drift_summary_and_drift_alarm_in_the_timeline(tmp_path):
    state = gaussian_state()
    page = run_page(tmp_path, static_config(state))
    els = page["elements"]
    assert els["monitoring"]["hidden"] is False
    assert json.loads(els["kpi-table"]["attrs"]["data-variants"]) == ["base", "b", "c"]
    row_b = els["kpi-body"]["html"].split('data-variant="b"')[1].split("</tr>")[0]
    cells = [c.split("</td>")[0] for c in row_b.split("<td>")[2:]]  # after the variant's name
    # window accuracy, F1, ROC AUC, labels; lifetime accuracy, labels
    assert cells == ["0.500", "0.667", "1.000", "2", "0.800", "100"]
    drift = els["drift-summary"]
    assert drift["attrs"]["data-level"] == "significant"
    assert float(drift["attrs"]["data-max-psi"]) == pytest.approx(state["drift"]["max_psi"])
    assert "significant" in drift["html"] and "tenure" in drift["html"]
    timeline = els["timeline"]
    assert timeline["attrs"]["data-entries"] == "1"
    assert 'data-action="drift_alarm"' in timeline["html"] and "PSI: tenure 1.200, prediction:b 0.050" in timeline["html"]
    # ... and on the time charts, as a decision marker.
    assert any(t["name"] == "decisions" for t in page["drawn"]["chart-traffic"])
    assert "Uplift vs holdout" in els["overview"]["html"]


@needs_node
def test_routing_by_segment_shadow_tags_and_corrected_means(tmp_path):
    policy = parse_policy({
        "experiment": "churn",
        "features": [{"name": "plan", "type": "categorical", "values": ["basic", "pro"]}],
        "algorithm": "contextual_thompson", "context": ["plan"], "promotion": {"min_samples": 50}, "burn_in": 10,
        "variants": [{"name": "logreg", "model": "a.m"}, {"name": "xgb", "model": "b.m"},
                     {"name": "hgb", "model": "c.m", "role": "shadow"}],
    })
    segments = {"plan=basic": {"logreg": ArmCounts(rewards=300, reward_sum=240.0), "xgb": ArmCounts(rewards=30, reward_sum=12.0)},
                "plan=pro": {"logreg": ArmCounts(rewards=40, reward_sum=16.0), "xgb": ArmCounts(rewards=45, reward_sum=30.0)}}
    arms = {"logreg": ArmCounts(rewards=340, reward_sum=256.0, requests=340),
            "xgb": ArmCounts(rewards=75, reward_sum=42.0, requests=75)}
    meta = {"status": "exploring", "segment_champions": json.dumps({"plan=basic": "logreg"})}
    state = experiment_state(policy, Snapshot(arms=arms, meta=meta, segments=segments), [])
    state["corrected_means"] = {"logreg": {"mean": 0.7321, "ci_low": 0.7, "ci_high": 0.76, "n_served": 340, "ess": 340.0}}
    els = run_page(tmp_path, static_config(state))["elements"]
    assert els["segments"]["hidden"] is False and els["segments-table"]["attrs"]["data-segments"] == "2"
    body = els["segments-body"]["html"]
    assert 'data-segment="plan=basic" data-champion="logreg"' in body
    assert 'data-segment="plan=pro" data-champion=""' in body and "contextual_thompson" in body
    assert "logreg 100.0%" in body  # the promoted segment sends everything to its champion
    variants = els["variants-body"]["html"]
    assert '<span class="tag shadow">shadow</span>' in variants.split('data-variant="hgb"')[1]
    assert "IPS 0.7321" in variants
