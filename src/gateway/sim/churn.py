"""A seeded synthetic churn data set for the default policy's experiment "churn".

Features, in order: tenure (months 0..72), monthly_charges (20..120), support_calls (integer
0..10), plan (basic | pro | enterprise). The labelling rules are deliberately non-linear
(XOR-like interactions and thresholds) so that tree ensembles clearly beat a linear model, and
a little label noise keeps every model below 100%.

`concept` picks the labelling rule: concept 0 is the default world; concept 1 is a drifted world
in which the old rule is markedly wrong (for drift demos).
"""
from __future__ import annotations

import numpy as np

PLANS = ("basic", "pro", "enterprise")

FEATURES: list[dict] = [
    {"name": "tenure", "type": "numeric"},
    {"name": "monthly_charges", "type": "numeric"},
    {"name": "support_calls", "type": "numeric"},
    {"name": "plan", "type": "categorical", "values": list(PLANS)},
]

CONCEPTS = (0, 1)
LABEL_NOISE = 0.04


def _price_sensitive(tenure: np.ndarray, charges: np.ndarray) -> np.ndarray:
    # A linear part every model can learn: the higher the bill relative to loyalty, the likelier.
    return charges - 0.9 * tenure > 45


def _concept0(tenure: np.ndarray, charges: np.ndarray, calls: np.ndarray, plan: np.ndarray) -> np.ndarray:
    # Basic-plan customers are simply price sensitive.
    linear = _price_sensitive(tenure, charges)
    # Everyone else follows an XOR of two thresholds, which no linear model can represent:
    # new customers on expensive contracts churn, and so do long-standing ones on cheap contracts
    # (they shop around) -- inverted on enterprise contracts.
    xor = (tenure < 24) ^ (charges < 60)
    xor = np.where(plan == 2, ~xor, xor)
    churn = np.where(plan == 0, linear, xor)
    # Many support calls tip anyone over, except on the pro plan where they are expected.
    return np.where((calls >= 7) & (plan != 1), True, churn)


def _concept1(tenure: np.ndarray, charges: np.ndarray, calls: np.ndarray, plan: np.ndarray) -> np.ndarray:
    # The drifted world: basic-plan customers behave as before, but for everyone else price no
    # longer matters -- service quality does, flipped for long-standing customers.
    linear = _price_sensitive(tenure, charges)
    xor = (calls >= 3) ^ (tenure > 40)
    return np.where(plan == 0, linear, xor)


def make_churn(n: int, seed: int, concept: int = 0) -> tuple[list[list], np.ndarray]:
    """`n` rows (lists in FEATURES order: floats, then the plan as a string) and int 0/1 labels."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if concept not in CONCEPTS:
        raise ValueError(f"concept must be one of {list(CONCEPTS)}, got {concept}")
    rng = np.random.default_rng(seed)
    tenure = np.round(rng.uniform(0, 72, n), 1)
    charges = np.round(rng.uniform(20, 120, n), 2)
    calls = np.minimum(rng.poisson(3.0, n), 10).astype(np.float64)
    plan = rng.choice(len(PLANS), size=n, p=[0.45, 0.35, 0.20])
    rule = _concept0 if concept == 0 else _concept1
    churn = rule(tenure, charges, calls, plan)
    flip = rng.random(n) < LABEL_NOISE
    y = (churn ^ flip).astype(np.int64)
    rows = [
        [float(t), float(c), float(k), PLANS[p]]
        for t, c, k, p in zip(tenure.tolist(), charges.tolist(), calls.tolist(), plan.tolist(), strict=True)
    ]
    return rows, y
