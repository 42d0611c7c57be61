"""Settings from the environment (prefix GATEWAY_), each defined once with why it exists."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """A bad GATEWAY_* value; the message names the variable and the value."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="Redis server to keep state in (redis://, rediss://, unix://), or a Redis Cluster with "
        "redis+cluster://host:port (rediss+cluster:// for TLS; any one node, the rest are discovered). Add "
        "?wait_replicas=N (and wait_ms=T, default 100) to count a write as taken only once N replicas of its master "
        "(or all it has) confirmed it, else it is spooled and replayed. Unset: start the embedded redis-server under "
        "state_dir.",
    )
    policy: Path = Field(default=Path("policies"), description="A policy file, or a folder of them.")
    state_dir: Path = Field(
        default=Path(".gateway"), description="Embedded Redis data (AOF), the model registry and logs."
    )
    spool_dir: Path | None = Field(
        default=None,
        description="Where router replicas spool writes while Redis is unreachable: a folder on the node's own "
        "disk (SQLite with flock: not a network share). A replica reads it from its own node's environment first, "
        "so each node of a cluster may set its own; a replica that starts on a node adopts the spools that "
        "replicas which stopped there left. Unset: STATE_DIR/spool.",
    )
    appendfsync: Literal["always", "everysec", "no"] = Field(
        default="everysec",
        description="When the embedded Redis fsyncs its append-only file: always (every write; a power loss "
        "loses nothing acknowledged, slowest), everysec (a power loss or kernel crash can lose the last second; a "
        "crash of redis-server alone loses nothing), no (the OS decides, typically up to 30 s).",
    )
    verbose: bool = Field(
        default=False,
        description="Show Ray's own log lines on the terminal of `gateway serve` and `gateway demo`; otherwise "
        "they go to STATE_DIR/logs/gateway.log.",
    )
    http_host: str = Field(
        default="127.0.0.1", description="Address the HTTP proxy binds to (and the gRPC API, when grpc_port is set)."
    )
    http_port: int = Field(default=8000, ge=1, le=65535, description="Port of the HTTP API.")
    grpc_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of the Open Inference Protocol's gRPC API (KServe V2, as Triton and MLServer serve it; "
        "8001 is their usual port). Unset: no gRPC. Each router replica listens on it itself (SO_REUSEPORT: "
        "replicas on one node share the port, the kernel spreads connections among them).",
    )
    admin_token: str | None = Field(
        default=None,
        description="Bearer token for the admin routes, 16+ characters (a short one is guessable); unset "
        "disables them (401).",
        min_length=16,
    )
    reward_secret: str | None = Field(
        default=None,
        description="HMAC key for reward tokens. Unset: a random key is made once and kept in Redis.",
        min_length=16,
    )
    reward_secret_previous: str | None = Field(
        default=None,
        description="The key before a rotation; tokens signed with it are still accepted.",
        min_length=16,
    )
    posterior_refresh_s: float = Field(
        default=0.1, gt=0, le=60, description="How stale the router's cached posteriors may get."
    )
    max_instances: int = Field(default=1000, ge=1, description="Most rows one predict request may carry.")
    max_body_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        le=1 << 30,
        description="Largest request body in bytes, on every route that reads one (predict, rewards, Open "
        "Inference Protocol infer with its binary tensor data, admin). A larger body is answered 413 "
        "(payload_too_large) before it is read in full, whether it declares Content-Length or is chunked.",
    )
    max_ongoing_requests: int = Field(
        default=200, ge=1, description="Requests one router replica works on at once; more wait in the queue."
    )
    max_queued_requests: int = Field(
        default=1000,
        ge=1,
        description="Requests waiting for a router replica (and, per router, for a variant); beyond it the "
        "gateway answers 503 with Retry-After at once instead of queueing without bound.",
    )
    ingress: Literal["fast", "proxy"] = Field(
        default="fast",
        description="How HTTP reaches the router when the gateway starts its own Ray: fast (Ray Serve's "
        "throughput-optimised mode: HAProxy on the port, forwarding to the router replicas' own HTTP servers) or "
        "proxy (Serve's Python HTTP proxy; slower).",
    )
    router_replicas: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Router replicas. One replica is one Python event loop, about one core at full load; with "
        "placement router each replica also holds every model.",
    )
    variant_placement: Literal["router", "deployment"] = Field(
        default="router",
        description="Where the variants' models run: router (each router replica loads them and predicts in "
        "process: no hop, fastest for scikit-learn and XGBoost models) or deployment (one Ray Serve deployment "
        "per variant, plus a pool for retrained challengers: isolation and separate scaling for heavy models).",
    )
    ray_address: str | None = Field(
        default=None, description="Join this Ray cluster instead of starting a local one."
    )

    @field_validator("spool_dir", mode="before")
    @classmethod
    def _spool_dir_is_a_folder(cls, value: object) -> object:
        return spool_folder(value) if value is not None else None

    @field_validator("grpc_port")
    @classmethod
    def _grpc_port_is_not_the_http_port(cls, port: int | None, info: ValidationInfo) -> int | None:
        # http_port is declared first, so it is already in info.data (unless it was invalid).
        if port is not None and port == info.data.get("http_port"):
            raise ValueError("it is also the HTTP port (GATEWAY_HTTP_PORT); give gRPC a port of its own")
        return port


def spool_folder(value: object) -> Path:
    """GATEWAY_SPOOL_DIR as an absolute folder: not blank, and not something that is not a
    folder. Also what a replica checks its own node's value with."""
    text = str(value).strip()
    if not text:
        raise ValueError("it is blank; name a folder on the node's own disk, or unset it for STATE_DIR/spool")
    path = Path(text).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a folder")
    return path


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with explicit overrides (CLI flags) on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"])
            value = e.get("input")
            shown = "<hidden>" if "secret" in field or "token" in field else repr(value)
            problems.append(f"GATEWAY_{field.upper()}={shown}: {e['msg']}")
        raise SettingsError("; ".join(problems)) from None
