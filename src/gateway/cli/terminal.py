"""Keep Ray's own lines out of the user's terminal while the CLI runs Ray in its process.

Ray writes from Python loggers, from its C++ core worker and from the log lines it forwards
from its workers ("Token authentication is enabled ...", "(ServeController pid=...) INFO ...",
"Task ServeController.graceful_shutdown failed ..."), to file descriptors 1 and 2 directly.
Only moving those descriptors catches all of them: while the block runs they point at the log
file, and the CLI's own consoles write to copies of the terminal's descriptors."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from rich.console import Console

from gateway.store.embedded import private_dir


def log_path(state_dir: Path) -> Path:
    return state_dir / "logs" / "gateway.log"


@contextmanager
def ray_output_to_log(log_file: Path, consoles: list[Console], verbose: bool = False) -> Iterator[None]:
    """Within the block, everything written to fd 1 and 2 goes to `log_file`, except what
    `consoles` print. `verbose`: change nothing, Ray's lines stay on the terminal."""
    if verbose:
        yield
        return
    private_dir(log_file.parent)
    sys.stdout.flush()
    sys.stderr.flush()
    # Opened first: if it fails, nothing has been duplicated yet.
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    streams: dict[int, IO[str]] = {
        fd: os.fdopen(os.dup(copy), "w", buffering=1, encoding="utf-8", errors="replace") for fd, copy in saved.items()
    }
    previous = [(c, c._file) for c in consoles]  # None unless a file was given: follow sys.std*
    try:
        for fd in (1, 2):
            os.dup2(log_fd, fd)
        for c in consoles:
            c.file = streams[2 if c.stderr else 1]
        yield
    finally:
        try:
            for s in (sys.stdout, sys.stderr, *streams.values()):
                try:
                    s.flush()
                except OSError:  # a closed pipe (`gateway serve | head`) must not keep fds moved
                    pass
        finally:
            for c, file in previous:
                c.file = file  # type: ignore[assignment]
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            for s in streams.values():
                try:
                    s.close()
                except OSError:
                    pass
            os.close(log_fd)
