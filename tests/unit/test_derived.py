"""Derived features and per-variant views: what a user declares in a policy, and the columns each
variant then gets."""
from __future__ import annotations

import json
import math
from functools import partial

import numpy as np
import pytest

from gateway.learning.derived import Derivation, as_specs, spec_json
from gateway.learning.features import FeatureError
from gateway.learning.views import FeatureView, raw_inputs
from gateway.policy import Policy, PolicyError, parse_policy

BASE = {
    "experiment": "d",
    "features": [
        {"name": "tenure"},
        {"name": "charges"},
        {"name": "plan", "type": "categorical", "values": ["basic", "pro"]},
        {"name": "age"},
    ],
    "derived": [
        {"name": "per_month", "op": "ratio", "of": ["charges", "tenure"]},
        {"name": "log_charges", "op": "log", "of": ["charges"]},
        {"name": "tenure_band", "op": "bucket", "of": ["tenure"], "bins": [12, 24, 48]},
        {"name": "pro_charges", "op": "interaction", "of": ["plan=pro", "charges"]},
        {"name": "log_per_month", "op": "log", "of": ["per_month"]},
    ],
    "variants": [
        {"name": "old", "model": "old.skops"},
        {"name": "new", "model": "new.ubj", "features": ["plan", "per_month", "tenure_band", "pro_charges"]},
    ],
}


def policy(**changes) -> Policy:
    return parse_policy({**BASE, **changes})


ROWS = [
    {"tenure": 10, "charges": 50.0, "plan": "pro", "age": 30},
    {"tenure": 0, "charges": 20.0, "plan": "basic", "age": 40},
    {"tenure": 48, "charges": -1.0, "plan": "pro", "age": 50},
]


def test_each_operation_computes_what_the_policy_says():
    frame = FeatureView(policy()).frame(ROWS)
    cols = FeatureView(policy()).columns
    got = {name: frame[:, cols.index(name)].tolist() for name in ("per_month", "log_charges", "tenure_band",
                                                                  "pro_charges", "log_per_month")}
    assert got["per_month"][0] == 5.0 and math.isnan(got["per_month"][1])  # a 0 divisor: missing
    assert got["log_charges"][:2] == [math.log1p(50.0), math.log1p(20.0)] and math.isnan(got["log_charges"][2])
    assert got["tenure_band"] == [0.0, 0.0, 3.0]  # bins [12, 24, 48]: 48 falls in the last
    assert got["pro_charges"] == [50.0, 0.0, -1.0]
    assert got["log_per_month"][0] == math.log1p(5.0) and math.isnan(got["log_per_month"][1])


def test_a_variant_gets_its_own_columns_in_its_order_and_others_the_raw_ones():
    view = FeatureView(policy())
    frame = view.frame(ROWS)
    new = view.select("new", frame)
    assert view.column_names(["plan", "per_month", "tenure_band", "pro_charges"]) == [
        "plan=basic", "plan=pro", "per_month", "tenure_band", "pro_charges"]
    np.testing.assert_array_equal(new[0], [0.0, 1.0, 5.0, 0.0, 50.0])
    # A variant without `features` sees exactly what it saw before derived features existed.
    old = view.select("old", frame)
    np.testing.assert_array_equal(old, view.encoder.encode(ROWS))
    assert old.shape == (3, 5)
    # Training builds the same bytes serving selects.
    assert view.matrix(["plan", "per_month", "tenure_band", "pro_charges"], ROWS).tobytes() == new.tobytes()


def test_a_feature_no_variant_uses_may_be_left_out_and_one_a_variant_uses_may_not():
    p = policy(variants=[{"name": "new", "model": "new.ubj", "features": ["plan", "per_month"]}])
    view = FeatureView(p)
    assert view.required == {"plan", "charges", "tenure"}  # per_month reads charges and tenure
    frame = view.frame([{"tenure": 1, "charges": 2.0, "plan": "pro"}])  # no age
    assert math.isnan(frame[0, view.columns.index("age")])
    with pytest.raises(FeatureError, match=r"instances\[0\]\.charges: missing feature"):
        view.frame([{"tenure": 1, "plan": "pro", "age": 3}])
    with pytest.raises(FeatureError, match="unknown feature"):
        view.frame([{"tenure": 1, "charges": 2.0, "plan": "pro", "income": 9}])


def test_a_variant_the_view_does_not_know_is_an_error_not_the_raw_columns():
    view = FeatureView(policy())
    with pytest.raises(LookupError, match="'ghost' is not in experiment 'd'"):
        view.select("ghost", view.frame(ROWS))


def test_without_subsets_every_feature_stays_required():
    p = policy(variants=[{"name": "old", "model": "old.skops"}])
    with pytest.raises(FeatureError, match=r"instances\[0\]\.age: missing feature"):
        FeatureView(p).frame([{"tenure": 1, "charges": 2.0, "plan": "pro"}])


def test_raw_inputs_follow_derived_features_to_the_request():
    assert raw_inputs(policy(), ["log_per_month", "pro_charges"]) == {"charges", "tenure", "plan"}


@pytest.mark.parametrize("change,message", [
    ({"derived": [{"name": "tenure", "op": "log", "of": ["charges"]}]}, "already a feature"),
    ({"derived": [{"name": "x", "op": "log", "of": ["plan"]}]}, "'plan' is not a numeric feature"),
    ({"derived": [{"name": "x", "op": "log", "of": ["y"]}, {"name": "y", "op": "log", "of": ["tenure"]}]},
     "'y' is not a numeric feature"),
    ({"derived": [{"name": "x", "op": "ratio", "of": ["tenure"]}]}, "ratio takes 2 input"),
    ({"derived": [{"name": "x", "op": "bucket", "of": ["tenure"], "bins": [3, 1]}]}, "strictly increasing"),
    ({"derived": [{"name": "x", "op": "bucket", "of": ["tenure"]}]}, "bucket needs 'bins'"),
    ({"derived": [{"name": "x", "op": "log", "of": ["tenure"], "bins": [1]}]}, "only for op: bucket"),
    ({"variants": [{"name": "v", "model": "m.ubj", "features": ["income"]}]}, "'income' is not a feature"),
    ({"variants": [{"name": "v", "model": "m.ubj", "features": ["age", "age"]}]}, "must be unique"),
])
def test_bad_declarations_are_refused_naming_the_field(change, message):
    with pytest.raises(PolicyError, match=message):
        policy(**change)


def test_a_policy_with_derived_features_and_subsets_survives_the_trip_to_the_deployments():
    p = policy()
    assert Policy.model_validate(p.model_dump(mode="json")) == p


def test_specs_round_trip_through_json_as_artifacts_record_them():
    specs = policy().derived
    again = as_specs([spec_json(d) for d in specs])
    assert again == specs
    cols = ("tenure", "charges", "plan=basic", "plan=pro", "age")
    x = np.array([[10.0, 50.0, 0.0, 1.0, 30.0]])
    assert Derivation(cols, again).extend(x).tobytes() == Derivation(cols, specs).extend(x).tobytes()


def test_overflow_becomes_missing_not_infinity():
    p = policy(derived=[{"name": "sq", "op": "interaction", "of": ["charges", "charges"]},
                        {"name": "r", "op": "ratio", "of": ["charges", "tenure"]}],
               variants=[{"name": "old", "model": "old.skops"}])
    frame = FeatureView(p).frame([{"tenure": 1e-300, "charges": 1e300, "plan": "pro", "age": 1}])
    assert np.isnan(frame[0, -2]) and np.isnan(frame[0, -1])


def test_the_documented_policy_example_is_valid():
    """docs/features.md's example is what users copy: it must load as written."""
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "features.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    p = parse_policy(yaml.safe_load(example))
    view = FeatureView(p)
    assert view.needs_unit == ("visits", "churn_rate") and "age" not in view.required
    assert view.column_names(p.variants[1].features)[-3:] == ["per_month", "visits", "churn_rate"]


def json_entry(p, vector) -> str:
    """An entry as the log held them before the counters form: the values' JSON by spec key."""
    from gateway.learning import aggregates

    return json.dumps({k: None if math.isnan(v) else v for k, v in zip(aggregates.spec_keys(p), vector)})


def test_aggregate_values_as_served_and_as_logged():
    from gateway.learning import aggregates

    p = policy(aggregates={"features": [{"name": "n", "kind": "count"}, {"name": "l", "kind": "labels"},
                                        {"name": "m", "kind": "mean_label"}, {"name": "r", "kind": "mean_reward"}]})
    nan = math.nan
    new_unit = aggregates.values(p, [None] * 5)
    assert new_unit[:2] == [0.0, 0.0] and math.isnan(new_unit[2]) and math.isnan(new_unit[3])
    assert aggregates.values(p, ["3", "2", "1", "4", "3"]) == [3.0, 2.0, 0.5, 0.75]
    assert all(math.isnan(v) for v in aggregates.values(p, None))  # no unit_id: nothing known
    logged = '{"n:count": 3.0, "l:labels": 2.0, "m:mean_label": null, "r:mean_reward": 0.1}'
    assert logged == json_entry(p, [3.0, 2.0, nan, 0.1])
    keys = aggregates.spec_keys(p)
    back = aggregates.loads(logged, keys)
    assert back[:2] + back[3:] == [3.0, 2.0, 0.1] and math.isnan(back[2])
    assert aggregates.values(policy(), ["1"] * 5) == []  # no aggregates declared


def test_logged_aggregates_read_back_as_exactly_the_floats_served():
    from gateway.learning import aggregates

    p = policy(aggregates={"features": [{"name": "n", "kind": "count"}, {"name": "m", "kind": "mean_label"}]})
    keys = aggregates.spec_keys(p)
    for served in ([1 / 3, 5e-324], [-0.0, 1.7976931348623157e308], [2.0**53 + 2, math.nan], [0.1 + 0.2, 1e-7]):
        back = aggregates.loads(json_entry(p, served), keys)
        assert [repr(v) for v in back] == [repr(v) for v in served]


def test_logged_aggregates_are_read_by_name_and_rows_under_other_specs_are_left_out_of_training():
    from gateway.learning import aggregates
    from gateway.learning.training_data import LabelledData

    old = policy(aggregates={"features": [{"name": "n", "kind": "count"}, {"name": "m", "kind": "mean_label"}]})
    reordered = policy(aggregates={"features": [{"name": "m", "kind": "mean_label"}, {"name": "n", "kind": "count"}]})
    changed = policy(aggregates={"features": [{"name": "n", "kind": "labels"}, {"name": "m", "kind": "mean_label"}]})
    text = json_entry(old, [7.0, 0.25])
    # Reordering the policy's aggregates reads each value under its own name, not by position.
    assert aggregates.loads(text, aggregates.spec_keys(reordered)) == [0.25, 7.0]
    np.testing.assert_array_equal(aggregates.logged_rows(reordered, [text], 1), [[0.25, 7.0]])
    # Another kind under the same name, the earlier positional form, nothing logged: not these specs.
    for other in (aggregates.loads(text, aggregates.spec_keys(changed)), aggregates.loads("[7.0, 0.25]", ["n:count"]),
                  aggregates.loads(None, ["n:count"])):
        assert other is None
    assert aggregates.matches(policy(), None)  # a policy without aggregates takes every row
    row = {"tenure": 1, "charges": 2.0, "plan": "pro", "age": 3}
    decisions = [{"rid": f"r{i}", "t": str(i), "x": json.dumps([row]), "pred": "[1]", **({"agg": a} if a else {})}
                 for i, a in enumerate([text, "[7.0, 0.25]", None, json_entry(changed, [1.0, 0.5])])]
    feedback = {f"r{i}": {"label": "1"} for i in range(4)}
    data = LabelledData.from_decisions(decisions, feedback, keep=partial(aggregates.matches, reordered))
    assert len(data) == 1 and data.skipped == 3 and data.agg == [text]


def test_logged_counters_give_every_spec_the_values_serving_computes_from_them():
    """The log's counters form (record.lua's, or the router's for counters it read): the values
    under any spec are values() of the same counters, float for float; a malformed one reads as
    not logged; no counters (no unit, Redis away) log MISSING, every value NaN under any spec."""
    from gateway.learning import aggregates

    one = policy(aggregates={"features": [{"name": "n", "kind": "count"}, {"name": "m", "kind": "mean_label"}]})
    other = policy(aggregates={"features": [{"name": "r", "kind": "mean_reward"}, {"name": "l", "kind": "labels"}]})
    for counters in (["3", "2", "1", "3", "0.30000000000000004"], [None] * 5, ["1", None, None, "1", "1e-300"], [b"7", b"2", b"2", None, None]):
        text = aggregates.logged(counters)
        assert text.startswith(aggregates.COUNTERS)
        for p in (one, other):
            back = aggregates.loads(text, aggregates.spec_keys(p))
            assert [repr(v) for v in back] == [repr(v) for v in aggregates.values(p, counters)]
    assert aggregates.loads("c1:,,,,", aggregates.spec_keys(one))[0] == 0.0  # record.lua's new unit
    keys = aggregates.spec_keys(one)
    for bad in ("c1:1,2,3", "c1:x,,,,", "c1:1,,,,,"):
        assert aggregates.loads(bad, keys) is None, bad
    assert aggregates.loads("c1:1,,,,", ["n:median"]) is None  # a kind the gateway does not know
    missing = aggregates.logged(None)
    assert missing == aggregates.MISSING and all(math.isnan(v) for v in aggregates.loads(missing, keys))


def test_aggregates_take_their_columns_between_the_request_and_the_derived_features():
    p = policy(aggregates={"features": [{"name": "visits", "kind": "count"}]},
               derived=[{"name": "lv", "op": "log", "of": ["visits"]}],
               variants=[{"name": "v", "model": "v.ubj", "features": ["tenure", "visits", "lv"]}])
    view = FeatureView(p)
    assert view.columns[-2:] == ("visits", "lv") and view.needs_unit == ("visits",)
    frame = view.frame(ROWS[:1], [3.0])
    np.testing.assert_array_equal(view.select("v", frame), [[10.0, 3.0, math.log1p(3.0)]])
    with pytest.raises(PolicyError, match="already a feature"):
        policy(aggregates={"features": [{"name": "tenure", "kind": "count"}]})


@pytest.mark.parametrize("routing", [
    {"algorithm": "linear_thompson", "context": ["age"]},
    {"variance_reduction": {"covariate": "age"}, "reward": {"type": "bernoulli"}},
    {"algorithm": "contextual_thompson", "context": ["region"], "reward": {"type": "bernoulli"}},
], ids=["linear-context", "covariate", "segment-context"])
def test_the_features_the_router_reads_are_required_though_no_variant_takes_them(routing):
    """The segment, the linear context and the covariate are read from the request by the router
    (plane.py): leaving one out must be a 422 naming it, not a 500 after the variant answered."""
    features = [*BASE["features"], {"name": "region", "type": "categorical", "values": ["eu", "us"]}]
    p = policy(features=features, variants=[{"name": "new", "model": "new.ubj", "features": ["plan", "per_month"]}],
               **routing)
    view = FeatureView(p)
    needed = (routing.get("context") or [routing.get("variance_reduction", {}).get("covariate")])[0]
    assert needed in view.required
    row = {"tenure": 1, "charges": 2.0, "plan": "pro", "age": 3, "region": "eu"}
    view.frame([row])
    with pytest.raises(FeatureError, match=rf"instances\[0\]\.{needed}: missing feature"):
        view.frame([{k: v for k, v in row.items() if k != needed}])
    # Still optional where the router does not read it either.
    other = "region" if needed != "region" else "age"
    view.frame([{k: v for k, v in row.items() if k != other}])
