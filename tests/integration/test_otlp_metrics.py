"""Metrics pushed over OTLP (OTEL_METRICS_EXPORTER=otlp) from a real gateway: the same
instruments the Prometheus scrape shows, under the same names, moving with traffic."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import POLICIES, ROW, RunningGateway, start_gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pushing_gateway(tmp_path_factory, collector) -> Iterator[RunningGateway]:
    env = {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": collector.metrics_endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",  # ms; the SDK's default is a minute
        "OTEL_TRACES_EXPORTER": "none",
    }
    gw = start_gateway(POLICIES / "churn.yaml", tmp_path_factory.mktemp("otlp-metrics"), env)
    yield gw
    code = gw.stop(group=False)  # what this module checks is not how it stops: the quick way
    assert code == 0, gw.diagnostics()


def prometheus_name(point: dict) -> str:
    """The Prometheus family name of an OpenTelemetry metric: dots become underscores and a
    unit of seconds a suffix (counters' `_total` is not part of the family's name)."""
    return point["name"].replace(".", "_") + ("_seconds" if point["unit"] == "s" else "")


def scraped_names(client) -> set[str]:
    return {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}


def latest(points: list[dict], name: str, **attrs) -> dict | None:
    found = [p for p in points if p["name"] == name and all(p["attributes"].get(k) == v for k, v in attrs.items())]
    return found[-1] if found else None


def test_pushed_metrics_move_with_traffic_under_the_scraped_names(pushing_gateway, collector):
    with pushing_gateway.client() as c:
        out = c.post("/v1/experiments/churn/predict", json={"instances": [ROW]}).json()
        r = c.post("/v1/rewards", json={"request_id": out["request_id"], "reward": 1, "token": out["reward_token"]})
        assert r.status_code == 200, r.text
        variant = out["variant"]

        def traffic_arrived(points: list[dict]) -> bool:
            served = latest(points, "gateway.predictions", experiment="churn", variant=variant)
            accepted = latest(points, "gateway.rewards", outcome="accepted")
            rewarded = latest(points, "gateway.variant.rewards", experiment="churn", variant=variant)
            return bool(served and served["value"] >= 1 and accepted and accepted["value"] >= 1
                        and rewarded and rewarded["value"] >= 1)

        points = collector.wait_for_metrics(traffic_arrived, timeout_s=30)
        assert traffic_arrived(points), sorted({p["name"] for p in points})
        served = latest(points, "gateway.predictions", experiment="churn", variant=variant)
        assert served["kind"] == "sum" and served["resource"]["gateway.component"] == "router"
        duration = latest(points, "http.server.request.duration", **{"http.route": "/v1/experiments/{experiment}/predict"})
        assert duration and duration["kind"] == "histogram" and duration["count"] >= 1
        prob_best = {v: latest(points, "gateway.prob_best", experiment="churn", variant=v) for v in ("logreg", "xgb")}
        assert all(prob_best.values()) and abs(sum(p["value"] for p in prob_best.values()) - 1) < 1e-9

        # Every scraped family is pushed too (gauges appear once their figures exist, so wait
        # for the next push), and nothing is pushed that the scrape does not show.
        scraped = scraped_names(c)
        points = collector.wait_for_metrics(lambda pts: scraped <= {prometheus_name(p) for p in pts}, timeout_s=15)
        pushed = {prometheus_name(p) for p in points}
        assert scraped <= pushed, sorted(scraped - pushed)
        assert pushed <= scraped_names(c), sorted(pushed - scraped_names(c))
