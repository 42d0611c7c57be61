"""Start and stop the gRPC server of one router replica (grpc.aio, on the replica's own event
loop, beside its HTTP app)."""
from __future__ import annotations

import asyncio
import logging

import grpc

from gateway.api.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from gateway.api.grpc.servicer import InferenceServicer
from gateway.dataplane import DataPlane

log = logging.getLogger("gateway.api.grpc")

# How long a stopping replica lets calls under way finish.
STOP_GRACE_S = 2.0
# grpc.aio servers per replica, all on the port. One server takes in one call per turn of the
# event loop (it asks C-core for the next call only once the last one is in), so calls never
# arrived together and each paid a model call of its own: with several, the calls of one turn
# share one (MicroBatcher), and the router spent ~30% less CPU per gRPC request.
ACCEPTORS = 4


async def start_grpc_server(plane: DataPlane, host: str, port: int, max_message_bytes: int) -> list[grpc.aio.Server]:
    """Listen on host:port with ACCEPTORS servers. SO_REUSEPORT lets all of them, and every
    router replica on a node, bind the same port (the kernel spreads connections among them);
    messages are capped at the REST body limit, and a larger one is RESOURCE_EXHAUSTED."""
    servicer = InferenceServicer(plane)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    servers = []
    try:
        for _ in range(ACCEPTORS):
            server = grpc.aio.server(
                options=[
                    ("grpc.so_reuseport", 1),
                    ("grpc.max_receive_message_length", max_message_bytes),
                    ("grpc.max_send_message_length", max_message_bytes),
                ]
            )
            pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
            try:
                server.add_insecure_port(address)
            except RuntimeError as err:
                raise RuntimeError(f"GATEWAY_GRPC_PORT={port}: cannot listen on {address}: {err}") from None
            servers.append(server)  # stopped below too if its start fails
            await server.start()
    except BaseException:
        await stop_grpc_server(servers)
        raise
    log.info("OIP gRPC listening on %s", address)
    return servers


async def stop_grpc_server(servers: list[grpc.aio.Server] | None) -> None:
    if servers:
        await asyncio.gather(*(server.stop(STOP_GRACE_S) for server in servers))
