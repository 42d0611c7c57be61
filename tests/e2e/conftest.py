"""End-to-end tier: the gateway's traces in a real trace backend (Arize Phoenix), read back
through that backend's own query API. `.ci/phoenix.sh` installs and starts Phoenix and runs this
directory with PHOENIX_URL set; without it every test here is skipped, saying so."""
from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).resolve().parent
SKIP_REASON = "end-to-end tier: needs a running Phoenix in PHOENIX_URL; run it with `bash .ci/phoenix.sh`"


def _phoenix_url() -> str | None:
    url = os.environ.get("PHOENIX_URL", "").strip().rstrip("/")
    return url or None


def pytest_collection_modifyitems(config, items):
    if _phoenix_url():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def phoenix_url() -> str:
    url = _phoenix_url()
    if url is None:
        pytest.skip(SKIP_REASON)
    # .ci/phoenix.sh waits for Phoenix before pytest starts; fail loudly if it is gone.
    r = httpx.get(f"{url}/healthz", timeout=10)
    assert r.status_code == 200, f"Phoenix at {url} is not healthy: {r.status_code} {r.text[:200]}"
    return url
