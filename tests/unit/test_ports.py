"""Ports the gateway picks for itself come from below the ephemeral range and never twice; the
start-up check of its own ports: a listener of another process counts, the TIME_WAIT sockets an
earlier run's connections left behind do not (a restart must not fail)."""
from __future__ import annotations

import socket

import pytest

from gateway.serving import ports
from gateway.serving.ports import (
    LOWEST, PortInUse, ephemeral_low, free_port, free_ports, listened_on, refuse_ports_in_use,
)


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


def test_ports_come_from_below_the_ephemeral_range_and_never_twice():
    # A port from the ephemeral range can be taken by an outgoing connection (Ray opens many)
    # between the check and the listener's bind.
    picked = [free_port() for _ in range(200)]
    assert len(set(picked)) == len(picked)
    assert all(LOWEST <= p < ephemeral_low() for p in picked)


def test_a_port_in_use_or_named_to_avoid_is_not_picked():
    window = free_ports(count=4)
    ports._handed_out.difference_update(range(window, window + 4))  # to ask for them again
    everything_else = set(range(LOWEST, ephemeral_low())) - set(range(window, window + 4))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", window + 1))
        taken.listen()
        # Of the four, only window + 2 starts two ports that are free and not to be avoided.
        assert free_ports(count=2, avoid=everything_else) == window + 2
