"""Start and stop the whole system on this machine: Redis (embedded unless GATEWAY_REDIS_URL),
Ray, Serve and the gateway application."""
from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from gateway.serving.ports import refuse_ports_in_use
from gateway.settings import Settings
from gateway.store.embedded import EmbeddedRedis, private_dir
from gateway.telemetry import metrics_export
from gateway.telemetry.tracing import validate_environment

log = logging.getLogger("gateway.runtime")


@dataclass
class LocalGateway:
    settings: Settings
    log_to_driver: bool = True
    redis: EmbeddedRedis | None = field(default=None, init=False)
    redis_url: str | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def start(self) -> LocalGateway:
        validate_environment()
        metrics_export.validate_environment()
        private_dir(self.settings.state_dir)
        # The routers' spool (serving/app.py), made here so one an older version left wider is fixed.
        private_dir(self.settings.spool_dir or self.settings.state_dir / "spool")
        if not self.settings.ray_address:
            from gateway.serving.ingress import stop_haproxy

            # A HAProxy left by this state dir's gateway when it was killed still holds its port:
            # not "another process". Only orphans here: a live HAProxy on the port is another
            # gateway's, and the check below refuses to start beside it.
            stop_haproxy(self.settings.state_dir.resolve(), orphans_only=True)
            # Before anything starts, so a refusal leaves nothing to stop (stop() would also stop
            # the HAProxy of the state dir). On a cluster the listeners are on its nodes, not here.
            refuse_ports_in_use(self.settings.http_host, {"HTTP": self.settings.http_port,
                                                          "gRPC (GATEWAY_GRPC_PORT)": self.settings.grpc_port})
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if not self.settings.ray_address:
            from gateway.serving.ingress import apply_serve_environment, stop_haproxy

            stop_haproxy(self.settings.state_dir.resolve())  # left by a gateway that was killed
            own_ports = [p for p in (self.settings.http_port, self.settings.grpc_port) if p]
            apply_serve_environment(
                self.settings.ingress, self.settings.http_host, self.settings.state_dir.resolve(), own_ports
            )
        import ray
        from ray import serve

        # On this (main) thread: redis-server gets PR_SET_PDEATHSIG, so it dies with the thread
        # that started it, not only with this process.
        if self.settings.redis_url:
            self.redis_url = self.settings.redis_url
        else:
            self.redis = EmbeddedRedis(self.settings.state_dir, self.settings.appendfsync).start()
            self.redis_url = self.redis.url
        # Importing the application's modules (the router's chain: scipy, scikit-learn, FastAPI...)
        # costs seconds of Python; it overlaps Ray's start, which mostly waits for its processes.
        # Only the import: building the app may train missing models, which on a loaded machine
        # could starve Ray's own processes past its start-up timeout.
        with ThreadPoolExecutor(1, thread_name_prefix="gateway-import") as pool:
            imported = pool.submit(importlib.import_module, "gateway.serving.app")
            try:
                self._init_ray(ray)
            finally:
                wait([imported])  # never leave the import running behind a failed start
            if imported.exception() is not None:
                # An import racing another thread's can fail on a partly made module: once more
                # here, where a real error raises as it would have without the thread.
                importlib.import_module("gateway.serving.app")
        from gateway.serving.app import APP_NAME, build_application

        serve.start(http_options={"host": self.settings.http_host, "port": self.settings.http_port})
        app = build_application(self.settings, self.redis_url)
        serve.run_many([serve.RunTarget(app, name=APP_NAME, route_prefix="/")],
                       wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
        _wait_until_running(APP_NAME)

    def _init_ray(self, ray: Any) -> None:
        if ray.is_initialized():
            return
        saved = _signal_handlers()
        ray.init(
            address=self.settings.ray_address or "local",
            include_dashboard=False,
            # Ray's own ports stay on loopback unless a cluster address is given.
            _node_ip_address=None if self.settings.ray_address else "127.0.0.1",
            log_to_driver=self.log_to_driver,
            logging_level=logging.WARNING,
            configure_logging=True,
        )
        # Ray's core replaces SIGTERM/SIGINT with handlers that abort the process; the
        # caller's own handlers must keep deciding how this process stops.
        _restore_signal_handlers(saved)

    def stop(self) -> None:
        try:
            import ray
            from ray import serve

            if ray.is_initialized():
                try:
                    serve.shutdown()
                finally:
                    ray.shutdown()
        finally:
            if not self.settings.ray_address:
                from gateway.serving.ingress import stop_haproxy

                stop_haproxy(self.settings.state_dir.resolve())
            if self.redis is not None:
                self.redis.stop()
                self.redis = None

    def __enter__(self) -> LocalGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How often the start checks whether the application is up: Serve's own wait (serve.run) looks
# once a second, so "gateway serving" came up to a second after the gateway already answered.
# Not much more often: each serve.status() builds Serve's whole status in the controller and
# this process (at 0.2 s the driver spent ~0.5 s more CPU per start, on 2 busy cores).
READY_POLL_S = 0.25


def _wait_until_running(name: str) -> None:
    """Until Serve reports the application RUNNING; its failure raises as serve.run's would."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    while True:
        app = serve.status().applications.get(name)
        if app is None:
            raise RuntimeError(f"Waiting for application {name} to be RUNNING, but application doesn't exist.")
        if app.status == ApplicationStatus.RUNNING:
            return
        if app.status == ApplicationStatus.DEPLOY_FAILED:
            raise RuntimeError(f"Deploying application {name} failed: {app.message}")
        time.sleep(READY_POLL_S)


def _signal_handlers() -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}


def _restore_signal_handlers(saved: dict) -> None:
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)


def quiet_ray_environment() -> None:
    """Ray's usage-stats prompt and banner have no place in a CLI run."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
