"""One rule for labels in both languages: the reward script counts a unit's labels (`labels`,
`mean_label` aggregates) and scores predictions (lifetime KPIs, 'match' rewards, the shadows'
paired test) by lib/labels.lua; training, the window KPIs and the router's 'match' by
gateway.learning.labels. On the same JSON they must agree, or a model would be served aggregates
made of labels it is never trained on, or a dashboard's window and lifetime figures would differ
on the same feedback."""
from __future__ import annotations

import json
from importlib import resources

import pytest
import redis

from gateway.learning.labels import binary_label, is_positive, label_key, same
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


# Each JSON text's key (label_key), or '<none>', and whether each pair of texts is the same.
KEY_PROBE = """
local n = #ARGV
local out = {}
for i = 1, n do
  local ok, value = pcall(cjson.decode, ARGV[i])
  local k = ok and label_key(value) or nil
  out[i] = k or '<none>'
end
for i = 1, n do
  local _, a = pcall(cjson.decode, ARGV[i])
  for j = 1, n do
    local _, b = pcall(cjson.decode, ARGV[j])
    out[#out + 1] = label_same(a, b) and 1 or 0
  end
end
return out
"""


def test_lua_and_python_compare_labels_and_predictions_alike(client):
    texts = LABELS + ["0.1", "1e22", "-3", '"pro"', '"basic"', "false"]
    lib = resources.files("gateway.store").joinpath("lua", "lib", "labels.lua").read_text()
    lua = [v.decode() if isinstance(v, bytes) else v for v in client.eval(lib + KEY_PROBE, 0, *texts)]
    values = [json.loads(t) for t in texts]
    python_keys = ["<none>" if label_key(v) is None else label_key(v) for v in values]
    assert dict(zip(texts, lua[: len(texts)])) == dict(zip(texts, python_keys))
    python_same = [int(same(a, b)) for a in values for b in values]
    assert lua[len(texts):] == python_same
    # The rule, as documented: numbers by value (true is 1), strings as they are, null no match.
    assert same("1", 1) and same(1.0, 1) and same(True, 1) and same("pro", "pro") and same(-0.0, 0)
    assert not same("1.0", 1) and not same(None, None) and not same([1], [1]) and not same(" 1", 1)
    assert [is_positive(v) for v in (1, 1.0, "1", True, 0, "yes", 2)] == [True] * 4 + [False] * 3
