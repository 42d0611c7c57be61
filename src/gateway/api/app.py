"""The HTTP API: every route in one place, one error format, one span per request."""
from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.dataplane import DataPlane, new_request_id
from gateway.control import Control, reason_of
from gateway.errors import BadRequest, Forbidden, GatewayError, PayloadTooLarge, Unauthorized, Unprocessable
from gateway.telemetry.tracing import incoming_context, tracer

log = logging.getLogger("gateway.api")

DEFAULT_MAX_BODY_BYTES = 1 << 20

Handler = Callable[[Request, str], Awaitable[tuple[int, Any]]]


def error_response(err: GatewayError) -> JSONResponse:
    return JSONResponse(err.to_body(), status_code=err.status)


async def read_json(request: Request, max_bytes: int, *, allow_empty: bool = False) -> Any:
    """The body as JSON, refusing an oversized one before it is all read (chunked too)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw and allow_empty:
        return None
    if not raw:
        raise BadRequest("the body is empty; send a JSON object", code="invalid_json")
    try:
        # The stdlib parser accepts NaN and Infinity, so that a non-finite reward is answered
        # 422 by validation rather than 400 by the parser.
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"the body is not valid JSON: {err}", code="invalid_json") from None


def traced(template: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: a server span named by the route template (HTTP semantic
    conventions), the request id header on every answer, and errors as JSON."""

    async def endpoint(request: Request) -> Response:
        # Behind Ray Serve the proxy has put an x-request-id on the request (the client's own or
        # a fresh one) and adds it to the response itself; only outside Serve do we add it.
        incoming = request.headers.get("x-request-id")
        request_id = incoming or new_request_id()
        ctx = incoming_context(request.headers)
        name = f"{request.method} {template}"
        with tracer().start_as_current_span(name, context=ctx, kind=SpanKind.SERVER) as span:
            span.set_attributes(
                {
                    "http.request.method": request.method,
                    "http.route": template,
                    "url.path": request.url.path,
                    "gateway.request_id": request_id,
                }
            )
            try:
                status, payload = await handler(request, request_id)
                response: Response = JSONResponse(payload, status_code=status)
            except GatewayError as err:
                response = error_response(err)
                span.set_attribute("gateway.error_code", err.code)
            except Exception:
                log.exception("unhandled error on %s", name)
                response = error_response(GatewayError("internal error; it has been logged"))
            span.set_attribute("http.response.status_code", response.status_code)
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
    plane: DataPlane, *, admin_token: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> Starlette:
    """The ASGI app; its lifespan starts and stops the data plane (Ray Serve runs it too)."""
    control = Control(plane)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await plane.start()
        try:
            yield
        finally:
            await plane.stop()

    async def predict(request: Request, request_id: str) -> tuple[int, Any]:
        body = await read_json(request, max_body_bytes)
        return 200, await plane.predict(request.path_params["experiment"], body, request_id)

    async def rewards(request: Request, request_id: str) -> tuple[int, Any]:
        return await plane.rewards(await read_json(request, max_body_bytes))

    async def list_experiments(request: Request, request_id: str) -> tuple[int, Any]:
        return 200, {"experiments": await plane.states()}

    async def get_experiment(request: Request, request_id: str) -> tuple[int, Any]:
        return 200, await plane.state(request.path_params["experiment"])

    async def healthz(request: Request, request_id: str) -> tuple[int, Any]:
        return 200, {"status": "ok", "experiments": plane.experiment_names()}

    def admin(action: Callable[..., Awaitable[Any]]) -> Handler:
        """An operator route: checked credentials, an optional JSON body, path params as args."""

        async def handler(request: Request, request_id: str) -> tuple[int, Any]:
            check_admin(request, admin_token)
            body = await read_json(request, max_body_bytes, allow_empty=True)
            return 200, await action(body, **request.path_params)

        return handler

    async def do_promote(body: Any, experiment: str) -> Any:
        variant = body.get("variant") if isinstance(body, dict) else None
        if variant is None:
            raise Unprocessable("variant: this field is required", code="invalid_variant")
        return await control.promote(experiment, variant, reason_of(body))

    async def do_rollback(body: Any, experiment: str) -> Any:
        return await control.rollback(experiment, reason_of(body))

    async def do_pause(body: Any, experiment: str) -> Any:
        return await control.pause(experiment, reason_of(body))

    async def do_resume(body: Any, experiment: str) -> Any:
        return await control.resume(experiment, reason_of(body))

    async def do_retire(body: Any, experiment: str, variant: str) -> Any:
        return await control.retire(experiment, variant, reason_of(body))

    routes = [
        ("/v1/experiments/{experiment}/predict", predict, ["POST"]),
        ("/v1/rewards", rewards, ["POST"]),
        ("/reward", rewards, ["POST"]),
        ("/v1/experiments", list_experiments, ["GET"]),
        ("/v1/experiments/{experiment}", get_experiment, ["GET"]),
        ("/healthz", healthz, ["GET"]),
        ("/v1/experiments/{experiment}/promote", admin(do_promote), ["POST"]),
        ("/v1/experiments/{experiment}/rollback", admin(do_rollback), ["POST"]),
        ("/v1/experiments/{experiment}/pause", admin(do_pause), ["POST"]),
        ("/v1/experiments/{experiment}/resume", admin(do_resume), ["POST"]),
        ("/v1/experiments/{experiment}/variants/{variant}", admin(do_retire), ["DELETE"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "route_not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(GatewayError(str(exc.detail), code=code, status=exc.status_code))
        if "x-request-id" not in request.headers:
            response.headers["x-request-id"] = new_request_id()
        return response

    return Starlette(
        routes=[Route(path, traced(path, fn), methods=methods) for path, fn, methods in routes],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
