"""What a 0/1 label is, the one rule on the Python side: training (training_data) learns from
exactly the labels that the reward script counts in a unit's `labels` and `mean_label`
aggregates (store/lua/lib/labels.lua, the same rule in Lua; a test holds the two together).

A label is 0 or 1 when it is JSON false/true, a number equal to 0 or 1 (0, 1, 0.0, 1.0, 1e0),
or exactly the string "0" or "1" (no spaces, no other spelling)."""
from __future__ import annotations

from typing import Any

import numpy as np


def binary_label(value: Any) -> int | None:
    """0 or 1 from a label as clients send it, else None."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            return int(value) if float(value) in (0.0, 1.0) else None
        except OverflowError:  # an integer beyond the doubles: not 0 or 1
            return None
    if isinstance(value, str) and value in ("0", "1"):
        return int(value)
    return None
