"""The Serve configs of deployments/, as a test machine can run them: the same applications,
deployments, replicas and options, with only the machine-specific values changed (the HTTP port
and a loopback host, folders under the test's temp folder, the Redis the test started)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"


def serve_config(name: str) -> dict[str, Any]:
    """The Serve config in deployments/NAME; for the KubeRay RayService, its serveConfigV2."""
    doc = yaml.safe_load((DEPLOYMENTS / name).read_text())
    if doc.get("kind") == "RayService":
        return yaml.safe_load(doc["spec"]["serveConfigV2"])
    return doc


def for_this_machine(config: dict[str, Any], *, port: int, state_dir: Path, redis_url: str | None) -> dict[str, Any]:
    config = yaml.safe_load(yaml.safe_dump(config))  # a deep copy
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
    for app in config["applications"]:
        args = app.setdefault("args", {})
        # local.yaml's `policies` is the repository's (serve run starts at its root); the
        # cluster configs' shared volume holds the same folder.
        args["policy"] = str(ROOT / "policies")
        args["state_dir"] = str(state_dir / app["name"])
        env_vars = (app.get("runtime_env") or {}).get("env_vars") or {}
        if "GATEWAY_REDIS_URL" in env_vars:
            if redis_url is None:
                raise ValueError(f"application {app['name']} names an external Redis: give the test's")
            env_vars["GATEWAY_REDIS_URL"] = redis_url
    return config


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
