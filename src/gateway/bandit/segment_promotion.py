"""Per-segment promotion of contextual routing: each segment judged on its own counters by the
anytime-valid test at a Bonferroni level (see gateway.bandit.contextual)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from . import beta as _beta
from .contextual import _check_prior
from .family import DEFAULT_DRAWS, check_level
from .promotion import Decision, PromotionRule
from .sequential import DEFAULT_ALPHA, DEFAULT_TAU2, evaluate_sequential


def segment_level(alpha: float, n_segments: int) -> float:
    """Each segment's test level for a family-wise level ``alpha`` over ``n_segments``: Bonferroni.

    >>> segment_level(0.05, 3)
    0.016666666666666666
    """
    a = check_level(alpha)
    m = int(n_segments)
    if m < 1 or m != n_segments:
        raise ValueError(f"n_segments must be a positive integer, got {n_segments}")
    return a / m


def segment_decisions(
    names: Sequence[str],
    segments: Mapping[str, tuple[ArrayLike, ArrayLike]],
    rule: PromotionRule,
    elapsed_s: float,
    *,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
    alpha: float = DEFAULT_ALPHA,
    tau2: float = DEFAULT_TAU2,
    n_segments: int | None = None,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> dict[str, Decision]:
    """Per segment, the promotion decision of :func:`~gateway.bandit.sequential.evaluate_sequential`.

    Each segment is judged on its own raw counters ``(n, s)`` (Beta posteriors from the prior
    and those counters only, no shrinkage) by the anytime-valid mSPRT *and* the Bayesian gates
    of ``rule``, at level ``alpha / n_segments``: a Bonferroni correction, so the family-wise
    error, the probability that any segment ever promotes a variant that is not that
    segment's best, stays ``<= alpha``. ``n_segments`` is the number of segments the
    correction covers; it defaults to ``len(segments)``, but the guarantee needs it fixed in
    advance (e.g. the product of the context features' declared values): counting only the
    segments seen so far makes early looks too lenient if more segments appear later. A
    segment already promoted should not be passed again (promotion is absorbing).

    Each decision's evidence gains ``"segment": {key, family_alpha, n_segments, level,
    correction}``.

    Raises
    ------
    ValueError
        ``n_segments`` smaller than the number of segments given, or the programming errors
        of ``evaluate_sequential`` (mismatched lengths, duplicate names, alpha/tau2 range).

    Examples
    --------
    >>> rule = PromotionRule(prob_best=0.95, max_expected_loss=0.0025, min_samples=200)
    >>> d = segment_decisions(["a", "b"], {"plan=x": ([6000, 6000], [5400, 5100]),
    ...                                    "plan=y": ([300, 300], [150, 150])}, rule, 0.0)
    >>> d["plan=x"].variant, d["plan=y"].outcome, round(d["plan=x"].evidence["segment"]["level"], 4)
    ('a', 'inconclusive', 0.025)
    """
    pa, pb = _check_prior(prior_alpha, prior_beta)
    if not segments:
        return {}
    m = len(segments) if n_segments is None else int(n_segments)
    if n_segments is not None and m != n_segments:
        raise ValueError(f"n_segments must be an integer, got {n_segments}")
    if m < max(1, len(segments)):
        raise ValueError(f"n_segments ({m}) is smaller than the {len(segments)} segments given")
    level = segment_level(alpha, m)
    out: dict[str, Decision] = {}
    for key in sorted(segments):
        n, s = segments[key]
        n_arr = np.asarray(n, dtype=float)
        s_arr = np.asarray(s, dtype=float)
        try:
            a, b = _beta.posterior(pa, pb, n_arr, np.clip(s_arr, 0.0, np.maximum(n_arr, 0.0)))
        except ValueError:
            # Bad counters: evaluate_sequential answers inconclusive with the reason.
            a, b = np.full(n_arr.shape, np.nan), np.full(n_arr.shape, np.nan)
        d = evaluate_sequential(names, a, b, n_arr, s_arr, rule, elapsed_s, alpha=level, tau2=tau2,
                                draws=draws, rng=rng)
        evidence = dict(d.evidence)
        evidence["segment"] = {
            "key": key, "family_alpha": float(alpha), "n_segments": m, "level": level, "correction": "bonferroni",
        }
        out[key] = Decision(d.outcome, d.variant, d.reason, evidence)
    return out
