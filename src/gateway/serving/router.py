"""The ingress deployment: the HTTP API in front of the variants."""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from gateway.api.app import create_app
from gateway.api.grpc.server import start_grpc_server, stop_grpc_server
from gateway.api.http import DEFAULT_MAX_BODY_BYTES
from gateway.dataplane import DataPlane, VariantClient
from gateway.learning.registry import ModelRegistry
from gateway.errors import Unavailable
from gateway.serving.drain import DRAIN_POLL_S
from gateway.serving.challengers import ChallengerClient, load_registered
from gateway.serving.variant import InProcessVariant, LoadedVariant
from gateway.policy import Policy
from gateway.store.experiments import ExperimentStore
from gateway.store.spool import Spool
from gateway.telemetry.metrics import setup_metrics, shutdown_metrics
from gateway.telemetry.logs import QUIET, setup_logging
from gateway.settings import spool_folder
from gateway.telemetry.tracing import setup_tracing, shutdown_tracing
from gateway.dataplane.tokens import RewardTokens

log = logging.getLogger("gateway.router")


class HandleClient:
    """A variant reached through its Ray Serve DeploymentHandle."""

    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    async def predict(self, matrix: np.ndarray, carrier: dict[str, str]) -> dict[str, Any]:
        try:
            return await self.handle.predict.remote(matrix, carrier)
        except BackPressureError:
            raise Unavailable("the variant is at capacity (max_queued_requests); retry shortly", code="overloaded") from None


def variant_client(where: DeploymentHandle | dict) -> VariantClient:
    """A variant's own deployment, or (placement `router`) its artifact, loaded here."""
    if isinstance(where, DeploymentHandle):
        return HandleClient(where)
    return InProcessVariant(functools.partial(LoadedVariant, where))


def node_spool_dir(options: dict[str, Any]) -> Path | None:
    """The spool folder of the node this replica runs on: GATEWAY_SPOOL_DIR in the node's own
    environment (`ray start` passes its environment to the node's workers), an absolute path,
    else the one the application was built with (also for the value this machine's workers
    inherited from where it was built, resolved there). The spool must stay on the node: a
    replica started there later adopts what a stopped one left, and SQLite with flock is not for
    network shares."""
    where = os.environ.get("GATEWAY_SPOOL_DIR")
    inherited = where == options.get("spool_dir_as_set") and socket.gethostname() == options.get("spool_dir_set_on")
    if not where or inherited:
        # Unset here, or the value the application was built with (inherited by this machine's
        # workers): the folder as resolved where it was set.
        return Path(options["spool_dir"]) if options.get("spool_dir") else None
    try:
        if not Path(where.strip()).expanduser().is_absolute():
            # A worker's working folder is Ray's, not the one `ray start` ran in.
            raise ValueError("give an absolute path; a relative one would be relative to Ray's worker folder")
        return spool_folder(where)
    except ValueError as err:
        raise ValueError(f"GATEWAY_SPOOL_DIR={where!r} on this node: {err}") from None


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200, logging_config=QUIET,
                  graceful_shutdown_wait_loop_s=DRAIN_POLL_S)
@serve.ingress()
class Router:
    async def __init__(
        self,
        policies: dict[str, dict],
        variants: dict[str, dict[str, DeploymentHandle | dict]],
        redis_url: str,
        options: dict[str, Any],
        challengers: DeploymentHandle | None,
        retrainer: DeploymentHandle,
    ):
        setup_tracing("router")
        setup_logging("router")
        setup_metrics()
        self.admin_token = options.get("admin_token")
        self.registry_root = options.get("registry_root")
        self.max_body_bytes = options.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        self.store = ExperimentStore.from_url(redis_url)
        keys = [options.get("reward_secret") or await self.store.reward_secret(), options.get("reward_secret_previous")]
        clients = {e: {v: variant_client(h) for v, h in hs.items()} for e, hs in variants.items()}
        # Models that run here load now: a bad artifact fails the start, not the first request.
        await asyncio.gather(*(c.loaded() for hs in clients.values() for c in hs.values() if isinstance(c, InProcessVariant)))
        if challengers is not None:
            def challenger(e: str, name: str, sha: str) -> VariantClient:
                return ChallengerClient(challengers, e, name, sha)
        else:
            registry = ModelRegistry(Path(options["registry_root"]))

            def challenger(e: str, name: str, sha: str) -> VariantClient:
                return InProcessVariant(functools.partial(load_registered, registry, e, name, sha))
        self.plane = DataPlane(
            {name: Policy.model_validate(p) for name, p in policies.items()},
            self.store,
            clients,
            RewardTokens(*[k for k in keys if k]),
            max_instances=options.get("max_instances", 1000),
            refresh_s=options.get("posterior_refresh_s", 0.1),
            challenger_client=challenger,
            retrainer=lambda e, trigger: retrainer.retrain.remote(e, trigger),
            spool=Spool(spool_dir) if (spool_dir := node_spool_dir(options)) else None,
        )
        # The OIP gRPC API on this replica's event loop, beside the HTTP app, on the same plane.
        self.grpc_servers = None
        if options.get("grpc_port"):
            self.grpc_servers = await start_grpc_server(
                self.plane, options.get("grpc_host") or "127.0.0.1", options["grpc_port"], self.max_body_bytes
            )

    def __serve_build_asgi_app__(self):
        return create_app(self.plane, admin_token=self.admin_token, max_body_bytes=self.max_body_bytes,
                          registry_root=self.registry_root)

    async def __del__(self):
        await stop_grpc_server(getattr(self, "grpc_servers", None))
        await self.store.close()
        # Flushing waits on the exporter process: not on the event loop that still answers.
        await asyncio.to_thread(shutdown_tracing)
        shutdown_metrics()
