"""Decisions from a snapshot of counters and a policy, with no I/O: traffic shares, promotion
and the arms to retire (allocation.py), breakers and guardrail breaches (guardrails.py), the
state body an experiment shows (state.py). The data plane and the benchmarks call the same ones."""
