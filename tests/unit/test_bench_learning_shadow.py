"""bench/learning.py's shadow-first arm: exposure regret and the simulated shadow-first steps
(reward.lua's paired counts, the monitor's verdicts applied as set_role.lua and the retire path do)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import learning  # noqa: E402 (bench/ is not a package)


def test_best_available_follows_existence():
    quality = {"old": 0.7, "new": 0.9, "worse": 0.6}
    available = {"old": (0, 10), "new": (4, 8), "worse": (2, 10)}
    assert learning.best_available(10, quality, available) == ["old"] * 4 + ["new"] * 4 + ["old"] * 2


def test_exposure_regret_counts_rows_on_a_worse_model_after_start():
    quality = {"old": 0.7, "new": 0.9}
    best = ["old"] * 4 + ["new"] * 4
    served = ["old"] * 6 + ["new"] * 2
    worse, weighted, gap = learning.exposure_regret(served, quality, best, start=2)
    assert worse.tolist() == [False, False, True, True, False, False]
    assert weighted == pytest.approx(0.4)
    assert gap.tolist() == pytest.approx([0, 0, 0.2, 0.2, 0, 0])


def system(labels: int = 20, on_graduation: str = "explore") -> learning.System:
    spec = learning.ShadowFirst(labels=labels, on_graduation=on_graduation)
    policy = learning.with_shadow_first(learning.load_policy_file(learning.POLICY_FILE), spec)
    y = np.array([1, 0, 1, 0])
    stream = learning.Stream(rows=[[]] * 4, y=y, X=np.zeros((4, 1)), drift_at=0)
    s = learning.System(policy, {}, stream, Path("/nonexistent"), np.random.default_rng(0))
    s.dynamic["c"] = {"name": "c", "path": "c.ubj", "sha256": "0", "added_at": 1.0, "role": "shadow", "shadow_first": True}
    s.meta.update({"status": "promoted", "champion": "xgb", "started_at": "0"})
    return s


def test_paired_counts_as_reward_lua():
    s = system()
    s.preds["c"] = np.array([1, 1, 0, 0])  # right, wrong, wrong, right
    s.shadow_answers = {j: ("c",) for j in range(4)}
    for j, served_right in enumerate([False, True, True, True]):
        s._score_shadows(j, "xgb", served_right)
    assert s.paired == {("c", "xgb"): {"sw": 1, "lw": 2, "n": 4}}
    assert s.shadow_answers == {}
    assert s.shadow_rewards == {"c": [4, 2.0]}  # what it would have earned: right on 2 of 4


def test_graduation_goes_live_and_reopens_exploration():
    s = system()
    s.paired[("c", "xgb")] = {"sw": 30, "lw": 2, "n": 40}
    s._shadow_first(1000)
    assert json.loads(s.meta["roles"]) == {"c": "live"}
    assert s.meta["status"] == "exploring" and s.meta["challenger_at"] == repr(s.now(1000))
    assert s.live_at_row == {"c": 1000} and "c" in learning.allocation.live_arms(s.policy, s.meta)
    assert [e["action"] for e in s.events] == ["graduate"]


def test_a_graduate_takes_its_shadow_rewards_and_with_promote_the_title():
    s = system(on_graduation="promote")
    s.paired[("c", "xgb")] = {"sw": 30, "lw": 2, "n": 40}
    s.shadow_rewards["c"] = [40, 36.0]
    s._shadow_first(1000)
    assert s.arms["c"].rewards == 40 and s.arms["c"].reward_sum == 36.0 and s.shadow_rewards == {}
    assert s.meta["status"] == "promoted" and s.meta["champion"] == "c" and s.meta["previous_champion"] == "xgb"


def test_no_better_in_shadow_is_retired_and_waiting_does_nothing():
    s = system()
    s.paired[("c", "xgb")] = {"sw": 3, "lw": 3, "n": 19}
    s._shadow_first(1000)
    assert s.events == [] and "retired" not in s.meta
    s.paired[("c", "xgb")]["n"] = 20
    s._shadow_first(2000)
    assert json.loads(s.meta["retired"]) == ["c"] and s.retired_at_row == {"c": 2000}
    assert s.meta["status"] == "promoted"
