"""The state dir, the embedded Redis's data and the routers' spool are this user's only (0o700),
whatever the umask and whatever mode an older version left them with."""
from __future__ import annotations

import os

import pytest

from gateway.cli.local import LocalGateway
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
    return lambda state_dir: LocalGateway(Settings(state_dir=state_dir)).start()


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
