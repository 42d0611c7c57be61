"""Deployment files are valid Ray Serve configs, and every Lua script's keys share one Redis
Cluster slot (so the store works on Redis Cluster)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema
from redis.crc import key_slot

from gateway.store import keys

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["local.yaml", "cluster.yaml"])
def test_serve_config_files_validate_against_rays_own_schema(name):
    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "deployments" / name).read_text()))
    (app,) = config.applications
    assert app.import_path == "gateway.serving.app:build_app"
    assert all(d.name in {"Router", "ChallengerPool", "Retrainer"} or "--" in d.name for d in app.deployments)


def test_the_kuberay_example_embeds_a_valid_serve_config():
    doc = yaml.safe_load((ROOT / "deployments" / "kuberay-rayservice.yaml").read_text())
    assert doc["kind"] == "RayService"
    ServeDeploySchema.model_validate(yaml.safe_load(doc["spec"]["serveConfigV2"]))


@pytest.mark.parametrize("experiment", ["churn", "a.b-c_d", "x" * 60])
def test_all_keys_a_script_touches_share_one_cluster_slot(experiment):
    per_script = {
        # With per-unit aggregates, the request's unit's counters too (it is counted there).
        "record": [keys.request(experiment, "r1"), keys.arms(experiment), keys.decision_log(experiment),
                   keys.pending(experiment), keys.unit_prefix(experiment) + "unit-7"],
        # The quota key is built inside the script from its prefix and the request's unit; one
        # call carries many requests of the experiment.
        "reward": [keys.request(experiment, "r1"), keys.request(experiment, "r2"), keys.arms(experiment), keys.feedback(experiment), keys.meta(experiment),
                   keys.pending(experiment), keys.kpis(experiment), keys.paired(experiment),
                   keys.segments(experiment), keys.shadow_rewards(experiment), keys.linear(experiment),
                   keys.quota_prefix(experiment) + "unit-7", keys.unit_prefix(experiment) + "unit-7"],
        # One call carries many answers to requests of the experiment.
        "shadow": [keys.request(experiment, "r1"), keys.request(experiment, "r2"), keys.kpis(experiment), keys.paired(experiment),
                   keys.shadow_log(experiment), keys.feedback(experiment), keys.shadow_rewards(experiment),
                   keys.meta(experiment), keys.arms(experiment)],
        "set_role": [keys.meta(experiment), keys.history(experiment), keys.shadow_rewards(experiment),
                     keys.arms(experiment)],
        # Request records are found from the pending set, by prefix.
        "expire": [keys.pending(experiment), keys.arms(experiment), keys.segments(experiment), keys.linear(experiment),
                   keys.request(experiment, "r9")],
        "transition": [keys.meta(experiment), keys.history(experiment)],
        "annotate": [keys.meta(experiment), keys.history(experiment)],
        "series": [keys.series_lock(experiment), keys.series(experiment)],
        "add_variant": [keys.dynamic_variants(experiment), keys.meta(experiment), keys.history(experiment)],
        "claim_retrain": [keys.meta(experiment), keys.retrain_lock(experiment)],
        "retrain_lock": [keys.retrain_lock(experiment)],
    }
    lua = {p.stem for p in (ROOT / "src" / "gateway" / "store" / "lua").glob("*.lua")}
    assert lua == set(per_script), "a Lua script was added or removed: list its keys here"
    for script, ks in per_script.items():
        assert len({key_slot(k.encode()) for k in ks}) == 1, script
