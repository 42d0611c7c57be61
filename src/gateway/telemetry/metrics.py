"""OpenTelemetry metrics, exposed in Prometheus text at GET /metrics, and pushed too when the
OTEL_METRICS_EXPORTER variables ask for it (metrics_export.py).

Counters and histograms are per router replica (Prometheus sums them across replicas); the
bandit's beliefs (posterior mean, probability to be best, traffic share, counts from Redis) are
gauges read from the replica's cached experiment state, so every replica reports the same
global values. So are the model-monitoring figures (online KPIs, drift PSI, holdout uplift): every
replica computes them from the same Redis entries."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds; fine near the few-millisecond latencies of a local prediction.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)

_registry: CollectorRegistry | None = None
_provider: Any = None  # the SDK's MeterProvider, once set up


def setup_metrics(component: str = "router") -> CollectorRegistry:
    """Install this process's meter provider with a Prometheus reader (and the push readers the
    environment asks for), once."""
    global _registry
    if _registry is not None:
        return _registry
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource

    from gateway.telemetry.metrics_export import push_readers

    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry, disable_target_info=True, scope_info_enabled=False)
    latency_view = View(
        instrument_name="*duration*", aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS)
    )
    # The scrape carries no resource (disable_target_info); a push names its source as traces do.
    attrs = {"gateway.component": component}
    if not os.environ.get("OTEL_SERVICE_NAME", "").strip():
        attrs["service.name"] = "ab-auto-promotion"
    # One provider for both: a pushed metric is the very instrument that is scraped. The
    # Prometheus text format we serve carries no exemplars: do not sample them per request.
    provider = MeterProvider(metric_readers=[reader, *push_readers()], resource=Resource.create(attrs), views=[latency_view],
                             exemplar_filter=AlwaysOffExemplarFilter())
    metrics.set_meter_provider(provider)
    _registry = registry
    global _provider
    _provider = provider
    return registry


def shutdown_metrics() -> None:
    """Push what the push readers have not sent yet (their last interval), once, as the process
    ends; the scrape needs nothing."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def prometheus_text() -> tuple[bytes, str]:
    registry = _registry or CollectorRegistry()
    return generate_latest(registry), CONTENT_TYPE_LATEST


StateSource = Callable[[], Iterable[dict[str, Any]]]

# Metric name suffix -> what its help text calls it.
KPIS = {"accuracy": "accuracy", "precision": "precision", "recall": "recall", "f1": "F1", "roc_auc": "ROC AUC"}
KPI_SCOPES = ("window", "lifetime")


class GatewayMetrics:
    """The gateway's instruments. `states` yields the cached experiment states for gauges;
    `meter` defaults to the process's (tests pass their own provider's)."""

    def __init__(self, states: StateSource, meter: Meter | None = None):
        meter = meter or metrics.get_meter("gateway")
        self._states = states
        self.requests = meter.create_counter(
            "gateway.predictions", unit="1", description="Predictions served, by experiment and variant"
        )
        self.errors = meter.create_counter(
            "gateway.errors", unit="1", description="Requests answered with an error, by route and error code"
        )
        self.http_duration = meter.create_histogram(
            "http.server.request.duration", unit="s", description="Duration of HTTP requests handled by the router"
        )
        self.predict_duration = meter.create_histogram(
            "gateway.variant.predict.duration", unit="s", description="Time in the variant call, router side"
        )
        self.rewards = meter.create_counter(
            "gateway.rewards", unit="1", description="Feedback items by outcome (accepted, duplicate, rejected)"
        )
        self.shadow = meter.create_counter(
            "gateway.shadow.requests", unit="1",
            description="Copies of live requests for shadow variants, by outcome (recorded, scored, "
            "dropped: the queue was full, failed, gone: the request's record had expired, store_unavailable)",
        )
        # Up and down: a gaussian reward may be negative, which a counter drops (and a batch's
        # net sum would then count or not by how the rewards happened to be batched).
        self.reward_sum = meter.create_up_down_counter(
            "gateway.reward.sum", unit="1", description="Sum of accepted rewards, by experiment and variant"
        )
        for name, key, desc in (
            ("gateway.posterior.mean", "mean", "Posterior mean reward of each variant"),
            ("gateway.prob_best", "prob_best", "Posterior probability that the variant is best"),
            ("gateway.traffic.share", "traffic_share", "Share of traffic the router currently gives the variant"),
            ("gateway.variant.requests", "requests", "Predictions served by the variant (all replicas, from Redis)"),
            ("gateway.variant.rewards", "rewards", "Rewards applied to the variant (all replicas, from Redis)"),
        ):
            meter.create_observable_gauge(name, callbacks=[self._variant_gauge(key)], unit="1", description=desc)
        meter.create_observable_counter(
            "gateway.decisions", callbacks=[self._decisions], unit="1",
            description="Decisions in the experiment's history, by action (promote, rollback, retire, ...)",
        )
        meter.create_observable_gauge(
            "gateway.srm.p_value", callbacks=[self._srm], unit="1",
            description="Sample-ratio mismatch p-value (chi-square of served vs expected under changing weights)",
        )
        meter.create_observable_gauge(
            "gateway.experiment.promoted", callbacks=[self._promoted], unit="1",
            description="1 when the experiment has a promoted champion",
        )
        for key, label in KPIS.items():
            meter.create_observable_gauge(
                f"gateway.kpi.{key}", callbacks=[self._kpi_gauge(key)], unit="1",
                description=f"Online {label} of the variant's labelled predictions, over its newest "
                "monitoring.window labels (scope=window) or its whole life (scope=lifetime)",
            )
        meter.create_observable_gauge(
            "gateway.drift.psi", callbacks=[self._drift], unit="1",
            description="Population stability index against the reference window, per feature "
            "(kind=feature) and per variant's predictions (kind=prediction)",
        )
        meter.create_observable_gauge(
            "gateway.holdout.uplift", callbacks=[self._uplift], unit="1",
            description="Posterior mean reward of the champion (or the leader) minus the holdout's",
        )

    def _variant_gauge(self, key: str):
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            for state in self._states():
                for v in state["variants"]:
                    if v.get(key) is not None:
                        yield Observation(float(v[key]), {"experiment": state["name"], "variant": v["name"]})

        return callback

    def _decisions(self, options: CallbackOptions) -> Iterable[Observation]:
        for state in self._states():
            counts: dict[str, int] = {}
            for entry in state.get("history", []):
                counts[entry["action"]] = counts.get(entry["action"], 0) + 1
            for action, n in counts.items():
                yield Observation(n, {"experiment": state["name"], "action": action})

    def _srm(self, options: CallbackOptions) -> Iterable[Observation]:
        for state in self._states():
            p = state.get("srm", {}).get("p_value")
            if p is not None:
                yield Observation(p, {"experiment": state["name"]})

    def _promoted(self, options: CallbackOptions) -> Iterable[Observation]:
        for state in self._states():
            yield Observation(1 if state["status"] == "promoted" else 0, {"experiment": state["name"]})

    def _kpi_gauge(self, key: str):
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            for state in self._states():
                # A shadow variant's series carry role="shadow" (live ones keep the labels they had).
                shadows = {v["name"] for v in state["variants"] if v.get("role") == "shadow"}
                for variant, scopes in (state.get("kpis") or {}).items():
                    for scope in KPI_SCOPES:
                        # None while undefined (no labels yet, no scores for the AUC): no sample
                        # rather than a made-up 0.
                        value = (scopes.get(scope) or {}).get(key)
                        if value is not None:
                            labels = {"experiment": state["name"], "variant": variant, "scope": scope}
                            yield Observation(float(value), {**labels, "role": "shadow"} if variant in shadows else labels)

        return callback

    def _drift(self, options: CallbackOptions) -> Iterable[Observation]:
        for state in self._states():
            drift = state.get("drift") or {}
            for kind, key in (("feature", "features"), ("prediction", "predictions")):
                for name, psi in (drift.get(key) or {}).items():
                    if psi is not None:
                        yield Observation(float(psi), {"experiment": state["name"], "kind": kind, "name": name})

    def _uplift(self, options: CallbackOptions) -> Iterable[Observation]:
        for state in self._states():
            uplift = state.get("holdout_uplift")
            if uplift and uplift.get("uplift") is not None:
                yield Observation(float(uplift["uplift"]), {"experiment": state["name"], "variant": uplift["variant"]})
