"""`gateway status` read in an 80- and a 120-column terminal: every table fits, no cell or header
is cut ("vari…"), and each variant's name, posterior and interval appear whole on one line."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from gateway.cli.status_view import interval_text, off_policy_tables, posterior_text, segments_tables, status_tables
from gateway.decisions.state import experiment_state
from gateway.policy import parse_policy
from gateway.store.snapshot import ArmCounts, Snapshot

STARTED = 1_700_000_000.0
# The names a real run reaches: the policy's, a holdout, and the retrainer's '<algorithm>-r<k>'.
NAMES = ("logreg", "xgb", "baseline", "xgboost-r1", "logistic_regression-r2")


def _policy(**extra):
    return parse_policy({
        "experiment": "churn",
        "features": [{"name": "tenure"}, {"name": "plan", "type": "categorical", "values": ["basic", "pro"]}],
        "variants": [{"name": n, "model": f"{n}.skops"} for n in NAMES],
        "holdout": {"variant": "baseline", "fraction": 0.05},
        "promotion": {"min_samples": 200},
        **extra,
    })


def _arms(scale: float = 1.0):
    return {
        "logreg": ArmCounts(rewards=1840, reward_sum=1350.0 * scale, requests=2012),
        "xgb": ArmCounts(rewards=9211, reward_sum=7702.0 * scale, requests=10450),
        "baseline": ArmCounts(rewards=512, reward_sum=301.0 * scale, requests=560),
        "xgboost-r1": ArmCounts(rewards=233, reward_sum=199.0 * scale, requests=260),
        "logistic_regression-r2": ArmCounts(rewards=87, reward_sum=61.0 * scale, requests=95),
    }


def bernoulli_state():
    meta = {"status": "promoted", "champion": "xgb", "started_at": repr(STARTED)}
    history = [{"at": STARTED + 60, "action": "promote", "variant": "xgb", "reason": "rule"}]
    state = experiment_state(_policy(), Snapshot(arms=_arms(), meta=meta), history)
    # What the monitor adds once labels and the decision log are in (both widen the table).
    state["kpis"] = {n: {"window": {"accuracy": 0.8731, "n": 1000}} for n in NAMES}
    state["corrected_means"] = {n: {"mean": 0.7712} for n in NAMES}
    return state


def gaussian_state():
    policy = _policy(reward={"type": "gaussian"})
    return experiment_state(policy, Snapshot(arms=_arms(scale=37.25), meta={"status": "exploring"}), [])


def contextual_state():
    state = bernoulli_state()
    state["segments"] = {
        f"plan={plan}": {
            "champion": "xgb" if plan == "pro" else None,
            "mode": "promoted" if plan == "pro" else "thompson",
            "shares": {"logreg": 0.1234, "xgb": 0.6543, "xgboost-r1": 0.1, "logistic_regression-r2": 0.1223},
            "rewards": {"logreg": 812, "xgb": 4410, "xgboost-r1": 120, "logistic_regression-r2": 40},
            "means": {"logreg": 0.71, "xgb": 0.83, "xgboost-r1": None, "logistic_regression-r2": 0.7},
        }
        for plan in ("basic", "pro", "enterprise")
    }
    return state


def render(width: int, tables) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(*tables(console))
    return console.export_text()


def assert_fits(text: str, width: int):
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= width, text


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("make_state", [bernoulli_state, gaussian_state], ids=["bernoulli", "gaussian"])
def test_status_fits_the_terminal_and_shows_every_figure_whole(width, make_state):
    state = make_state()
    text = render(width, lambda c: status_tables(c, state))
    assert_fits(text, width)
    for header in ("variant", "posterior", "mean", "95% interval", "P(best)", "exp. loss", "traffic", "requests", "rewards"):
        assert header in text, text
    for v in state["variants"]:
        assert v["name"] in text
        assert posterior_text(v["posterior"]) in text, (posterior_text(v["posterior"]), text)
        assert interval_text(v["credible_interval"]) in text, text
        assert f"{v['traffic_share']:.1%}" in text
    if make_state is bernoulli_state:
        assert "accuracy (window)" in text and "0.873 (n=1000)" in text and "IPS mean" in text
        assert "xgb *" in text and "baseline (holdout)" in text


def test_a_wide_terminal_gets_one_table_a_narrow_one_several():
    state = bernoulli_state()
    wide = Console(width=250, file=io.StringIO())
    narrow = Console(width=80, file=io.StringIO())
    assert len(status_tables(wide, state)) == 1
    assert len(status_tables(narrow, state)) > 1
    # The variant column comes first in every part, so each row can be read on its own.
    for table in status_tables(narrow, state):
        assert table.columns[0].header == "variant"


@pytest.mark.parametrize("width", [80, 120])
def test_segment_routing_fits_the_terminal(width):
    state = contextual_state()
    text = render(width, lambda c: segments_tables(c, state))
    assert_fits(text, width)
    for segment in state["segments"]:
        assert segment in text
    for name in ("logreg", "xgb", "xgboost-r1", "logistic_regression-r2"):
        assert name in text
    assert "65.4% (0.830, 4410)" in text


def test_off_policy_estimates_fit_80_columns():
    result = {
        "experiment": "churn", "target": {"logistic_regression-r2": 0.3, "xgb": 0.7}, "n": 12034, "max_weight": 31.2,
        "estimates": {k: {"estimator": k, "value": 0.7713, "ci_low": 0.7521, "ci_high": 0.7904, "stderr": 0.0098,
                          "ess": 10234.5} for k in ("ips", "snips", "dr")},
    }
    text = render(80, lambda c: off_policy_tables(c, result))
    assert_fits(text, 80)
    assert "[0.7521, 0.7904]" in text and "SNIPS" in text


@pytest.mark.parametrize("width", [80, 120])
def test_the_demos_live_table_fits_the_terminal(width):
    from gateway.cli.demo import _progress
    from gateway.sim.traffic import TrafficStats

    state = bernoulli_state()
    state["allocation"] = "thompson"
    text = render(width, lambda c: [_progress(c, state, TrafficStats(requests=13377, rewards_accepted=11883), 93.0)])
    assert_fits(text, width)
    for v in state["variants"]:
        assert v["name"] in text and interval_text(v["credible_interval"], ".3f") in text
