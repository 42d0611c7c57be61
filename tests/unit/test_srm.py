"""Sample-ratio mismatch under changing weights (seeded; error rates stated)."""
from __future__ import annotations

import numpy as np

from gateway.bandit.srm import SRM_ALPHA, SrmTracker


def _run(rng, periods, share_of_b, served_share_of_b=None):
    """Each update announces the weights for the coming period, as the router does at a tick;
    the requests of that period are then served with them (or with a broken share)."""
    t = SrmTracker()
    counts = {"a": 0, "b": 0}
    w = share_of_b(0)
    t.update({"a": 1 - w, "b": w}, counts)
    for k in range(periods):
        n = 200
        b = rng.binomial(n, served_share_of_b(k) if served_share_of_b else w)
        counts = {"a": counts["a"] + n - b, "b": counts["b"] + b}
        w = share_of_b(k + 1)
        t.update({"a": 1 - w, "b": w}, counts)
    return t


def test_no_alarm_when_traffic_follows_changing_weights():
    # Under the null the p-value is uniform: P(alarm) = 0.001 per run; 50 seeded runs.
    alarms = 0
    for seed in range(50):
        t = _run(np.random.default_rng(seed), 60, lambda k: 0.5 if k < 20 else 0.1 + 0.01 * (k % 7))
        alarms += t.result()["mismatch"]
    assert alarms <= 1


def test_an_alarm_when_one_variant_silently_loses_traffic():
    t = _run(np.random.default_rng(3), 60, lambda k: 0.3, served_share_of_b=lambda k: 0.25)
    r = t.result()
    assert r["mismatch"] and r["p_value"] < SRM_ALPHA and r["observed"]["b"] < r["expected"]["b"]


def test_inconclusive_without_enough_traffic():
    t = SrmTracker()
    t.update({"a": 0.5, "b": 0.5}, {"a": 0, "b": 0})
    t.update({"a": 0.5, "b": 0.5}, {"a": 2, "b": 1})
    assert t.result()["p_value"] is None and not t.result()["mismatch"]
