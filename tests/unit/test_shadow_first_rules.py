"""Unit tests for shadow first's two policy rules: where a shadow earns rewards it takes live,
and where a graduate is promoted."""
from __future__ import annotations

import json

import pytest

from gateway.dataplane.runtime import Experiments
from gateway.decisions.shadow_first import credits_shadow_rewards, promotes_on_graduation
from gateway.policy import parse_policy

BASE = {
    "experiment": "exp",
    "features": [{"name": "x"}, {"name": "plan", "type": "categorical", "values": ["a", "b"], "missing": "error"}],
    "variants": [{"name": "a", "model": "a.skops"}, {"name": "b", "model": "b.skops"}],
    "retrain": {"shadow_first": {"labels": 100}},
}


def policy(**changes):
    return parse_policy({**BASE, **changes}, "test")


@pytest.mark.parametrize("changes, earns", [
    ({}, True),
    ({"algorithm": "top_two_thompson"}, True),
    # A default reward fills the live arms with requests a shadow never sees scored.
    ({"reward": {"default": 0.0}}, False),
    ({"algorithm": "discounted_thompson"}, False),
    ({"algorithm": "contextual_thompson", "context": ["plan"]}, False),
    ({"variance_reduction": {"covariate": "x"}}, False),
])
def test_shadows_earn_rewards_only_where_they_compare_with_the_live_arms(changes, earns):
    p = policy(**changes)
    assert credits_shadow_rewards(p) is earns
    # The reward script is told so through the experiment's reward rules.
    assert Experiments.build({"exp": p}, {"exp": {}}).reward_rules()["exp"].shadows_earn is earns


def test_a_graduate_is_promoted_by_default_unless_a_guardrail_rolled_it_back():
    p = policy()
    assert promotes_on_graduation(p, {}, "b")
    assert not promotes_on_graduation(p, {"guardrail_blocked": json.dumps(["b"])}, "b")
    explore = policy(retrain={"shadow_first": {"labels": 100, "on_graduation": "explore"}})
    assert not promotes_on_graduation(explore, {}, "b")
    # With context routing there is no single champion to crown: it explores.
    contextual = policy(algorithm="contextual_thompson", context=["plan"])
    assert not promotes_on_graduation(contextual, {}, "b")
