"""Unit tests for the dashboard's HTML: the self-contained report (render_static_report, the
demo's write_report) and the routes that serve the live page and its scripts."""
from __future__ import annotations

import asyncio
import gzip
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from gateway.api.dashboard import dashboard_routes, render_static_report
from gateway.policy import parse_policy
from gateway.report import write_report
from gateway.state import experiment_state
from gateway.store.experiments import ArmCounts, Snapshot

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
