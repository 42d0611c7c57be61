"""What a label is, the one rule on the Python side (store/lua/lib/labels.lua is the same rule in
Lua; tests/integration/test_label_rule.py holds the two together):

- `label_key`: the text a label or a prediction compares by. A number (JSON's, so a double) by
  value, written as '%.17g' (1, 1.0 and 1e0 are "1"; -0 is "0"); true and false are "1" and "0";
  a string is itself; anything else (null, a list, an object) has no key and matches nothing.
- `same`: a label and a prediction agree when their keys are equal: the reward 'match' turns a
  label into, accuracy, and the shadow variants' paired test.
- `binary_label`: 0 or 1 when the key is "0" or "1" (so the string "1" is 1, "1.0" is not): the
  labels training learns from and a unit's `labels` and `mean_label` aggregates count.
- `is_positive`: class 1 for precision, recall, F1 and AUC: the key "1"."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def label_key(value: Any) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            x = float(value)
        except OverflowError:  # an integer beyond the doubles: JSON decoders in Lua make it inf
            x = math.inf if value > 0 else -math.inf
        if x != x:  # NaN equals nothing, itself included
            return None
        return "0" if x == 0 else "%.17g" % x
    if isinstance(value, str):
        return value
    return None


def same(label: Any, prediction: Any) -> bool:
    key = label_key(label)
    return key is not None and key == label_key(prediction)


def binary_label(value: Any) -> int | None:
    """0 or 1 from a label as clients send it, else None."""
    key = label_key(value)
    return 1 if key == "1" else 0 if key == "0" else None


def is_positive(value: Any) -> bool:
    return label_key(value) == "1"
