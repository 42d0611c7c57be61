"""The standard OTEL_* variables as traces and metrics both read them: one rule for which
variable names the OTLP protocol and for parsing an exporter list, so the two signals cannot
drift apart. Each signal keeps its own defaults and error class."""
from __future__ import annotations

import os

PROTOCOLS = ("http/protobuf", "grpc")


def env(name: str) -> str | None:
    """The variable's value, stripped; None when unset or blank."""
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None


def exporter_list(var: str, allowed: tuple[str, ...], error: type[ValueError]) -> list[str] | None:
    """The comma-separated exporters of `var` in lower case (None when unset); a name not in
    `allowed` fails naming the variable and its value."""
    raw = env(var)
    if raw is None:
        return None
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    for n in names:
        if n not in allowed:
            raise error(f"{var}={raw!r}: {n!r} is not one of {', '.join(allowed)}")
    return names


def otlp_protocol(signal: str, error: type[ValueError]) -> str:
    """http/protobuf (the default) or grpc, from OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL, else
    OTEL_EXPORTER_OTLP_PROTOCOL; anything else fails naming the variable that said it."""
    specific = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    var = specific if env(specific) else "OTEL_EXPORTER_OTLP_PROTOCOL"
    protocol = (env(var) or "http/protobuf").lower()
    if protocol not in PROTOCOLS:
        raise error(f"{var}={protocol!r}: use one of {', '.join(PROTOCOLS)}")
    return protocol
