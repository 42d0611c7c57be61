"""The HTTP API: every route in one place, one error format, one span per request."""
from __future__ import annotations

import contextlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.dataplane import DataPlane, new_request_id
from gateway.api.dashboard import dashboard_routes
from gateway.api.http import DEFAULT_MAX_BODY_BYTES, error_response, read_json
from gateway.api.oip import oip_routes
from gateway.api.openapi import openapi_routes
from gateway.dataplane.control import Control
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import BadRequest, Forbidden, GatewayError, Unauthorized, Unavailable
from gateway.schemas import AddVariantRequest, AdminRequest, PredictRequest, PromoteRequest, parse_feedback
from gateway.telemetry.metrics import prometheus_text
from gateway.telemetry.tracing import incoming_context, tracer

log = logging.getLogger("gateway.api")

Handler = Callable[[Request, str], Awaitable[tuple[int, Any]]]

# Latest 'since' accepted by the series route (year 33658): keeps stream ids in range.
MAX_UNIX_S = 1e12


def traced(template: str, handler: Handler, plane: DataPlane | None = None) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: a server span named by the route template (HTTP semantic
    conventions), the request id header on every answer, and errors as JSON."""

    async def endpoint(request: Request) -> Response:
        # Behind Ray Serve the proxy has put an x-request-id on the request (the client's own or
        # a fresh one) and adds it to the response itself; only outside Serve do we add it.
        incoming = request.headers.get("x-request-id")
        request_id = incoming or new_request_id()
        ctx = incoming_context(request.headers)
        name = f"{request.method} {template}"
        started = time.perf_counter()
        with tracer().start_as_current_span(name, context=ctx, kind=SpanKind.SERVER) as span:
            span.set_attributes(
                {
                    "http.request.method": request.method,
                    "http.route": template,
                    "url.path": request.url.path,
                    "gateway.request_id": request_id,
                }
            )
            error_code = None
            try:
                status, payload = await handler(request, request_id)
                response: Response = JSONResponse(payload, status_code=status)
                if status >= 400:  # a protocol handler (OIP) that formats its own errors
                    error_code = f"http_{status}"
            except GatewayError as err:
                response = error_response(err)
                error_code = err.code
            except (RedisConnectionError, RedisTimeoutError) as err:
                # The store is unreachable (the client already retried once): a transient 503.
                log.error("state store error on %s: %s", name, type(err).__name__)
                response = error_response(Unavailable("the state store is unreachable; retry shortly", code="store_unavailable"))
                error_code = "store_unavailable"
            except Exception:
                log.exception("unhandled error on %s", name)
                response = error_response(GatewayError("internal error; it has been logged"))
                error_code = "internal"
            if error_code is not None:
                span.set_attribute("gateway.error_code", error_code)
            span.set_attribute("http.response.status_code", response.status_code)
            if plane is not None:
                labels = {"http.route": template, "http.request.method": request.method,
                          "http.response.status_code": response.status_code}
                plane.metrics.http_duration.record(time.perf_counter() - started, labels)
                if error_code is not None:
                    plane.metrics.errors.add(1, {"http.route": template, "code": error_code})
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
            if incoming is None:
                response.headers["x-request-id"] = request_id
            return response

    return endpoint


def check_admin(request: Request, admin_token: str | None) -> None:
    """401 without credentials (or with the admin API switched off), 403 with wrong ones."""
    if not admin_token:
        raise Unauthorized("the admin API is disabled: set GATEWAY_ADMIN_TOKEN", code="admin_disabled")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("send 'Authorization: Bearer <admin token>'", code="unauthorized")
    if not hmac.compare_digest(given.encode(), admin_token.encode()):
        raise Forbidden("the admin token is wrong", code="forbidden")


def create_app(
    plane: DataPlane,
    *,
    admin_token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    registry_root: str | None = None,
) -> Starlette:
    """The ASGI app; its lifespan starts and stops the data plane (Ray Serve runs it too)."""
    control = Control(plane, registry_root)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await plane.start()
        try:
            yield
        finally:
            await plane.stop()

    # Each handler parses its body into the request's model (gateway.schemas), whose refusals are
    # the contract's errors, and hands the typed request to the data plane. What the contract
    # judges before a body (an unknown experiment, a bad request id) is judged first, as before.

    async def predict(request: Request, request_id: str) -> tuple[int, Any]:
        body = await read_json(request, max_body_bytes)
        experiment = request.path_params["experiment"]
        plane.admit(experiment, request_id)
        return 200, await plane.predict(experiment, PredictRequest.parse(body), request_id)

    async def rewards(request: Request, request_id: str) -> tuple[int, Any]:
        # A batch is parsed down to its list: each item is judged alone, and a bad one does not
        # fail the others (its token is verified before its reward or label is judged).
        return await plane.rewards(parse_feedback(await read_json(request, max_body_bytes)))

    async def list_experiments(request: Request, request_id: str) -> tuple[int, Any]:
        return 200, {"experiments": await plane.states()}

    async def get_experiment(request: Request, request_id: str) -> tuple[int, Any]:
        return 200, await plane.state(request.path_params["experiment"])

    async def get_series(request: Request, request_id: str) -> tuple[int, Any]:
        since = request.query_params.get("since")
        try:
            since_t = float(since) if since is not None else None
        except ValueError:
            since_t = float("nan")
        # Stream ids are milliseconds since the epoch: refuse what cannot be one.
        if since_t is not None and not (math.isfinite(since_t) and 0 <= since_t <= MAX_UNIX_S):
            raise BadRequest(f"since: a unix time in seconds, from 0 to {MAX_UNIX_S:g}", code="invalid_since")
        return 200, await plane.series(request.path_params["experiment"], since_t)

    async def healthz(request: Request, request_id: str) -> tuple[int, Any]:
        # Serving goes on while the state store is away (cached weights, spooled writes): still
        # 200, with the status saying so.
        return 200, {**plane.readiness(), "experiments": plane.experiment_names()}

    def admin(action: Callable[..., Awaitable[Any]]) -> Handler:
        """An operator route: checked credentials, an optional JSON body, path params as args."""

        async def handler(request: Request, request_id: str) -> tuple[int, Any]:
            check_admin(request, admin_token)
            body = await read_json(request, max_body_bytes, allow_empty=True)
            return 200, await action(body, **request.path_params)

        return handler

    async def do_promote(body: Any, experiment: str) -> Any:
        return await control.promote(experiment, PromoteRequest.parse(body))

    async def do_rollback(body: Any, experiment: str) -> Any:
        return await control.rollback(experiment, AdminRequest.parse(body))

    async def do_pause(body: Any, experiment: str) -> Any:
        return await control.pause(experiment, AdminRequest.parse(body))

    async def do_resume(body: Any, experiment: str) -> Any:
        return await control.resume(experiment, AdminRequest.parse(body))

    async def do_add_variant(body: Any, experiment: str) -> Any:
        control.can_add_variants(experiment)
        return await control.add_variant(experiment, AddVariantRequest.parse(body))

    async def do_retrain(body: Any, experiment: str) -> Any:
        return await plane.retrain_now(experiment)

    async def do_retire(body: Any, experiment: str, variant: str) -> Any:
        return await control.retire(experiment, variant, AdminRequest.parse(body))

    async def do_shadow(body: Any, experiment: str, variant: str) -> Any:
        return await control.set_role(experiment, variant, "shadow", AdminRequest.parse(body))

    async def do_live(body: Any, experiment: str, variant: str) -> Any:
        return await control.set_role(experiment, variant, "live", AdminRequest.parse(body))

    async def get_off_policy(request: Request, request_id: str) -> tuple[int, Any]:
        return 200, await plane.off_policy(request.path_params["experiment"], request.query_params.get("target"))

    routes = [
        ("/v1/experiments/{experiment}/predict", predict, ["POST"]),
        ("/v1/rewards", rewards, ["POST"]),
        ("/reward", rewards, ["POST"]),
        ("/v1/experiments", list_experiments, ["GET"]),
        ("/v1/experiments/{experiment}", get_experiment, ["GET"]),
        ("/v1/experiments/{experiment}/series", get_series, ["GET"]),
        ("/v1/experiments/{experiment}/ope", get_off_policy, ["GET"]),
        ("/healthz", healthz, ["GET"]),
        ("/v1/experiments/{experiment}/promote", admin(do_promote), ["POST"]),
        ("/v1/experiments/{experiment}/rollback", admin(do_rollback), ["POST"]),
        ("/v1/experiments/{experiment}/pause", admin(do_pause), ["POST"]),
        ("/v1/experiments/{experiment}/resume", admin(do_resume), ["POST"]),
        ("/v1/experiments/{experiment}/variants/{variant}", admin(do_retire), ["DELETE"]),
        ("/v1/experiments/{experiment}/retrain", admin(do_retrain), ["POST"]),
        ("/v1/experiments/{experiment}/variants", admin(do_add_variant), ["POST"]),
        ("/v1/experiments/{experiment}/variants/{variant}/shadow", admin(do_shadow), ["POST"]),
        ("/v1/experiments/{experiment}/variants/{variant}/live", admin(do_live), ["POST"]),
        *oip_routes(plane, max_body_bytes),
    ]

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = prometheus_text()
        return Response(body, media_type=content_type)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "route_not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(GatewayError(str(exc.detail), code=code, status=exc.status_code))
        for name, value in (exc.headers or {}).items():  # e.g. Allow on a 405
            response.headers[name] = value
        if "x-request-id" not in request.headers:
            response.headers["x-request-id"] = new_request_id()
        return response

    return Starlette(
        routes=[
            *(Route(path, traced(path, fn, plane), methods=methods) for path, fn, methods in routes),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *dashboard_routes(),
            *openapi_routes(plane.experiment_names),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
