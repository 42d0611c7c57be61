"""The gateway's ASGI app served by uvicorn in a thread of the test process (no Ray), on a free
port of 127.0.0.1, for tests that need real HTTP in front of an in-process DataPlane."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from tests.integration.conftest import free_port


@contextmanager
def served_in_thread(app, name: str) -> Iterator[int]:
    """Yields the port once the server answers; stops it afterwards (its lifespan stops the plane)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail("the in-process server did not start")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
