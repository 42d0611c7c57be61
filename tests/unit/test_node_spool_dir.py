"""Each router replica spools on its own node's disk: the node's GATEWAY_SPOOL_DIR (from the
environment `ray start` ran in) wins over the folder the application was built with."""
from __future__ import annotations

from pathlib import Path

from gateway.serving.router import node_spool_dir
from gateway.settings import load_settings


def test_the_nodes_own_folder_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("GATEWAY_SPOOL_DIR", str(tmp_path / "node-local"))
    assert node_spool_dir({"spool_dir": "/shared/state/spool"}) == tmp_path / "node-local"


def test_without_one_the_built_folder_is_used(monkeypatch):
    monkeypatch.delenv("GATEWAY_SPOOL_DIR", raising=False)
    assert node_spool_dir({"spool_dir": "/shared/state/spool"}) == Path("/shared/state/spool")
    assert node_spool_dir({}) is None


def test_the_setting_defaults_to_the_state_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("GATEWAY_SPOOL_DIR", raising=False)
    assert load_settings(state_dir=tmp_path).spool_dir is None
    monkeypatch.setenv("GATEWAY_SPOOL_DIR", str(tmp_path / "spool-here"))
    assert load_settings().spool_dir == tmp_path / "spool-here"



def test_a_blank_or_file_spool_dir_fails_at_start_naming_it(monkeypatch, tmp_path):
    import pytest

    from gateway.settings import SettingsError

    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    for bad in ("  ", str(a_file)):
        monkeypatch.setenv("GATEWAY_SPOOL_DIR", bad)
        with pytest.raises(SettingsError, match="GATEWAY_SPOOL_DIR|spool_dir"):
            load_settings()


def test_a_nodes_bad_value_is_named_when_the_replica_starts(monkeypatch, tmp_path):
    import pytest

    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    monkeypatch.setenv("GATEWAY_SPOOL_DIR", str(a_file))
    with pytest.raises(ValueError, match="GATEWAY_SPOOL_DIR=.*on this node.*not a folder"):
        node_spool_dir({})


def test_a_relative_value_set_where_the_gateway_was_built_means_the_folder_resolved_there(monkeypatch, tmp_path):
    from gateway.serving.app import router_options

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEWAY_SPOOL_DIR", "spool-here")
    options = router_options(load_settings(state_dir=tmp_path / "state"))
    monkeypatch.chdir("/")  # a local worker inherits the value, but not the folder it was set in
    assert node_spool_dir(options) == tmp_path / "spool-here"


def test_a_relative_value_of_another_node_is_refused_naming_it(monkeypatch, tmp_path):
    import pytest

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEWAY_SPOOL_DIR", "spool-here")
    with pytest.raises(ValueError, match="GATEWAY_SPOOL_DIR='spool-here' on this node: give an absolute path"):
        node_spool_dir({"spool_dir": "/shared/state/spool", "spool_dir_as_set": "/elsewhere"})
    # The same text set on another machine is that machine's own value, and refused the same way.
    with pytest.raises(ValueError, match="give an absolute path"):
        node_spool_dir({"spool_dir": "/shared/state/spool", "spool_dir_as_set": "spool-here",
                        "spool_dir_set_on": "another-host"})


def test_the_spool_and_its_files_are_private_in_a_folder_made_wide(tmp_path):
    import stat

    from gateway.store.spool import Spool

    folder = tmp_path / "spool"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    spool = Spool(folder, owner="router-test")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(spool.path.with_suffix(".lock").stat().st_mode) == 0o600
