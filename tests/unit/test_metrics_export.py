"""Which metric pushes the OTEL_* variables ask for, and a bad value refused at start by name."""
from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from gateway.telemetry import metrics_export

VARS = ("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in VARS:
        monkeypatch.delenv(name, raising=False)


def test_nothing_is_pushed_unless_asked(monkeypatch):
    assert metrics_export.exporter_names() == []
    # An endpoint for traces alone must not start pushing metrics at a trace-only backend.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert metrics_export.push_readers() == []


def test_otlp_when_named_or_when_a_metrics_endpoint_is_set(monkeypatch):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    readers = metrics_export.push_readers()
    assert len(readers) == 1 and isinstance(readers[0], PeriodicExportingMetricReader)
    readers[0].shutdown()  # its export thread started with it
    monkeypatch.delenv("OTEL_METRICS_EXPORTER")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://127.0.0.1:4318/v1/metrics")
    assert metrics_export.exporter_names() == ["otlp"]
    # 'prometheus' is the scrape, always on: it needs no push reader.
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    assert metrics_export.exporter_names() == []


@pytest.mark.parametrize("var, value", [("OTEL_METRICS_EXPORTER", "otlp,statsd"),
                                        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")])
def test_a_bad_value_fails_naming_the_variable_and_the_value(monkeypatch, var, value):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError) as err:
        metrics_export.validate_environment()
    assert var in str(err.value) and (value.split(",")[-1] in str(err.value))
