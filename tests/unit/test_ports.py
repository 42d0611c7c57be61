"""The start-up check of the gateway's own ports: a listener of another process counts, the
TIME_WAIT sockets an earlier run's connections left behind do not (a restart must not fail)."""
from __future__ import annotations

import socket

import pytest

from gateway.serving.ports import PortInUse, free_port, listened_on, refuse_ports_in_use


def test_a_listener_is_found_even_one_that_shares_its_port_by_so_reuseport():
    port = free_port()
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("0.0.0.0", port))
        other.listen()
        assert listened_on(port, "127.0.0.1")
        with pytest.raises(PortInUse, match=f"gRPC port {port} on 127.0.0.1 is already in use"):
            refuse_ports_in_use("127.0.0.1", {"HTTP": free_port(), "gRPC": port})
    assert not listened_on(port, "127.0.0.1")


def test_connections_left_in_time_wait_by_an_earlier_run_do_not_count():
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its socket stays in TIME_WAIT on the port
        client.recv(1)
        client.close()
    refuse_ports_in_use("127.0.0.1", {"HTTP": port})  # no PortInUse
    assert not listened_on(port, "127.0.0.1")
