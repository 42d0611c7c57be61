"""Unit tests for the gauges GatewayMetrics reads from the cached experiment state: what a
Prometheus scrape of /metrics shows for online KPIs, drift and the holdout uplift."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway import monitoring
from gateway.policy import parse_policy
from gateway.decisions.state import experiment_state
from gateway.store.snapshot import ArmCounts, Snapshot
from gateway.telemetry.metrics import GatewayMetrics

POLICY = parse_policy(
    {
        "experiment": "churn",
        "features": [{"name": "tenure"}, {"name": "plan", "type": "categorical", "values": ["basic", "pro"]}],
        "holdout": {"variant": "base", "fraction": 0.05},
        "monitoring": {"window": 50, "min_drift_rows": 20},
        "variants": [
            {"name": "base", "model": "m/base.skops"},
            {"name": "logreg", "model": "m/lr.skops"},
            {"name": "xgb", "model": "m/xgb.ubj"},
        ],
    }
)
FEEDBACK = [  # as the feedback stream holds it: oldest first, JSON values
    {"variant": "logreg", "label": "[1]", "pred": "[1]", "scores": "[0.8]"},
    {"variant": "logreg", "label": "[0]", "pred": "[1]", "scores": "[0.6]"},
    {"variant": "logreg", "label": "[0]", "pred": "[0]", "scores": "[0.1]"},
    {"variant": "xgb", "label": "[1]", "pred": "[0]"},
]
COUNTS = {"logreg": {"tp": 30, "fp": 10, "tn": 50, "fn": 10, "correct": 80}}


def decisions(shift: float, seed: int, n: int = 60) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    return [
        {"x": json.dumps([[float(rng.normal(shift, 1)), "pro" if rng.random() < 0.5 else "basic"]]),
         "pred": json.dumps([int(rng.random() < 0.5)]), "variant": ["logreg", "xgb"][i % 2]}
        for i in range(n)
    ]


def served_state() -> dict[str, Any]:
    """A state as DataPlane._record_series caches it: experiment_state plus srm, KPIs and drift."""
    arms = {"logreg": ArmCounts(rewards=100, reward_sum=70.0, requests=110), "xgb": ArmCounts(rewards=90, reward_sum=50.0),
            "base": ArmCounts(rewards=10, reward_sum=4.0)}
    state = experiment_state(POLICY, Snapshot(arms=arms, meta={"status": "exploring"}), [])
    state["srm"] = {"expected": {}, "observed": {}, "p_value": None, "mismatch": False}
    state["kpis"] = monitoring.variant_kpis(POLICY.variant_names, COUNTS, monitoring.window_kpis(FEEDBACK, 50))
    state["drift"] = monitoring.drift_report(POLICY, decisions(0.0, 1), decisions(2.0, 2), "first predictions served")
    return state


def scrape(states: list[dict[str, Any]]) -> dict[str, list]:
    """The Prometheus text a scrape gets, as {family: samples}, through the exporter /metrics uses."""
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry, disable_target_info=True, scope_info_enabled=False)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({}))
    GatewayMetrics(lambda: states, meter=provider.get_meter("gateway"))
    text = generate_latest(registry).decode()
    provider.shutdown()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def values(samples: list, **match: str) -> dict[tuple, float]:
    keys = sorted({k for s in samples for k in s.labels} - set(match))
    return {tuple(s.labels[k] for k in keys): s.value for s in samples
            if all(s.labels.get(k) == v for k, v in match.items())}


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    return served_state()


@pytest.fixture(scope="module")
def families(state) -> dict[str, list]:
    return scrape([state])


def test_kpi_gauges_per_variant_and_scope(families, state):
    # Keys: (experiment, scope, variant)
    accuracy = values(families["gateway_kpi_accuracy"])
    assert accuracy == {
        ("churn", "lifetime", "logreg"): pytest.approx(0.8),
        ("churn", "window", "logreg"): pytest.approx(2 / 3),
        ("churn", "window", "xgb"): 0.0,
    }
    f1 = values(families["gateway_kpi_f1"], experiment="churn", scope="lifetime")
    assert f1 == {("logreg",): pytest.approx(state["kpis"]["logreg"]["lifetime"]["f1"])}
    assert values(families["gateway_kpi_precision"], scope="window", variant="logreg") == {("churn",): 0.5}
    assert values(families["gateway_kpi_recall"], scope="window", variant="logreg") == {("churn",): 1.0}


def test_undefined_kpis_are_left_out_not_zero(families):
    # No labels for the holdout, no scores from xgb (no AUC), no lifetime AUC at all.
    assert not any(s.labels["variant"] == "base" for f in families if f.startswith("gateway_kpi_") for s in families[f])
    assert values(families["gateway_kpi_roc_auc"]) == {("churn", "window", "logreg"): 1.0}
    # xgb's only window label is a positive it missed: precision undefined, recall 0.
    assert ("churn",) not in values(families["gateway_kpi_precision"], scope="window", variant="xgb")
    assert values(families["gateway_kpi_recall"], scope="window", variant="xgb") == {("churn",): 0.0}


def test_drift_psi_per_feature_and_per_variant_prediction(families, state):
    psi = values(families["gateway_drift_psi"], experiment="churn")  # keys: (kind, name)
    assert set(psi) == {("feature", "tenure"), ("feature", "plan"), ("prediction", "logreg"), ("prediction", "xgb")}
    assert psi[("feature", "tenure")] == pytest.approx(state["drift"]["features"]["tenure"])
    assert psi[("feature", "tenure")] > 0.25  # the shifted feature stands out
    assert max(psi.values()) == pytest.approx(state["drift"]["max_psi"])


def test_holdout_uplift_of_the_leader(families, state):
    assert values(families["gateway_holdout_uplift"]) == {("churn", "logreg"): pytest.approx(state["holdout_uplift"]["uplift"])}
    assert state["holdout_uplift"]["uplift"] == pytest.approx(71 / 102 - 5 / 12)


def test_a_state_before_monitoring_has_no_monitoring_samples():
    state = experiment_state(POLICY.model_copy(update={"holdout": None}), Snapshot(arms={}, meta={}), [])
    families = scrape([{**state, "kpis": None, "drift": None}])
    for name in ("gateway_kpi_accuracy", "gateway_kpi_roc_auc", "gateway_drift_psi", "gateway_holdout_uplift"):
        assert families.get(name, []) == [], name
    assert {s.labels["variant"] for s in families["gateway_posterior_mean"]} == {"base", "logreg", "xgb"}
    # Too few rows for a PSI: the report says so and the gauge stays empty.
    short = monitoring.drift_report(POLICY, decisions(0.0, 1, 3), decisions(0.0, 2), "first predictions served")
    assert scrape([{**state, "kpis": None, "drift": short}]).get("gateway_drift_psi", []) == []
