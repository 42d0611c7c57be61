"""Start and stop the gRPC server of one router replica (grpc.aio, on the replica's own event
loop, beside its HTTP app)."""
from __future__ import annotations

import logging

import grpc

from gateway.api.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from gateway.api.grpc.servicer import InferenceServicer
from gateway.dataplane import DataPlane

log = logging.getLogger("gateway.api.grpc")

# How long a stopping replica lets calls under way finish.
STOP_GRACE_S = 2.0


async def start_grpc_server(plane: DataPlane, host: str, port: int, max_message_bytes: int) -> grpc.aio.Server:
    """Listen on host:port. SO_REUSEPORT lets every router replica on a node bind the same
    port (the kernel spreads connections among them); messages are capped at the REST body
    limit, and a larger one is RESOURCE_EXHAUSTED."""
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(plane), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as err:
        raise RuntimeError(f"GATEWAY_GRPC_PORT={port}: cannot listen on {address}: {err}") from None
    await server.start()
    log.info("OIP gRPC listening on %s", address)
    return server


async def stop_grpc_server(server: grpc.aio.Server | None) -> None:
    if server is not None:
        await server.stop(STOP_GRACE_S)
