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

