"""Ports for listeners the gateway (or a test, or a benchmark) picks for itself.

They come from below the kernel's ephemeral range: a port the kernel may also hand to an
outgoing connection (Ray opens many) can be free when checked and taken a moment later, before
the listener binds it. They also stay above 20000, clear of Ray's worker ports (10002-19999 by
default). A port handed out once is not handed out again by the same process, since it may not
be bound yet when the next one is asked for.
"""
from __future__ import annotations

import errno
import functools
import itertools
import logging
import random
import socket
from collections.abc import Collection
from pathlib import Path

log = logging.getLogger("gateway.ports")
LOWEST = 20000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LINUX_EPHEMERAL_LOW = 32768  # the kernel's default, where the range cannot be read
_handed_out: set[int] = set()
_random = random.Random()  # seeded from the OS: two processes start at different places


@functools.cache  # read once: the range does not move under a running process, and warn once
def ephemeral_low() -> int:
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _LINUX_EPHEMERAL_LOW
    if low > LOWEST + 1000:
        return low
    # A range widened down to (or below) LOWEST leaves no port that is safe from the race.
    log.warning("the ephemeral port range starts at %d: ports picked below %d may race outgoing connections",
                low, _LINUX_EPHEMERAL_LOW)
    return _LINUX_EPHEMERAL_LOW


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def listened_on(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener holds host:port now (another process's: the check binds, with
    SO_REUSEADDR as servers do, so the TIME_WAIT sockets of an earlier run's connections do not
    count, where is_free counts them). Any other failure to bind is left to the server to report."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (OSError, UnicodeError):
        return False
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


class PortInUse(RuntimeError):
    """A port the gateway would listen on is held by another process."""


def refuse_ports_in_use(host: str, ports: dict[str, int | None]) -> None:
    """PortInUse naming the first of `ports` (what it is for -> port) that a listener holds on
    host. The gRPC API binds with SO_REUSEPORT (router replicas on a node share it), so a second
    gateway there would not fail: it would silently take half of the first one's calls."""
    for what, port in ports.items():
        if port and listened_on(port, host):
            raise PortInUse(f"{what} port {port} on {host} is already in use by another process "
                            f"(another gateway?): stop it or choose another port")


def free_ports(host: str = "127.0.0.1", count: int = 1, *, avoid: Collection[int] = (), top: int | None = None) -> int:
    """The first of `count` consecutive ports that bind on `host` now, are not in `avoid` and
    were not handed out before by this process; all below `top` (default: the ephemeral range)."""
    top = min(top or ephemeral_low(), ephemeral_low())
    if top - count < LOWEST:
        raise RuntimeError(f"no room for {count} ports between {LOWEST} and {top}")
    avoid = set(avoid)
    start = _random.randrange(LOWEST, top - count + 1)
    for base in itertools.chain(range(start, top - count + 1), range(LOWEST, start)):
        block = range(base, base + count)
        if _handed_out.isdisjoint(block) and avoid.isdisjoint(block) and all(is_free(p, host) for p in block):
            _handed_out.update(block)
            return base
    raise RuntimeError(f"no {count} consecutive free ports on {host} between {LOWEST} and {top}")


def free_port(host: str = "127.0.0.1", *, avoid: Collection[int] = ()) -> int:
    return free_ports(host, 1, avoid=avoid)
