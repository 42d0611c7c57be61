"""Structured JSON logs for the gateway's own loggers, each line carrying the current trace and
span ids so a log line leads to its trace. Tokens and secrets are never passed to a logger."""
from __future__ import annotations

import json
import logging
import sys
import time

from opentelemetry import trace

_RESERVED = set(vars(logging.makeLogRecord({})))

# Ray Serve's logging for the gateway's deployments: no access-log line per request (a file
# write on every prediction, ~4% of a router's CPU; the request's trace and metrics cover it).
QUIET = {"enable_access_log": False}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # Fields passed with `extra=` ride along.
        out.update({k: v for k, v in vars(record).items() if k not in _RESERVED and k not in out})
        return json.dumps(out, default=str)


def setup_logging(component: str, level: int = logging.INFO) -> None:
    """JSON lines on stderr for the 'gateway' loggers of this process (once)."""
    logger = logging.getLogger("gateway")
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_ComponentFilter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    _component[0] = component


_component = [""]


class _ComponentFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.component = _component[0]
        return True
