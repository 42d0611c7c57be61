"""The pure parts of the replica confirmations (gateway.store.replication): the marker write's
key lands in the slot of the key it stands for, and after some masters went unconfirmed only
the calls that wrote there fail."""
from __future__ import annotations

import pytest
from redis.crc import key_slot
from redis.exceptions import ResponseError

from gateway.store import keys
from gateway.store.connect import NotReplicated
from gateway.store.replication import each_call_judged, marker_key


@pytest.mark.parametrize("key", [
    keys.request("churn", "r1"), keys.arms("exp-with.dots_and:colons"), "plain-key", "a{b", "x}{y}",
])
def test_the_marker_is_written_in_the_slot_of_the_key_it_stands_for(key):
    assert key_slot(marker_key(key).encode()) == key_slot(key.encode())
    assert marker_key(key) != key


def test_only_the_calls_that_wrote_on_an_unconfirmed_master_fail():
    held = NotReplicated("0 of the 1 replicas required confirmed the writes within 200 ms")
    refused = ResponseError("ERR record: bad arguments")
    answers = [1, 0, refused, 1, 1]
    of_call = ["a", "a", "a", "b", "a"]
    # A refusal (0) and a script's error wrote nothing: they stand on any master.
    assert each_call_judged(answers, of_call, {"a": held}) == [held, 0, refused, 1, held]


def test_when_the_calls_cannot_be_told_apart_every_write_fails():
    held = NotReplicated("not confirmed")
    # One answer more than script calls with keys: no call can be placed on its master.
    assert each_call_judged([1, 0, 1], ["a", "b"], {"b": held}) == [held, 0, held]
