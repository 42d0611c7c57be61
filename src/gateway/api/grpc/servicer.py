"""The protocol's gRPC service (inference.GRPCInferenceService) on top of the data plane.

Each call does what the REST V2 route of the same name does (oip_ops): ModelInfer with an empty
`model_version` is routed by the bandit, with one it goes to that variant. Each call is one
server span that continues the caller's `traceparent` (gRPC metadata), and errors are the
gateway's own, answered as gRPC status codes with REST's messages. The request id is the
caller's `x-request-id` metadata or a new one, and goes back as trailing metadata."""
from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry.trace import SpanKind, Status, StatusCode
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.api import oip_ops
from gateway.api.grpc import grpc_predict_v2_pb2 as pb
from gateway.api.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from gateway.api.grpc.convert import model_metadata_message, request_body, response_message, server_metadata_message
from gateway.api.grpc.status import SERVER_FAULTS, status_of
from gateway.api.oip_responses import model_metadata, server_metadata
from gateway.dataplane import DataPlane, new_request_id
from gateway.errors import GatewayError
from gateway.telemetry.tracing import incoming_context, tracer

log = logging.getLogger("gateway.api.grpc")

SERVICE = "inference.GRPCInferenceService"

Call = Callable[[Any, Any, grpc.aio.ServicerContext, str], Awaitable[Any]]


def rpc(method: str) -> Callable[[Call], Callable[..., Awaitable[Any]]]:
    """Wrap one call: its server span (OpenTelemetry's RPC conventions), the request id, and
    errors as status codes. The abort happens outside the `try`, since grpc.aio aborts by
    raising."""

    def wrap(call: Call) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(call)
        async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            request_id = metadata.get("x-request-id") or new_request_id()
            context.set_trailing_metadata((("x-request-id", request_id),))
            with tracer().start_as_current_span(
                f"{SERVICE}/{method}", context=incoming_context(metadata), kind=SpanKind.SERVER
            ) as span:
                span.set_attributes(
                    {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method, "gateway.request_id": request_id}
                )
                answer = None
                try:
                    answer = await call(self, request, context, request_id)
                    code, message, error_code = grpc.StatusCode.OK, "", None
                except GatewayError as err:
                    code, message, error_code = status_of(err), err.message, err.code
                except (RedisConnectionError, RedisTimeoutError) as err:
                    log.error("state store error on %s: %s", method, type(err).__name__)
                    code, message = grpc.StatusCode.UNAVAILABLE, "the state store is unreachable; retry shortly"
                    error_code = "store_unavailable"
                except Exception:
                    log.exception("unhandled error on %s", method)
                    code, message, error_code = grpc.StatusCode.INTERNAL, "internal error; it has been logged", "internal"
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if error_code is not None:
                    span.set_attribute("gateway.error_code", error_code)
                if code in SERVER_FAULTS:
                    span.set_status(Status(StatusCode.ERROR))
            if code is not grpc.StatusCode.OK:
                await context.abort(code, message)
            return answer

        return handler

    return wrap


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane):
        self.plane = plane

    @rpc("ServerLive")
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any, request_id: str) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc("ServerReady")
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any, request_id: str) -> pb.ServerReadyResponse:
        # The protocol answers readiness as a boolean, where REST answers 503.
        return pb.ServerReadyResponse(ready=not oip_ops.waiting_models(self.plane))

    @rpc("ModelReady")
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any, request_id: str) -> pb.ModelReadyResponse:
        rt = oip_ops.model_runtime(self.plane, request.name)
        if request.version:
            oip_ops.model_version(rt, request.version)
        return pb.ModelReadyResponse(ready=rt.allocation is not None)

    @rpc("ServerMetadata")
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any, request_id: str) -> pb.ServerMetadataResponse:
        return server_metadata_message(server_metadata())

    @rpc("ModelMetadata")
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any, request_id: str) -> pb.ModelMetadataResponse:
        rt = oip_ops.model_runtime(self.plane, request.name)
        version = oip_ops.model_version(rt, request.version) if request.version else None
        return model_metadata_message(model_metadata(rt.policy, list(rt.variants), version=version))

    @rpc("ModelInfer")
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any, request_id: str) -> pb.ModelInferResponse:
        # An unknown model or version is judged before the tensors, as over REST.
        rt = oip_ops.model_runtime(self.plane, request.model_name)
        variant = oip_ops.model_version(rt, request.model_version) if request.model_version else None
        body, binary = request_body(request)
        answer = await oip_ops.infer(self.plane, request.model_name, body, binary, request_id, variant=variant)
        return response_message(answer)
