import math

import numpy as np
import pytest

from gateway.learning.features import FeatureEncoder, FeatureError
from gateway.policy import Feature

FEATURES = [
    Feature(name="tenure", type="numeric"),
    Feature(name="plan", type="categorical", values=("basic", "pro", "enterprise")),
    Feature(name="calls"),
]


@pytest.fixture
def enc() -> FeatureEncoder:
    return FeatureEncoder(FEATURES)


def test_width_and_column_names(enc):
    assert enc.width == 5
    assert enc.column_names == ("tenure", "plan=basic", "plan=pro", "plan=enterprise", "calls")


def test_list_rows_one_hot_positions(enc):
    X = enc.encode([[3, "basic", 1.5], [7.25, "enterprise", 0], [0, "pro", 2]])
    assert X.dtype == np.float64
    assert X.shape == (3, 5)
    np.testing.assert_array_equal(
        X,
        [
            [3.0, 1, 0, 0, 1.5],
            [7.25, 0, 0, 1, 0.0],
            [0.0, 0, 1, 0, 2.0],
        ],
    )


def test_dict_rows_match_list_rows(enc):
    rows = [[12, "pro", 4], [1.5, "basic", 0]]
    dicts = [{"calls": r[2], "plan": r[1], "tenure": r[0]} for r in rows]
    np.testing.assert_array_equal(enc.encode(dicts), enc.encode(rows))


def test_mixed_rows_and_numpy_scalars(enc):
    X = enc.encode([(np.int64(2), "pro", np.float32(0.5)), {"tenure": 1, "plan": "basic", "calls": 3}])
    np.testing.assert_array_equal(X, [[2, 0, 1, 0, 0.5], [1, 1, 0, 0, 3]])


def _err(enc, instances) -> FeatureError:
    with pytest.raises(FeatureError) as info:
        enc.encode(instances)
    err = info.value
    assert isinstance(err, ValueError)
    assert str(err).startswith(err.field)
    return err


def test_empty_list(enc):
    err = _err(enc, [])
    assert err.field == "instances"
    assert "at least one row" in str(err)


def test_not_a_list(enc):
    assert _err(enc, {"tenure": 1}).field == "instances"


def test_row_neither_list_nor_dict(enc):
    err = _err(enc, [[1, "pro", 2], "tenure=1"])
    assert err.field == "instances[1]"
    assert "str" in str(err)


def test_wrong_length(enc):
    err = _err(enc, [[1, "pro", 2], [1, "pro", 2], [1, "pro"]])
    assert err.field == "instances[2]"
    assert "expected 3 features" in str(err) and "got 2" in str(err)


def test_missing_key(enc):
    err = _err(enc, [{"tenure": 1, "plan": "pro"}])
    assert err.field == "instances[0].calls"
    assert "missing" in str(err)


def test_unknown_key(enc):
    err = _err(enc, [{"tenure": 1, "plan": "pro", "calls": 2, "age": 40}])
    assert err.field == "instances[0].age"
    assert "unknown" in str(err)


@pytest.mark.parametrize("value", ["3", None, True, False, [1], np.bool_(True)])
def test_numeric_must_be_a_number(enc, value):
    err = _err(enc, [[1, "pro", 2], [value, "pro", 2]])
    assert err.field == "instances[1].tenure"
    assert "must be a number" in str(err)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400])
def test_numeric_must_be_finite(enc, value):
    err = _err(enc, [{"tenure": 1, "plan": "pro", "calls": value}])
    assert err.field == "instances[0].calls"
    assert "finite" in str(err)


@pytest.mark.parametrize("value", ["gold", "Basic", 1, None])
def test_categorical_must_be_declared(enc, value):
    err = _err(enc, [[1, "pro", 2], [1, "pro", 2], [1, value, 2]])
    assert err.field == "instances[2].plan"
    assert str(err) == f"instances[2].plan: {value!r} is not one of ['basic', 'pro', 'enterprise']"


def test_example_message_from_the_docs():
    enc = FeatureEncoder([Feature(name="plan", type="categorical", values=("basic", "pro"))])
    err = _err(enc, [["pro"], ["basic"], ["gold"]])
    assert str(err) == "instances[2].plan: 'gold' is not one of ['basic', 'pro']"


def test_a_feature_declared_imputable_accepts_nulls_and_unknown_categories():
    from gateway.policy import Feature

    enc = FeatureEncoder([
        Feature(name="tenure", missing="impute"),
        Feature(name="plan", type="categorical", values=("basic", "pro"), missing="impute"),
    ])
    m = enc.encode([[None, "pro"], [3.0, None], [4.0, "platinum"]])
    assert np.isnan(m[0, 0]) and m[0, 1:].tolist() == [0.0, 1.0]
    assert m[1].tolist() == [3.0, 0.0, 0.0]
    assert m[2].tolist() == [4.0, 0.0, 0.0]  # an unknown category is none of the known ones


def test_without_impute_nulls_and_unknown_categories_are_refused_naming_the_field():
    from gateway.policy import Feature

    enc = FeatureEncoder([Feature(name="tenure"), Feature(name="plan", type="categorical", values=("basic",))])
    with pytest.raises(FeatureError, match=r"instances\[0\]\.tenure"):
        enc.encode([[None, "basic"]])
    with pytest.raises(FeatureError, match=r"instances\[0\]\.plan"):
        enc.encode([[1.0, "gold"]])
