"""The anytime-valid promotion test, written once against a :class:`~.family.PosteriorFamily`.

The family supplies the pairwise e-values ``E_ij`` against ``mu_i <= mu_j``;
here they become a test over ``k`` arms (arm ``i`` is declared best when
``min_{j != i} E_ij >= k / alpha``, a Bonferroni over the possible leaders; see
:mod:`.sequential`) and a decision that promotes only when the test and the
Bayesian gates of :func:`.promotion.decide` agree. :mod:`.sequential` (rewards
in [0, 1]) and :mod:`.gaussian` call these with their family.

Examples
--------
>>> from gateway.bandit.beta_family import BETA
>>> leader, log_e = verdict(BETA, ([6000, 6000], [600, 720]), alpha=0.05, tau2=0.004)
>>> int(leader), round(float(log_e), 2)
(1, 5.07)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import promotion
from .family import DEFAULT_DRAWS, PosteriorFamily, check_level, check_tau2, join_words, vector
from .promotion import INCONCLUSIVE, PROMOTE, Decision, PromotionRule, _num

__all__ = ["combine", "decide", "leader_evidence", "verdict"]


def _weakest(log_e: np.ndarray) -> np.ndarray:
    """Each arm's weakest evidence, ``min_{j != i} log E_ij`` (an arm against itself excluded)."""
    k = log_e.shape[-1]
    return np.where(np.eye(k, dtype=bool), np.inf, log_e).min(axis=-1)


def verdict(
    family: PosteriorFamily, stats: Sequence[ArrayLike], alpha: float, tau2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Which arm (if any) the test declares better than all others: ``(leader, log_e)``.

    ``stats`` are the family's per-arm statistics ``(n, s[, ss])`` of shape
    ``(..., k)``; ``leader`` is -1 where the test has not rejected, ``log_e`` is
    ``max_i min_{j != i} log E_ij``, rejecting at ``log(k / alpha)``.
    """
    a = check_level(alpha)
    log_e, _ = family.pairwise_log_e(stats, tau2)
    per_arm = _weakest(log_e)
    best = per_arm.argmax(axis=-1)
    stat = np.take_along_axis(per_arm, best[..., None], axis=-1)[..., 0]
    leader = np.where(stat >= math.log(log_e.shape[-1] / a), best, -1)
    return leader, stat


def decide(
    family: PosteriorFamily, names: Sequence[str], post: Sequence[ArrayLike], n_rewards: ArrayLike,
    sums: Sequence[ArrayLike], rule: PromotionRule, elapsed_s: float, alpha: float, tau2: float,
    draws: int = DEFAULT_DRAWS, rng: np.random.Generator | None = None,
) -> Decision:
    """Promote only when the anytime-valid test *and* the Bayesian gates agree on the arm.

    ``post`` holds the arrays of ``family.labels``; ``sums`` the per-arm
    reward sums ``family.sums`` names (e.g. sums and sums of squares) beside
    the counts ``n_rewards``. The Bayesian part is
    :func:`gateway.bandit.promotion.decide`, the sequential part
    ``family.pairwise_log_e`` with a Bonferroni over the arms; the pairs'
    statistic is recorded under ``family.stat_name``.
    """
    a_level = check_level(alpha)
    t2 = check_tau2(tau2)
    names = [str(x) for x in names]
    k = len(names)
    sum_vecs = [vector(x) for x in sums]
    for label, vec in zip(family.sums, sum_vecs):
        if vec is not None and vec.shape != (k,):
            raise ValueError(f"{label} has shape {vec.shape}, expected ({k},) to match names")
    # Raises only on programming errors (lengths, duplicate names); bad numbers
    # come back as an inconclusive decision with the usual evidence.
    bayes = promotion.decide(family, names, post, n_rewards, rule, elapsed_s, draws=draws, rng=rng)
    evidence = dict(bayes.evidence)
    seq: dict[str, Any] = {
        "method": family.method,
        "alpha": a_level,
        "tau2": t2,
        "threshold_log_e": math.log(k / a_level) if k >= 2 else None,
        "leader": None,
        "log_e": None,
        "p_value": None,
        "rejected": False,
        "pairs": {},
    }
    evidence["sequential"] = seq

    n = vector(n_rewards)
    vecs = [n, *sum_vecs]
    problem: str | None = None
    if k < 2:
        problem = f"need at least 2 arms to compare, got {k}"
    elif any(v is None or not np.all(np.isfinite(v)) for v in vecs):
        problem = f"non-finite or non-numeric {join_words(('rewards', *family.sum_words), 'or')}"
    else:
        problem = family.counter_problem(n, sum_vecs)
    if problem is None:
        log_e, stat = family.pairwise_log_e(vecs, t2)
        seq.update(leader_evidence(names, log_e, stat, family.stat_name, a_level))
    return combine(bayes, evidence, problem, a_level)


def leader_evidence(
    names: Sequence[str], log_e: np.ndarray, stat: np.ndarray, stat_name: str, alpha: float
) -> dict[str, Any]:
    """From the pairwise log e-values (row i: evidence that arm i beats arm j), the leader (the
    arm whose weakest pairwise evidence is strongest), its Bonferroni-combined always-valid
    p-value, whether it rejects at `alpha`, and each pair's statistic (`stat_name`) and log e."""
    k = len(names)
    per_arm = _weakest(log_e)
    best = int(np.argmax(per_arm))
    value = float(per_arm[best])
    return {
        "leader": names[best],
        "log_e": _num(value),
        "p_value": _num(min(1.0, math.exp(min(700.0, math.log(k) - value)))),
        "rejected": bool(value >= math.log(k / alpha)),
        "pairs": {
            names[j]: {stat_name: _num(stat[best, j]), "log_e": _num(log_e[best, j])} for j in range(k) if j != best
        },
    }


def combine(bayes: Decision, evidence: dict[str, Any], problem: str | None, alpha: float) -> Decision:
    """Promote only when the Bayesian gates passed and the sequential test (in
    ``evidence["sequential"]``) rejected for the same arm; otherwise say why not."""
    seq = evidence["sequential"]

    def inconclusive(reason: str) -> Decision:
        return Decision(INCONCLUSIVE, None, reason, evidence)

    if not bayes.promoted:
        extra = ""
        if problem is None and not seq["rejected"]:
            extra = f"; sequential test not significant either (p={seq['p_value']:.3g})"
        return inconclusive(bayes.reason + extra)
    if problem is not None:
        return inconclusive(f"sequential test not computable: {problem}")
    if not seq["rejected"]:
        return inconclusive(
            f"sequential test not significant: {seq['leader']!r} has always-valid "
            f"p={seq['p_value']:.4g} > alpha={alpha} "
            f"(log e {seq['log_e']:.3f} < {seq['threshold_log_e']:.3f})"
        )
    if seq["leader"] != bayes.variant:
        return inconclusive(
            f"sequential leader {seq['leader']!r} differs from the Bayesian candidate "
            f"{bayes.variant!r}"
        )
    return Decision(
        PROMOTE,
        bayes.variant,
        f"{bayes.reason}; always-valid p={seq['p_value']:.3g} <= alpha={alpha}",
        evidence,
    )
