"""Automatic promotion decisions from the arms' posteriors, whatever their family.

An arm is promoted only when every gate passes: enough rewards on every arm,
enough wall-clock time, a high probability of being best and a small expected
loss. Anything else (including malformed input) is ``"inconclusive"`` with a
reason naming the failed condition; this function never raises on bad numbers
because it runs in a background loop whose job is to wait for better evidence.

Examples
--------
>>> from gateway.bandit.beta import posterior
>>> a, b = posterior(1, 1, n=[5000, 5000], s=[500, 700])
>>> rule = PromotionRule(prob_best=0.95, max_expected_loss=0.001, min_samples=1000)
>>> d = evaluate(["control", "candidate"], a, b, [5000, 5000], rule, elapsed_s=3600)
>>> d.outcome, d.variant
('promote', 'candidate')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .beta_family import BETA
from .family import DEFAULT_DRAWS, PosteriorFamily, join_words, vector

__all__ = ["INCONCLUSIVE", "PROMOTE", "Decision", "PromotionRule", "apply_gates", "decide", "evaluate"]

PROMOTE = "promote"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class PromotionRule:
    """Thresholds an arm must meet to be promoted.

    Parameters
    ----------
    prob_best : float
        Minimum posterior probability of being the best arm, in (0, 1].
    max_expected_loss : float
        Maximum expected loss (regret in reward units) of committing to the arm.
    min_samples : int
        Minimum rewards observed on *every* arm.
    min_duration_s : float
        Minimum experiment age in seconds (guards against time-of-day effects).
    """

    prob_best: float
    max_expected_loss: float
    min_samples: int
    min_duration_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.prob_best) and 0.0 < self.prob_best <= 1.0):
            raise ValueError(f"prob_best must be in (0, 1], got {self.prob_best}")
        if not (math.isfinite(self.max_expected_loss) and self.max_expected_loss >= 0.0):
            raise ValueError(f"max_expected_loss must be >= 0, got {self.max_expected_loss}")
        if int(self.min_samples) != self.min_samples or self.min_samples < 0:
            raise ValueError(f"min_samples must be a non-negative integer, got {self.min_samples}")
        if not (math.isfinite(self.min_duration_s) and self.min_duration_s >= 0.0):
            raise ValueError(f"min_duration_s must be >= 0, got {self.min_duration_s}")

    def as_dict(self) -> dict[str, float | int]:
        """Plain JSON-serialisable thresholds."""
        return {
            "prob_best": float(self.prob_best),
            "max_expected_loss": float(self.max_expected_loss),
            "min_samples": int(self.min_samples),
            "min_duration_s": float(self.min_duration_s),
        }


@dataclass(frozen=True)
class Decision:
    """Outcome of :func:`evaluate`.

    ``outcome`` is ``"promote"`` (with ``variant`` set) or ``"inconclusive"``
    (``variant`` None). ``evidence`` holds only JSON-serialisable plain values.
    """

    outcome: str
    variant: str | None
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.outcome == PROMOTE


def _num(x: Any) -> float | None:
    """Plain float, or None for NaN/inf (strict JSON has no NaN)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _count(x: Any) -> int | float | None:
    v = _num(x)
    if v is not None and v.is_integer():
        return int(v)
    return v


def evaluate(
    names: Sequence[str],
    alpha: ArrayLike,
    beta: ArrayLike,
    n_rewards: ArrayLike,
    rule: PromotionRule,
    elapsed_s: float,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> Decision:
    """Decide whether to promote the arm most likely to be best (Beta posteriors).

    The candidate is the arm with the highest ``prob_best`` (first on ties). It
    is promoted when every arm has ``n_rewards >= rule.min_samples``,
    ``elapsed_s >= rule.min_duration_s``, its ``prob_best >= rule.prob_best``
    and its ``expected_loss <= rule.max_expected_loss``. Both Monte-Carlo
    statistics come from one shared set of ``draws`` (``rng=None`` means a fresh
    ``default_rng(0)``, so the decision is reproducible).

    Parameters
    ----------
    names : sequence of str
        Variant names, one per arm, unique.
    alpha, beta : array_like, shape (k,)
        Posterior Beta parameters.
    n_rewards : array_like, shape (k,)
        Rewards observed per arm.
    rule : PromotionRule
    elapsed_s : float
        Experiment age in seconds.

    Returns
    -------
    Decision
        ``evidence`` = ``{"arms": {name: {alpha, beta, mean, prob_best,
        expected_loss, rewards}}, "rule": {...thresholds}, "elapsed_s", "draws",
        "candidate"}``; statistics that could not be computed are None.

    Raises
    ------
    ValueError
        Only for programming errors: mismatched lengths or duplicate names.
    """
    return decide(BETA, names, (alpha, beta), n_rewards, rule, elapsed_s, draws, rng)


def decide(
    family: PosteriorFamily, names: Sequence[str], post: Sequence[ArrayLike], n_rewards: ArrayLike,
    rule: PromotionRule, elapsed_s: float, draws: int = DEFAULT_DRAWS, rng: np.random.Generator | None = None,
) -> Decision:
    """:func:`evaluate` for any posterior family: ``post`` holds ``family.labels``' arrays.

    ``evidence["arms"][name]`` holds the posterior parameters by label, then
    ``mean, prob_best, expected_loss, rewards``. Never raises on bad numbers.

    Examples
    --------
    >>> from gateway.bandit.nig_family import NIG
    >>> post = NIG.update((0.0, 0.01, 1.0, 1.0), ([800, 800], [800.0, 960.0], [1600.0, 1952.0]))
    >>> rule = PromotionRule(prob_best=0.95, max_expected_loss=0.01, min_samples=500)
    >>> d = decide(NIG, ["a", "b"], post, [800, 800], rule, elapsed_s=60)
    >>> d.outcome, d.variant, list(d.evidence["arms"]["b"])[:5]
    ('promote', 'b', ['mu', 'kappa', 'alpha', 'beta', 'mean'])
    """
    names = [str(x) for x in names]
    k = len(names)
    if len(set(names)) != k:
        raise ValueError(f"variant names must be unique, got {names}")
    labels = family.labels
    if len(post) != len(labels):
        raise ValueError(f"post must be ({', '.join(labels)})")
    vecs = {label: vector(x) for label, x in zip(labels, post)}
    vecs["n_rewards"] = vector(n_rewards)
    for label, vec in vecs.items():
        if vec is not None and vec.shape != (k,):
            raise ValueError(f"{label} has shape {vec.shape}, expected ({k},) to match names")

    evidence: dict[str, Any] = {
        "arms": {},
        "rule": rule.as_dict(),
        "elapsed_s": _num(elapsed_s),
        "draws": int(draws),
        "candidate": None,
    }

    def arm_evidence(pb: np.ndarray | None = None, el: np.ndarray | None = None) -> None:
        n = vecs["n_rewards"]
        for i, name in enumerate(names):
            row = {lb: (_num(vecs[lb][i]) if vecs[lb] is not None else None) for lb in labels}
            row["mean"] = family.row_mean(row)
            row["prob_best"] = _num(pb[i]) if pb is not None else None
            row["expected_loss"] = _num(el[i]) if el is not None else None
            row["rewards"] = _count(n[i]) if n is not None else None
            evidence["arms"][name] = row

    def inconclusive(reason: str) -> Decision:
        arm_evidence()
        return Decision(INCONCLUSIVE, None, reason, evidence)

    # --- input sanity: nothing below may trust these numbers until checked
    bad = [label for label, vec in vecs.items() if vec is None or not np.all(np.isfinite(vec))]
    if _num(elapsed_s) is None:
        bad.append("elapsed_s")
    if bad:
        return inconclusive(f"non-finite or non-numeric input: {', '.join(bad)}")
    if any(np.any(vecs[lb] <= 0) for lb in family.positive):
        return inconclusive(f"invalid posterior: {join_words(family.positive)} must be > 0")
    n = vecs["n_rewards"]
    if np.any(n < 0):
        return inconclusive("invalid input: negative reward counts")
    if k < 2:
        return inconclusive(f"need at least 2 arms to compare, got {k}")

    pb, el = family.mc_stats(tuple(vecs[lb] for lb in labels), draws, rng)
    arm_evidence(pb, el)
    return apply_gates(names, n, pb, el, rule, float(elapsed_s), evidence)


def apply_gates(
    names: Sequence[str],
    n: np.ndarray,
    pb: np.ndarray,
    el: np.ndarray,
    rule: PromotionRule,
    elapsed_s: float,
    evidence: dict[str, Any],
) -> Decision:
    """The rule's gates on checked inputs (per-arm rewards `n`, probability to be best `pb` and
    expected loss `el`, whatever the reward model), in the order an operator would want them
    reported; records the candidate in `evidence`."""
    k = len(names)
    best = int(np.argmax(pb))
    cand = names[best]
    evidence["candidate"] = cand

    def inconclusive(reason: str) -> Decision:
        return Decision(INCONCLUSIVE, None, reason, evidence)

    short = [f"{names[i]}={_count(n[i])}" for i in range(k) if n[i] < rule.min_samples]
    if short:
        return inconclusive(
            f"too few samples: need >= {rule.min_samples} rewards per arm, have {', '.join(short)}"
        )
    if elapsed_s < rule.min_duration_s:
        return inconclusive(
            f"min duration not reached: elapsed {elapsed_s:.1f}s "
            f"< {rule.min_duration_s:.1f}s"
        )
    if pb[best] < rule.prob_best:
        return inconclusive(
            f"prob_best too low: best arm {cand!r} has prob_best {pb[best]:.4f} < {rule.prob_best}"
        )
    if el[best] > rule.max_expected_loss:
        return inconclusive(
            f"expected loss too high: {cand!r} has expected_loss {el[best]:.6g} "
            f"> {rule.max_expected_loss}"
        )
    return Decision(
        PROMOTE,
        cand,
        f"promote {cand!r}: prob_best {pb[best]:.4f} >= {rule.prob_best}, "
        f"expected_loss {el[best]:.6g} <= {rule.max_expected_loss}",
        evidence,
    )
