"""The dashboard in a real headless Chromium against a real `gateway serve`: simulated users
send traffic to 'churn', then the page must show that experiment's variants and data."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from scipy import stats

from gateway.api.dashboard import asset
from gateway.sim.churn import make_churn
from gateway.sim.traffic import SimulatedUsers, TrafficStats

pytestmark = pytest.mark.integration

EXPERIMENT = "churn"
TIME_CHARTS = ["chart-traffic", "chart-reward", "chart-prob-best"]
CHARTS = ["chart-posterior", *TIME_CHARTS]
TRAFFIC_S = 10.0
INSTALL_HINT = "chromium is not installed; install it to run the dashboard test (Debian: apt-get install -y chromium)"
# SVG and MathML elements close with "/>" in the dumped DOM; these HTML ones have no end tag.
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_binary()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    return path


def run_chromium(binary: str, profile: Path, url: str, *args: str, budget_ms: int = 8000) -> subprocess.CompletedProcess:
    cmd = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
        f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *args, url,
    ]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def dump_dom(binary: str, profile: Path, url: str, budget_ms: int = 8000) -> str:
    out = run_chromium(binary, profile, url, "--dump-dom", budget_ms=budget_ms)
    assert out.returncode == 0 and "<html" in out.stdout, f"chromium failed ({out.returncode}):\n{out.stderr[-3000:]}"
    return out.stdout


class Dom(HTMLParser):
    """Each element with an id: its attributes and the classes of every element inside it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.by_id: dict[str, dict] = {}
        self.inner_classes: dict[str, list[str]] = {}
        self.text: dict[str, list[str]] = {}
        self.body: dict[str, str] = {}
        self._stack: list[tuple[str, str | None]] = []

    def _open_ids(self) -> list[str]:
        return [i for _, i in self._stack if i]

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        for open_id in self._open_ids():
            self.inner_classes[open_id].extend(a.get("class", "").split())
        if tag == "body":
            self.body = a
        if a.get("id"):
            self.by_id[a["id"]] = {"tag": tag, **a}
            self.inner_classes.setdefault(a["id"], [])
            self.text.setdefault(a["id"], [])
        if tag not in VOID:
            self._stack.append((tag, a.get("id")))

    def handle_startendtag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        for open_id in self._open_ids():
            self.inner_classes[open_id].extend(a.get("class", "").split())

    def handle_endtag(self, tag):
        for k in range(len(self._stack) - 1, -1, -1):
            if self._stack[k][0] == tag:
                del self._stack[k:]
                break

    def handle_data(self, data):
        for open_id in self._open_ids():
            self.text[open_id].append(data)


def parse(doc: str) -> Dom:
    dom = Dom()
    dom.feed(doc)
    dom.close()
    return dom


def send_traffic(url: str, seconds: float, out: dict) -> None:
    """Predictions and delayed label feedback, as the demo's simulated users send them."""
    rows, labels = make_churn(5000, seed=2024)
    users = SimulatedUsers(url, EXPERIMENT, rows, labels, seed=2024, concurrency=4, units=500)
    start = time.monotonic()
    try:
        out["stats"] = asyncio.run(users.run(lambda: time.monotonic() - start > seconds))
    except Exception as err:  # noqa: BLE001 - re-raised by the fixture, not lost in the thread
        out["error"] = err


def series(client: httpx.Client, since: float | None = None) -> dict:
    r = client.get(f"/v1/experiments/{EXPERIMENT}/series", params={} if since is None else {"since": since})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def traffic(gateway) -> TrafficStats:
    """~10 s of traffic to 'churn', then until the router has recorded a point after it."""
    out: dict = {}
    thread = threading.Thread(target=send_traffic, args=(gateway.url, TRAFFIC_S, out), daemon=True)
    thread.start()
    thread.join(TRAFFIC_S + 90)
    assert not thread.is_alive(), "the simulated users did not stop"
    if "error" in out:
        raise out["error"]
    stats: TrafficStats = out["stats"]
    assert stats.requests > 0 and stats.rewards_accepted > 0, stats
    ended = time.time()
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(series(client, since=ended)["points"]) >= 1 and len(series(client)["points"]) >= 3:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the router recorded no series point after the traffic")
    return stats


def bandit_arms(gateway) -> list[str]:
    """The experiment's variants that every chart plots: those with a probability to be best
    (a holdout or a retired variant has none, so the P(best) chart leaves it out)."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        r = client.get(f"/v1/experiments/{EXPERIMENT}")
        assert r.status_code == 200, r.text
        return [v["name"] for v in r.json()["variants"] if v.get("prob_best") is not None]


def test_dashboard_assets_are_served_by_the_gateway(gateway):
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        page = client.get("/dashboard", params={"experiment": EXPERIMENT})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        srcs = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page.text)
        assert [s.split("?")[0] for s in srcs] == ["/dashboard/plotly.min.js", "/dashboard/dashboard.js"]
        for src in srcs:
            r = client.get(src)
            assert r.status_code == 200 and "javascript" in r.headers["content-type"], src
            assert "max-age=31536000" in r.headers["cache-control"], src
        assert client.get("/dashboard/plotly.min.js").content == asset("plotly.min.js").body


def test_dashboard_shows_live_experiment_data(gateway, traffic, chromium, tmp_path):
    names = bandit_arms(gateway)
    assert len(names) >= 2, names
    url = f"{gateway.url}/dashboard?experiment={EXPERIMENT}"

    dom = parse(dump_dom(chromium, tmp_path / "profile-dom", url))
    if dom.body.get("data-state") != "ready":
        # A loaded machine: give the page more (virtual) time, once.
        dom = parse(dump_dom(chromium, tmp_path / "profile-dom-2", url, budget_ms=20000))

    assert dom.body.get("data-state") == "ready", f"the page did not load its data: {dom.body}"
    assert dom.body.get("data-experiment") == EXPERIMENT
    for chart in CHARTS:
        el = dom.by_id.get(chart)
        assert el is not None, f"no #{chart} in the page"
        plotted = json.loads(el["data-variants"])
        for name in names:
            assert name in plotted, f"#{chart} plots {plotted}, not {name}"
        assert "main-svg" in dom.inner_classes[chart], f"#{chart} holds no rendered plotly SVG"
    for chart in TIME_CHARTS:
        assert int(dom.by_id[chart]["data-points"]) >= 2, f"#{chart}: {dom.by_id[chart]['data-points']} time points"
    assert int(dom.by_id["chart-posterior"]["data-points"]) >= 2

    timeline = dom.by_id.get("timeline")
    assert timeline is not None and timeline["tag"] == "ol"
    assert int(timeline["data-entries"]) >= 0  # churn's decisions are not this test's to know
    assert "".join(dom.text["experiment-title"]).strip() == EXPERIMENT
    table = "".join(dom.text["variants-body"])
    for name in names:
        assert name in table

    shot = tmp_path / "dashboard.png"
    out = run_chromium(
        chromium, tmp_path / "profile-shot", url, f"--screenshot={shot}", "--window-size=1400,1800", "--hide-scrollbars"
    )
    assert out.returncode == 0 and shot.exists(), f"chromium screenshot failed:\n{out.stderr[-3000:]}"
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    target = os.environ.get("GATEWAY_DASHBOARD_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_the_off_policy_panel_estimates_the_target_it_is_given(gateway, traffic, chromium, tmp_path):
    """The panel asks the gateway (GET .../ope) for the target in ?ope= and shows each estimator
    with the value the API gives for the same log."""
    url = f"{gateway.url}/dashboard?experiment={EXPERIMENT}&ope=uniform"
    dom = parse(dump_dom(chromium, tmp_path / "profile-ope", url))
    if dom.by_id.get("ope-result", {}).get("data-status") != "ok":
        dom = parse(dump_dom(chromium, tmp_path / "profile-ope-2", url, budget_ms=20000))
    result = dom.by_id["ope-result"]
    assert result["data-target"] == "uniform" and result["data-status"] == "ok", "".join(dom.text.get("ope-result", []))
    shown = "".join(dom.text["ope-result"])
    for estimator in ("IPS", "SNIPS", "DR"):
        assert estimator in shown
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        api = client.get(f"/v1/experiments/{EXPERIMENT}/ope", params={"target": "uniform"}).json()
    # Traffic may have gone on between the two reads: the same estimate within its own error.
    snips = api["estimates"]["snips"]
    assert re.search(r"\d\.\d{4}", shown)
    assert abs(float(re.search(r"SNIPS(\d\.\d{4})", shown).group(1)) - snips["value"]) < 4 * snips["stderr"] + 1e-3


def test_beta_density_in_the_browser_matches_scipy(chromium, tmp_path):
    """The page computes Beta densities itself (log-gamma by Lanczos): check them in Chromium."""
    cases = [(0.5, 2, 2), (0.3, 355, 169), (0.93, 819, 58), (0.0, 1, 3), (0.999, 5, 1), (0.9, 50_000, 5_000), (0.2, 0.5, 0.5)]
    page = tmp_path / "math.html"
    page.write_text(
        '<!doctype html><html><body><select id="experiment-select"></select>'
        '<script type="application/json" id="dashboard-config">{"mode": "static", "experiments": []}</script>'
        f"<script>{asset('dashboard.js').text}</script>"
        "<script>document.body.setAttribute('data-out', JSON.stringify(["
        + ",".join(f"window.gatewayDashboard.betaPdf({x}, {a}, {b})" for x, a, b in cases)
        + "]));</script></body></html>"
    )
    doc = dump_dom(chromium, tmp_path / "profile-math", page.as_uri(), budget_ms=1000)
    raw = doc.split('data-out="', 1)[1].split('"', 1)[0].replace("&quot;", '"')
    got = json.loads(raw)
    for (x, a, b), value in zip(cases, got, strict=True):
        assert value == pytest.approx(float(stats.beta.pdf(x, a, b)), rel=1e-9, abs=1e-300), (x, a, b)
