"""Unit tests for gateway.client: the requests it sends and how it maps the gateway's answers.
The server is outside the unit here, so httpx.MockTransport stands in for it."""
from __future__ import annotations

import asyncio
import json
from dataclasses import FrozenInstanceError

import httpx
import pytest

from gateway.client import (
    AsyncClient,
    Client,
    Conflict,
    ConnectionFailed,
    Feedback,
    Forbidden,
    GatewayClientError,
    InvalidRequest,
    NotFound,
    Prediction,
    RewardResult,
    Unauthorized,
    Unavailable,
)

PREDICTION = {
    "request_id": "01JREQ",
    "experiment": "churn",
    "variant": "xgb",
    "predictions": [1],
    "propensity": 0.62,
    "reward_token": "tok-1",
}


class Recorder:
    """A MockTransport handler that records requests and answers from a queue or a function."""

    def __init__(self, *answers: httpx.Response | tuple[int, object]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, httpx.Response):
            return answer
        status, body = answer
        return httpx.Response(status, json=body)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self, i: int = -1) -> object:
        return json.loads(self.requests[i].content)


def client(rec: Recorder, **kw) -> Client:
    return Client(transport=httpx.MockTransport(rec), **kw)


def error(status: int, code: str, message: str = "msg") -> tuple[int, object]:
    return status, {"error": {"code": code, "message": message}}


# -- predictions -----------------------------------------------------------------------------


def test_predict_sends_instances_and_unit_id():
    rec = Recorder((200, PREDICTION))
    with client(rec) as gw:
        p = gw.predict("churn", [[12.0, 80.5, 2.0, "pro"]], unit_id="user-42")
    assert rec.last.method == "POST"
    assert str(rec.last.url) == "http://127.0.0.1:8000/v1/experiments/churn/predict"
    assert rec.last.headers["content-type"] == "application/json"
    assert rec.body() == {"instances": [[12.0, 80.5, 2.0, "pro"]], "unit_id": "user-42"}
    assert p == Prediction("01JREQ", "churn", "xgb", [1], 0.62, "tok-1")
    with pytest.raises(FrozenInstanceError):
        p.variant = "other"  # type: ignore[misc]


def test_predict_without_unit_id_and_with_a_request_id():
    rec = Recorder((200, {**PREDICTION, "extra": "ignored"}))
    gw = client(rec, base_url="http://gw:9000/")
    gw.predict("churn", ({"tenure": 1},), request_id="my-id-1")
    gw.close()
    assert str(rec.last.url) == "http://gw:9000/v1/experiments/churn/predict"
    assert rec.body() == {"instances": [{"tenure": 1}]}
    assert rec.last.headers["x-request-id"] == "my-id-1"
    assert "authorization" not in rec.last.headers


def test_path_segments_are_escaped():
    rec = Recorder((200, {"name": "a/b"}))
    with client(rec) as gw:
        gw.experiment("a/b c")
    assert rec.last.url.raw_path == b"/v1/experiments/a%2Fb%20c"


# -- feedback --------------------------------------------------------------------------------


def test_reward_from_a_prediction_uses_its_token():
    rec = Recorder((200, {"request_id": "01JREQ", "status": "accepted", "variant": "xgb", "reward": 1.0}))
    pred = Prediction.from_json(PREDICTION)
    with client(rec) as gw:
        result = gw.reward(pred, reward=1.0)
    assert rec.last.method == "POST" and rec.last.url.path == "/v1/rewards"
    assert rec.body() == {"request_id": "01JREQ", "token": "tok-1", "reward": 1.0}
    assert result == RewardResult("01JREQ", "accepted", "xgb", 1.0)
    assert result.ok


def test_reward_by_request_id_with_label_and_token():
    rec = Recorder((200, {"request_id": "r1", "status": "duplicate", "variant": "xgb", "reward": 0.0}))
    with client(rec) as gw:
        result = gw.reward("r1", label=0, token="tok-x")
    assert rec.body() == {"request_id": "r1", "token": "tok-x", "label": 0}
    assert result.status == "duplicate" and result.ok


def test_reward_zero_is_sent_and_both_reward_and_label():
    rec = Recorder((200, {"request_id": "01JREQ", "status": "accepted"}))
    with client(rec) as gw:
        gw.reward(Prediction.from_json(PREDICTION), reward=0.0, label=[1], token="override")
    assert rec.body() == {"request_id": "01JREQ", "token": "override", "reward": 0.0, "label": [1]}


def test_reward_needs_a_reward_or_a_label():
    rec = Recorder((200, {}))
    with client(rec) as gw, pytest.raises(ValueError, match="reward, a label"):
        gw.reward("r1", token="t")
    assert rec.requests == []


@pytest.mark.parametrize(
    "status,code,cls",
    [(404, "request_not_found", NotFound), (403, "token_invalid", Forbidden), (422, "invalid_reward", InvalidRequest)],
)
def test_a_refused_single_reward_raises(status, code, cls):
    rec = Recorder(error(status, code, "why"))
    with client(rec) as gw, pytest.raises(cls) as info:
        gw.reward("r1", reward=1.0, token="t")
    assert (info.value.status, info.value.code, info.value.message) == (status, code, "why")


def test_rewards_batch_answers_per_item():
    answer = {
        "results": [
            {"request_id": "a", "status": "accepted", "variant": "x", "reward": 1.0},
            {
                "request_id": "b",
                "status": "rejected",
                "error": {"code": "token_invalid", "message": "bad token"},
                "http_status": 403,
            },
            {"request_id": "c", "status": "duplicate", "variant": "y", "reward": 0.0},
        ],
        "accepted": 1,
        "duplicate": 1,
        "rejected": 1,
    }
    rec = Recorder((200, answer))
    pred = Prediction.from_json(PREDICTION)
    with client(rec) as gw:
        results = gw.rewards(
            [
                Feedback(pred, reward=1.0),
                Feedback("b", label=1, token="tb"),
                {"request_id": "c", "reward": 0.5, "token": "tc"},
            ]
        )
    assert rec.body() == {
        "rewards": [
            {"request_id": "01JREQ", "token": "tok-1", "reward": 1.0},
            {"request_id": "b", "token": "tb", "label": 1},
            {"request_id": "c", "reward": 0.5, "token": "tc"},
        ]
    }
    assert [r.status for r in results] == ["accepted", "rejected", "duplicate"]
    assert results[1] == RewardResult("b", "rejected", None, None, "token_invalid", "bad token", 403)
    assert not results[1].ok


def test_rewards_are_split_into_batches_of_1000():
    def answer(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["rewards"]
        return httpx.Response(200, json={"results": [{"request_id": i["request_id"], "status": "accepted"} for i in items]})

    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(len(json.loads(request.content)["rewards"]))
        return answer(request)

    with Client(transport=httpx.MockTransport(handler)) as gw:
        results = gw.rewards(Feedback(f"r{i}", reward=1.0, token="t") for i in range(2500))
        assert gw.rewards([]) == []
    assert seen == [1000, 1000, 500]
    assert [r.request_id for r in results] == [f"r{i}" for i in range(2500)]


def test_a_refused_batch_raises():
    rec = Recorder(error(422, "too_many_rewards"))
    with client(rec) as gw, pytest.raises(InvalidRequest):
        gw.rewards([{"request_id": "a"}])
    with client(rec) as gw, pytest.raises(TypeError):
        gw.rewards(["a"])  # type: ignore[list-item]


# -- experiments and admin -------------------------------------------------------------------


def test_experiments_and_experiment():
    rec = Recorder((200, {"experiments": [{"name": "churn"}, {"name": "race"}]}), (200, {"name": "churn", "status": "exploring"}))
    with client(rec) as gw:
        assert gw.experiments() == [{"name": "churn"}, {"name": "race"}]
        assert gw.experiment("churn") == {"name": "churn", "status": "exploring"}
    assert [(r.method, r.url.path) for r in rec.requests] == [("GET", "/v1/experiments"), ("GET", "/v1/experiments/churn")]
    assert all(r.content == b"" for r in rec.requests)


@pytest.mark.parametrize(
    "call,method,path,body",
    [
        (lambda gw: gw.promote("churn", "xgb"), "POST", "/v1/experiments/churn/promote", {"variant": "xgb"}),
        (lambda gw: gw.rollback("churn"), "POST", "/v1/experiments/churn/rollback", {}),
        (lambda gw: gw.pause("churn"), "POST", "/v1/experiments/churn/pause", {}),
        (lambda gw: gw.resume("churn"), "POST", "/v1/experiments/churn/resume", {}),
        (lambda gw: gw.retrain("churn"), "POST", "/v1/experiments/churn/retrain", {}),
        (lambda gw: gw.retire("churn", "logreg"), "DELETE", "/v1/experiments/churn/variants/logreg", None),
        (lambda gw: gw.add_variant("churn", "c", "/m/c.ubj"), "POST", "/v1/experiments/churn/variants",
         {"name": "c", "model": "/m/c.ubj"}),
        (lambda gw: gw.add_variant("churn", "c", "/m/c.ubj", features=["tenure", "visits"]), "POST",
         "/v1/experiments/churn/variants", {"name": "c", "model": "/m/c.ubj", "features": ["tenure", "visits"]}),
    ],
)
def test_admin_verbs_send_the_bearer_token(call, method, path, body):
    rec = Recorder((200, {"status": "ok"}))
    with client(rec, admin_token="s3cret-admin-token") as gw:
        assert call(gw) == {"status": "ok"}
    assert (rec.last.method, rec.last.url.path) == (method, path)
    assert rec.last.headers["authorization"] == "Bearer s3cret-admin-token"
    assert (json.loads(rec.last.content) if rec.last.content else None) == body


def test_admin_without_a_token_sends_no_header_and_maps_401_and_403():
    rec = Recorder(error(401, "unauthorized", "admin token required"), error(403, "forbidden", "wrong token"))
    with client(rec) as gw:
        with pytest.raises(Unauthorized) as info:
            gw.pause("churn")
        assert "authorization" not in rec.last.headers
        assert info.value.message == "admin token required"
        with pytest.raises(Forbidden):
            gw.pause("churn")


def test_a_non_admin_call_never_sends_the_token():
    rec = Recorder((200, PREDICTION))
    with client(rec, admin_token="s3cret-admin-token") as gw:
        gw.predict("churn", [[1]])
    assert "authorization" not in rec.last.headers


def test_an_answer_with_no_body():
    rec = Recorder(httpx.Response(204))
    with client(rec, admin_token="t" * 16) as gw:
        assert gw.resume("churn") is None


# -- error mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,cls",
    [
        (400, InvalidRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (422, InvalidRequest),
        (503, Unavailable),
        (413, GatewayClientError),
        (500, GatewayClientError),
    ],
)
def test_error_statuses_map_to_exceptions(status, cls):
    rec = Recorder(error(status, "some_code", "some message"))
    with client(rec) as gw, pytest.raises(cls) as info:
        gw.predict("churn", [[1]])
    err = info.value
    assert type(err) is cls and isinstance(err, GatewayClientError)
    assert (err.status, err.code, err.message) == (status, "some_code", "some message")
    assert str(err) == f"{status} some_code: some message"


def test_error_bodies_not_in_the_gateway_format():
    rec = Recorder(
        httpx.Response(502, text="Bad Gateway from a proxy"),
        httpx.Response(404, json={"error": "no model named 'x'"}),
        httpx.Response(500, json=[1, 2]),
    )
    with client(rec) as gw:
        with pytest.raises(GatewayClientError) as info:
            gw.experiments()
        assert (info.value.status, info.value.code, info.value.message) == (502, "http_502", "Bad Gateway from a proxy")
        with pytest.raises(NotFound) as info:
            gw.experiments()
        assert info.value.message == "no model named 'x'"
        with pytest.raises(GatewayClientError) as info:
            gw.experiments()
        assert (info.value.code, info.value.message) == ("http_500", "Internal Server Error")


def test_a_success_that_is_not_json():
    rec = Recorder(httpx.Response(200, text="<html>"))
    with client(rec) as gw, pytest.raises(GatewayClientError) as info:
        gw.experiments()
    assert info.value.code == "invalid_response"


def test_an_unreachable_gateway():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with Client(transport=httpx.MockTransport(refuse)) as gw, pytest.raises(ConnectionFailed) as info:
        gw.experiments()
    assert info.value.status == 0 and "connection refused" in info.value.message
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_timeout_is_passed_to_httpx():
    gw = Client(timeout=2.5, transport=httpx.MockTransport(Recorder((200, {}))))
    assert gw._http.timeout == httpx.Timeout(2.5)
    gw.close()


# -- the async client ------------------------------------------------------------------------


def test_async_client_sends_the_same_requests():
    rec = Recorder(
        (200, PREDICTION),
        (200, {"request_id": "01JREQ", "status": "accepted", "variant": "xgb", "reward": 1.0}),
        (200, {"results": [{"request_id": "01JREQ", "status": "duplicate"}]}),
        (200, {"experiments": [{"name": "churn"}]}),
        (200, {"name": "churn"}),
        (200, {"status": "promoted"}),
        (200, {"status": "retired"}),
        error(409, "conflict", "already paused"),
    )

    async def scenario() -> None:
        async with AsyncClient("http://gw", admin_token="tok-admin-token-16", transport=httpx.MockTransport(rec)) as gw:
            p = await gw.predict("churn", [[1, 2, 3, "pro"]], unit_id="u1")
            assert p.variant == "xgb"
            assert (await gw.reward(p, reward=1.0)).status == "accepted"
            assert [r.status for r in await gw.rewards([Feedback(p, reward=1.0)])] == ["duplicate"]
            assert await gw.experiments() == [{"name": "churn"}]
            assert await gw.experiment("churn") == {"name": "churn"}
            assert await gw.promote("churn", "xgb") == {"status": "promoted"}
            assert await gw.retire("churn", "logreg") == {"status": "retired"}
            with pytest.raises(Conflict):
                await gw.pause("churn")

    asyncio.run(scenario())
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("POST", "/v1/experiments/churn/predict"),
        ("POST", "/v1/rewards"),
        ("POST", "/v1/rewards"),
        ("GET", "/v1/experiments"),
        ("GET", "/v1/experiments/churn"),
        ("POST", "/v1/experiments/churn/promote"),
        ("DELETE", "/v1/experiments/churn/variants/logreg"),
        ("POST", "/v1/experiments/churn/pause"),
    ]
    assert rec.body(0) == {"instances": [[1, 2, 3, "pro"]], "unit_id": "u1"}
    assert rec.body(1) == {"request_id": "01JREQ", "token": "tok-1", "reward": 1.0}
    assert rec.body(2) == {"rewards": [{"request_id": "01JREQ", "token": "tok-1", "reward": 1.0}]}
    assert rec.body(5) == {"variant": "xgb"}
    assert [("authorization" in r.headers) for r in rec.requests] == [False] * 5 + [True] * 3


def test_async_client_maps_errors_and_connection_failures():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async def scenario() -> None:
        async with AsyncClient(transport=httpx.MockTransport(Recorder(error(503, "variant_unavailable")))) as gw:
            with pytest.raises(Unavailable) as info:
                await gw.predict("churn", [[1]])
            assert info.value.code == "variant_unavailable"
        async with AsyncClient(transport=httpx.MockTransport(refuse)) as gw:
            with pytest.raises(ConnectionFailed):
                await gw.experiments()

    asyncio.run(scenario())
