"""The Ray Serve application: a router ingress whose replicas run the variants' models
(placement `router`) or call one deployment per variant (placement `deployment`), built from
the policy files. `build_app` is the import path for `serve run` / `serve deploy`."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from ray.serve import Application
from ray.serve.config import BackpressureConfig

from gateway.learning.bootstrap import as_dict, resolve_artifacts
from gateway.policy import PolicyError, load_policies
from gateway.learning.registry import ModelRegistry
from gateway.serving.challengers import ChallengerPool
from gateway.serving.retrainer import Retrainer
from gateway.serving.router import Router
from gateway.serving.variant import VariantModel
from gateway.settings import Settings, load_settings

APP_NAME = "gateway"


def deployment_name(experiment: str, variant: str) -> str:
    return f"{experiment}--{variant}"


def router_options(settings: Settings) -> dict[str, Any]:
    """What every router replica is started with, besides the policies and the deployments."""
    state_dir = settings.state_dir.resolve()
    return {
        "reward_secret": settings.reward_secret,
        "admin_token": settings.admin_token,
        "registry_root": str(ModelRegistry.in_state_dir(state_dir).root),
        "reward_secret_previous": settings.reward_secret_previous,
        "max_instances": settings.max_instances,
        "max_body_bytes": settings.max_body_bytes,
        # The OIP gRPC API: each router replica serves it on this port (None: off).
        "grpc_port": settings.grpc_port,
        "grpc_host": settings.http_host,
        "posterior_refresh_s": settings.posterior_refresh_s,
        # Where a router spools writes while Redis is unreachable (local disk, per replica); a
        # replica's own node may name another folder (router.node_spool_dir).
        "spool_dir": str((settings.spool_dir or state_dir / "spool").resolve()),
        # The value as it was set here, and where: this machine's workers inherit it, relative
        # or not, and it means the folder resolved here.
        "spool_dir_as_set": os.environ.get("GATEWAY_SPOOL_DIR"),
        "spool_dir_set_on": socket.gethostname(),
    }


def build_application(settings: Settings, redis_url: str) -> Application:
    policies = load_policies(settings.policy)
    state_dir = settings.state_dir.resolve()
    in_deployments = settings.variant_placement == "deployment"
    # Per variant: its deployment, or (placement `router`) its artifact for the router to load.
    variants: dict[str, dict[str, Any]] = {}
    artifacts: dict[str, dict[str, dict]] = {}
    for name, (policy, file) in policies.items():
        if policy.retrain.mlflow:
            from gateway.learning.mlflow_logging import check_ready

            if (problem := check_ready()) is not None:
                raise PolicyError(f"{file}: {problem}")
        refs = resolve_artifacts(policy, file, state_dir)
        artifacts[name] = {v: as_dict(ref) for v, ref in refs.items()}
        variants[name] = {
            v: VariantModel.options(name=deployment_name(name, v), max_queued_requests=settings.max_queued_requests).bind(
                as_dict(ref)
            )
            if in_deployments
            else as_dict(ref)
            for v, ref in refs.items()
        }
    policy_dicts = {name: p.model_dump(mode="json") for name, (p, _) in policies.items()}
    registry_root = str(ModelRegistry.in_state_dir(state_dir).root)
    pool = ChallengerPool.bind(registry_root) if in_deployments else None
    retrainer = Retrainer.bind(policy_dicts, artifacts, redis_url, registry_root)
    options = router_options(settings)
    # Overload: bounded queues everywhere, and a quick 503 + Retry-After beyond them.
    router = Router.options(
        num_replicas=settings.router_replicas,
        max_ongoing_requests=settings.max_ongoing_requests,
        max_queued_requests=settings.max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=1),
    )
    return router.bind(policy_dicts, variants, redis_url, options, pool, retrainer)


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for Ray Serve config files: `args` holds Settings fields (policy,
    state_dir, redis_url, ...); the environment's GATEWAY_* values fill the rest."""
    settings = load_settings(**{k: v for k, v in (args or {}).items()})
    redis_url = settings.redis_url
    if redis_url is None:
        from gateway.serving.redis_actor import embedded_redis_url

        redis_url = embedded_redis_url(str(Path(settings.state_dir).resolve()), settings.appendfsync)
    return build_application(settings, redis_url)
