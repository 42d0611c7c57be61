"""One rule for a 0/1 label in both languages: the reward script counts a unit's labels
(`labels`, `mean_label` aggregates) by lib/labels.lua, training learns by
gateway.learning.labels; on the same JSON they must agree, or a model would be served
aggregates made of labels it is never trained on (or the other way round)."""
from __future__ import annotations

import json
from importlib import resources

import pytest
import redis

from gateway.learning.labels import binary_label
from gateway.store.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration

LABELS = ["0", "1", "true", "false", "1.0", "0.0", "1e0", "-0", "-0.0", "0e5", "2", "-1", "0.5", "0.9999999999999999",
          "1.0000000000000001", '"1"', '"0"', '" 1"', '"1 "', '"1.0"', '"01"', '"true"', '"yes"', '""', "null", "[1]",
          "{}", '{"1": 1}', "1e400", "-1e400", "100000000000000000000001", "1" + "0" * 400]

# Each JSON text decoded by cjson and judged by binary_label (lib/labels.lua): 0, 1, or -1 for none.
PROBE = """
local out = {}
for i, text in ipairs(ARGV) do
  local ok, value = pcall(cjson.decode, text)
  local b = nil
  if ok then b = binary_label(value) end
  out[i] = b or -1
end
return out
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("labels")).start()
    c = redis.Redis.from_url(server.url)
    try:
        yield c
    finally:
        c.close()
        server.stop()


def test_lua_and_python_call_the_same_labels_0_or_1(client):
    lib = resources.files("gateway.store").joinpath("lua", "lib", "labels.lua").read_text()
    lua = client.eval(lib + PROBE, 0, *LABELS)
    python = []
    for text in LABELS:
        b = binary_label(json.loads(text))
        python.append(-1 if b is None else b)
    assert dict(zip(LABELS, lua)) == dict(zip(LABELS, python))
    # The rule itself, as documented: numbers and booleans by value, strings only "0" and "1".
    assert [binary_label(v) for v in (True, 0.0, 1, "1", "0")] == [1, 0, 1, 1, 0]
    assert [binary_label(v) for v in (" 1", "1.0", "true", 2, None, [1])] == [None] * 6
