"""The circuit breaker and the guardrail verdicts, with an injected clock."""
from __future__ import annotations

import json

from gateway.decisions import allocation
from gateway.decisions.guardrails import BREAKER_COOLDOWN_S, BREAKER_FAILURES, MIN_REQUESTS, VariantHealth, breach, renormalise
from gateway.policy import Guardrails, parse_policy
from gateway.store.snapshot import ArmCounts

RAILS = Guardrails(max_error_rate=0.05, max_p99_latency_ms=200)


def test_the_breaker_opens_after_consecutive_failures_and_allows_one_trial_after_cooldown():
    h = VariantHealth()
    for i in range(BREAKER_FAILURES - 1):
        h.record(False, 0.01, now=i)
        assert h.available(now=i)
    h.record(False, 0.01, now=10.0)
    assert not h.available(now=10.0) and not h.available(now=10.0 + BREAKER_COOLDOWN_S - 0.1)
    t = 10.0 + BREAKER_COOLDOWN_S
    assert h.available(now=t)
    h.begin_call(now=t)
    assert not h.available(now=t)  # one trial at a time
    h.record(True, 0.01, now=t)
    assert h.available(now=t) and not h.breaker_open


def test_a_success_resets_the_failure_streak():
    h = VariantHealth()
    for i in range(BREAKER_FAILURES - 1):
        h.record(False, 0.01, now=0)
    h.record(True, 0.01, now=0)
    h.record(False, 0.01, now=0)
    assert h.available(now=0)


def test_guardrails_wait_for_evidence_then_judge_error_rate_and_p99():
    h = VariantHealth()
    for _ in range(MIN_REQUESTS - 1):
        h.record(True, 0.5, now=0)  # slow, but too few requests to judge
    assert breach(h, RAILS) is None
    h.record(True, 0.5, now=0)
    assert "p99 latency" in breach(h, RAILS)
    fast = VariantHealth()
    for i in range(100):
        fast.record(i % 10 != 0, 0.001, now=0)  # 10% errors, never 5 in a row
    assert "error rate 0.100" in breach(fast, RAILS)
    healthy = VariantHealth()
    for _ in range(100):
        healthy.record(True, 0.001, now=0)
    assert breach(healthy, RAILS) is None


def test_renormalise_keeps_propensities_true_and_falls_back_to_uniform():
    assert renormalise({"a": 0.5, "b": 0.3, "c": 0.2}, {"b", "c"}) == {"b": 0.6, "c": 0.4}
    assert renormalise({"a": 1.0, "b": 0.0, "c": 0.0}, {"b", "c"}) == {"b": 0.5, "c": 0.5}
    assert renormalise({"a": 1.0}, set()) == {}


def test_a_variant_rolled_back_by_a_guardrail_is_not_promoted_again_by_the_rule():
    policy = parse_policy({
        "experiment": "e", "features": [{"name": "x"}],
        "promotion": {"min_samples": 50, "prob_best": 0.95, "max_expected_loss": 0.01},
        "variants": [{"name": "a", "model": "a.skops"}, {"name": "b", "model": "b.skops"}],
    })
    arms = {"a": ArmCounts(rewards=500, reward_sum=450), "b": ArmCounts(rewards=500, reward_sum=150)}
    assert allocation.promotion_decision(policy, arms, {"status": "exploring", "started_at": "0"}, 10).variant == "a"
    blocked = {"status": "exploring", "started_at": "0", "guardrail_blocked": json.dumps(["a"])}
    decision = allocation.promotion_decision(policy, arms, blocked, 10)
    assert decision.outcome == "inconclusive" and "guardrail" in decision.reason


def test_a_half_open_trial_that_ends_without_a_verdict_lets_the_next_call_try():
    health = VariantHealth()
    for _ in range(BREAKER_FAILURES):
        health.record(False, 0.01, now=0.0)
    after_cooldown = BREAKER_COOLDOWN_S + 1
    assert health.available(after_cooldown)
    health.begin_call(after_cooldown)
    assert not health.available(after_cooldown)  # one trial at a time
    health.abandon_trial()  # overloaded or cancelled: no evidence either way
    assert health.available(after_cooldown) and health.breaker_open
