"""The shadow and off-policy routes through the HTTP app (real Redis, real models, no Ray):
admin credentials, the contract's error form, and the state a client reads back."""
from __future__ import annotations

import httpx
import pytest

from gateway.api.app import create_app
from gateway.sim import churn
from tests.planes import Clock, env, run  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.integration

TOKEN = "shadow-http-admin-token"


def test_shadow_and_live_routes_and_the_ope_route(env):
    plane = env.plane(Clock())
    name = plane.experiment_names()[0]
    app = create_app(plane, admin_token=TOKEN)
    rows, _ = churn.make_churn(40, seed=31)
    auth = {"authorization": f"Bearer {TOKEN}"}

    async def scenario():
        await plane.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
                out = {"anonymous": await c.post(f"/v1/experiments/{name}/variants/xgb/shadow")}
                out["shadow"] = await c.post(f"/v1/experiments/{name}/variants/xgb/shadow", headers=auth,
                                             json={"reason": "see it first"})
                out["again"] = await c.post(f"/v1/experiments/{name}/variants/xgb/shadow", headers=auth)
                out["unknown"] = await c.post(f"/v1/experiments/{name}/variants/nope/shadow", headers=auth)
                out["bad_reason"] = await c.post(f"/v1/experiments/{name}/variants/xgb/live", headers=auth,
                                                 json={"reason": "x" * 501})
                served = []
                for row in rows:
                    p = (await c.post(f"/v1/experiments/{name}/predict", json={"instances": [row]})).json()
                    served.append(p["variant"])
                    await c.post("/v1/rewards", json={"request_id": p["request_id"], "reward": 1, "token": p["reward_token"]})
                out["ope_logreg"] = await c.get(f"/v1/experiments/{name}/ope", params={"target": "logreg"})
                out["ope_xgb"] = await c.get(f"/v1/experiments/{name}/ope", params={"target": "xgb"})
                out["live"] = await c.post(f"/v1/experiments/{name}/variants/xgb/live", headers=auth)
                return out, served
        finally:
            await plane.stop()

    out, served = run(scenario())
    assert out["anonymous"].status_code == 401
    assert out["shadow"].status_code == 200
    roles = {v["name"]: v["role"] for v in out["shadow"].json()["variants"]}
    assert roles == {"logreg": "arm", "xgb": "shadow"}
    assert out["again"].status_code == 409 and out["again"].json()["error"]["code"] == "already_shadow"
    assert out["unknown"].status_code == 404 and out["unknown"].json()["error"]["code"] == "variant_not_found"
    assert out["bad_reason"].status_code == 422 and out["bad_reason"].json()["error"]["code"] == "invalid_reason"
    assert set(served) == {"logreg"}
    assert out["ope_logreg"].status_code == 200
    assert out["ope_logreg"].json()["estimates"]["snips"]["value"] == 1.0
    assert out["ope_xgb"].status_code == 422 and out["ope_xgb"].json()["error"]["code"] == "poor_overlap"
    assert out["live"].status_code == 200
    assert {v["name"]: v["role"] for v in out["live"].json()["variants"]}["xgb"] == "arm"
    assert out["live"].json()["history"][-2]["reason"] == "see it first"
