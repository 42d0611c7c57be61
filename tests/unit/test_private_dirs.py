"""The state dir, the embedded Redis's data and the routers' spool are this user's only (0o700),
whatever the umask and whatever mode an older version left them with."""
from __future__ import annotations

import os

import pytest
import redis

from gateway.cli.local import LocalGateway
from gateway.serving.ports import free_port
from gateway.settings import Settings
from gateway.store.embedded import EmbeddedRedis


def mode(path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture()
def umask():
    """Set the process umask for one test."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.fixture()
def start_dirs(monkeypatch):
    """LocalGateway.start() up to where Redis and Ray would start."""
    monkeypatch.setattr(LocalGateway, "_start", lambda self: None)
    # A free port: start() refuses one that another process (a gateway on 8000?) listens on.
    return lambda state_dir: LocalGateway(Settings(state_dir=state_dir, http_port=free_port())).start()


def test_new_state_dir_and_spool_are_private(start_dirs, umask, tmp_path):
    umask(0o022)
    state = tmp_path / "deep" / "state"
    start_dirs(state)
    assert mode(state) == 0o700
    assert mode(state / "spool") == 0o700


def test_a_umask_cannot_leave_them_unwritable(start_dirs, umask, tmp_path):
    umask(0o277)  # mkdir(mode=0o700) alone would make 0o500
    state = tmp_path / "state"
    start_dirs(state)
    assert mode(state) == 0o700
    assert mode(state / "spool") == 0o700


def test_existing_wider_state_dir_and_spool_are_made_private(start_dirs, tmp_path):
    state = tmp_path / "state"
    (state / "spool").mkdir(parents=True)
    state.chmod(0o755)
    (state / "spool").chmod(0o777)
    start_dirs(state)
    assert mode(state) == mode(state / "spool") == 0o700


def test_another_users_state_dir_is_left_as_it_is(start_dirs, tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chown(state, 65534, 65534)
    start_dirs(state)
    st = state.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (65534, 0o755)


def test_embedded_redis_data_is_private(umask, tmp_path):
    umask(0o022)
    state = tmp_path / "state"
    (state / "redis").mkdir(parents=True)
    state.chmod(0o755)
    (state / "redis").chmod(0o777)  # left wider by an older version
    fresh = tmp_path / "fresh"
    for folder in (state, fresh):
        with EmbeddedRedis(folder) as server:
            assert server.url.startswith("unix://")
        assert mode(folder) == mode(folder / "redis") == 0o700


def deep_state_dir(tmp_path):
    """A state dir too deep for an AF_UNIX socket path: Redis's socket goes to the temp folder."""
    return tmp_path / ("d" * 60) / ("e" * 60) / "state"


def test_a_deep_state_dirs_redis_socket_sits_in_a_private_folder_of_its_own(umask, tmp_path):
    umask(0o022)
    server = EmbeddedRedis(deep_state_dir(tmp_path))
    folder = server.socket.parent
    assert folder != server.data_dir and len(str(server.socket)) < 100
    try:
        server.start()
        assert mode(folder) == 0o700 and folder.stat().st_uid == os.getuid()
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.stop()
    assert not folder.exists()  # removed with the server


def test_a_redis_socket_folder_made_by_another_user_is_refused(tmp_path):
    """Someone who made the predictable folder first could serve a fake Redis in it (and hand
    the routers a reward secret of their choosing): refused, nothing started."""
    server = EmbeddedRedis(deep_state_dir(tmp_path))
    folder = server.socket.parent
    folder.mkdir(mode=0o777)
    os.chown(folder, 65534, 65534)
    try:
        with pytest.raises(RuntimeError, match="belongs to uid 65534"):
            server.start()
        assert server.process is None
    finally:
        folder.rmdir()


def test_a_redis_socket_folder_that_is_a_symlink_is_refused(tmp_path):
    server = EmbeddedRedis(deep_state_dir(tmp_path))
    target = tmp_path / "elsewhere"
    target.mkdir()
    server.socket.parent.symlink_to(target)
    try:
        with pytest.raises(RuntimeError, match="symlink"):
            server.start()
        assert server.process is None
    finally:
        server.socket.parent.unlink()
