"""Metrics pushed as well as scraped: readers for the meter provider, from the standard
OpenTelemetry variables. The Prometheus scrape (GET /metrics) is always on; a pushed metric is
the same instrument, so it carries the same name (in OpenTelemetry's dotted form,
`gateway.predictions` for Prometheus's `gateway_predictions_total`).

OTEL_METRICS_EXPORTER: otlp, console, prometheus (the scrape alone) or none, comma-separated.
Unset, it is 'otlp' when OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is set and nothing else, so an
endpoint set for traces alone does not start pushing metrics at a trace-only backend.
OTEL_EXPORTER_OTLP_(METRICS_)PROTOCOL: http/protobuf (default) or grpc. The SDK itself reads
the endpoint, headers, temporality and the push interval (OTEL_METRIC_EXPORT_INTERVAL, ms)."""
from __future__ import annotations

from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter, MetricReader

from gateway.telemetry.otlp_env import env, exporter_list, otlp_protocol

_EXPORTERS = ("otlp", "console", "prometheus", "none")


class MetricsConfigError(ValueError):
    pass


def exporter_names() -> list[str]:
    """The push exporters asked for (the scrape needs none)."""
    names = exporter_list("OTEL_METRICS_EXPORTER", _EXPORTERS, MetricsConfigError)
    if names is None:
        return ["otlp"] if env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") else []
    return [n for n in names if n in ("otlp", "console")]


def _otlp_exporter() -> MetricExporter:
    if otlp_protocol("metrics", MetricsConfigError) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    return HttpExporter()


def validate_environment() -> None:
    """Fail at start, naming the variable, rather than in a replica later."""
    for name in exporter_names():
        if name == "otlp":
            _otlp_exporter()


def push_readers() -> list[MetricReader]:
    """One periodic reader per push exporter; it exports on the SDK's interval and on shutdown."""
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    return [
        PeriodicExportingMetricReader(_otlp_exporter() if name == "otlp" else ConsoleMetricExporter())
        for name in exporter_names()
    ]
