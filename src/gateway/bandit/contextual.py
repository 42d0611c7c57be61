"""Contextual Thompson sampling over categorical segments: the pure core.

``algorithm: contextual_thompson`` with ``context: [feature names]`` routes every request by
the *segment* its context features put it in (e.g. ``plan=pro``): each segment x variant has
its own Beta posterior, shrunk toward the variant's overall posterior while the segment has
little data, and each segment's traffic shares are computed exactly as
:func:`gateway.decisions.allocation.allocate` computes the experiment's (uniform burn-in,
then probability matching, floored at ``min_weight``). Promotion becomes per segment
(:func:`.segment_promotion.segment_decisions`). Numeric context: :mod:`.linear_ts`. Segment
keys: :mod:`.segment_keys`.

Everything here is pure (numpy/scipy, no I/O) and takes plain counters, so the router and
``bench/contextual.py`` call the same functions.

Segment keys (:func:`segment_of`)
---------------------------------
``name=value`` pairs in the order of ``context``, joined by ``|``: ``plan=pro`` or
``plan=pro|region=eu``. Values are rendered with ``str()``; real numbers (bool excepted) as
``repr(float(x))``, so ``1``, ``1.0`` and ``np.int64(1)`` give the same key ``1.0``. The
characters ``%``, ``|`` and ``=`` in names and values are percent-escaped (``%25``, ``%7C``,
``%3D``), so every key is unambiguous and :func:`parse_segment` inverts it.

Shrinkage (:func:`shrunk_beta`)
-------------------------------
For variant ``i`` with overall counters ``(N_i, S_i)`` (all its rewards, in every segment)
and the segment's ``(n_i, s_i)``, the overall posterior mean
``m_i = (prior_alpha + S_i) / (prior_alpha + prior_beta + N_i)`` acts as a prior worth
``strength`` pseudo-rewards::

    a_i = m_i * strength + s_i,    b_i = (1 - m_i) * strength + (n_i - s_i)

A segment with no rewards has the variant's overall mean (with the spread of ``strength``
rewards); one with ``n_i >> strength`` has its own. This is the Beta-binomial hierarchical
model with the population mean plugged in (empirical Bayes). ``N_i`` includes the segment's
own rewards, so they enter twice, with a weight bounded by ``strength`` pseudo-rewards: the
store keeps overall counters anyway, and the alternative (leave the segment out) makes ``m_i``
jump as segments appear. ``strength`` may be one number or one per variant;
:func:`empirical_strength` estimates it per variant from how much the segments' rates differ
(method of moments: segments that agree pool strongly, segments that disagree barely).

Routing (:func:`segment_shares`)
--------------------------------
Per segment, :func:`gateway.decisions.allocation.allocate`'s rule on the segment's counters:
a variant with fewer than ``burn_in`` rewards *in the segment* gets the uniform share ``1/k``;
if all do, the segment is uniform (``burn_in``); otherwise the mature variants share the rest
by their probability to be best under the shrunk posteriors (20,000 seeded draws, so equal
counters give equal shares), floored at ``min_weight``. A segment with a champion sends it
everything (``promoted``). A segment never seen gets ``default``: the same rule on the overall
counters, which is today's non-contextual allocation. The shares are the routing
probabilities, so the logged propensity (the share the request was drawn with) is exact;
their Monte-Carlo error (at most ``0.5 / sqrt(draws)`` per share) only says how closely they
follow the posterior's P(best), not how well they are logged.

Promotion (:func:`.segment_promotion.segment_decisions`)
-------------------------------------
Each segment is judged on its own raw counters (no shrinkage: a segment's verdict rests on
its own evidence) by :func:`gateway.bandit.sequential.evaluate_sequential` at level
``alpha / m`` for ``m`` segments (Bonferroni), so the probability that *any* segment ever
promotes a variant that is not its best stays ``<= alpha`` (each segment's test is anytime
valid at ``alpha / m``; a union bound over the segments).

Examples
--------
>>> segment_of({"plan": "pro", "x": 3}, ["x", "plan"], ["plan"])
'plan=pro'
>>> segment_of([3, "a|b"], ["x", "plan"], ["plan", "x"])
'plan=a%7Cb|x=3.0'
>>> parse_segment('plan=a%7Cb|x=3.0')
{'plan': 'a|b', 'x': '3.0'}
>>> a, b = shrunk_beta(1, 1, [100, 100], [90, 50], [0, 1000], [0, 800], strength=20)
>>> (a / (a + b)).round(3).tolist()  # no segment data: overall mean; much: its own
[0.892, 0.794]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike

from . import beta as _beta
from .family import DEFAULT_DRAWS
from .selection import apply_floor, choose
from .segment_keys import parse_segment, segment_of

__all__ = [
    "DEFAULT_STRENGTH",
    "SegmentAllocation",
    "empirical_strength",
    "parse_segment",
    "segment_of",
    "segment_shares",
    "shrunk_beta",
]

DEFAULT_STRENGTH = 20.0


# --------------------------------------------------------------------------- posteriors


def _counts(n: ArrayLike, s: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    n_arr = np.asarray(n, dtype=float)
    s_arr = np.asarray(s, dtype=float)
    if n_arr.shape != s_arr.shape:
        raise ValueError(f"{what}: n and s shapes differ: {n_arr.shape} vs {s_arr.shape}")
    if not (np.all(np.isfinite(n_arr)) and np.all(np.isfinite(s_arr))):
        raise ValueError(f"{what}: counters must be finite")
    # Relative slack as in BetaFamily.counter_problem: float sums of fractional rewards drift.
    if np.any(n_arr < 0) or np.any(s_arr < -1e-9 * np.maximum(n_arr, 1.0)) or np.any(
        s_arr > n_arr * (1.0 + 1e-9) + 1e-9
    ):
        raise ValueError(f"{what}: need n >= s >= 0 for every variant")
    return n_arr, np.clip(s_arr, 0.0, n_arr)


def _check_prior(prior_alpha: float, prior_beta: float) -> tuple[float, float]:
    pa, pb = float(prior_alpha), float(prior_beta)
    if not (math.isfinite(pa) and math.isfinite(pb) and pa > 0 and pb > 0):
        raise ValueError(f"prior must be finite and > 0, got ({prior_alpha}, {prior_beta})")
    return pa, pb


def shrunk_beta(
    prior_alpha: float,
    prior_beta: float,
    overall_n: ArrayLike,
    overall_s: ArrayLike,
    seg_n: ArrayLike,
    seg_s: ArrayLike,
    strength: float | ArrayLike = DEFAULT_STRENGTH,
) -> tuple[np.ndarray, np.ndarray]:
    """Each variant's segment posterior ``Beta(a, b)``, shrunk toward its overall posterior mean.

    ``m = (prior_alpha + overall_s) / (prior_alpha + prior_beta + overall_n)``,
    ``a = m * strength + seg_s``, ``b = (1 - m) * strength + seg_n - seg_s`` (module
    docstring). Arrays broadcast (shape ``(k,)`` per segment, or any leading axes such as
    ``(seeds, segments, k)``); ``strength`` is finite and > 0, one value or one per variant.

    Examples
    --------
    >>> a, b = shrunk_beta(1, 1, [8], [6], [0], [0], strength=10)  # no segment data: overall mean
    >>> a.round(9).tolist(), b.round(9).tolist()
    ([7.0], [3.0])
    """
    pa, pb = _check_prior(prior_alpha, prior_beta)
    on, os_ = _counts(overall_n, overall_s, "overall")
    sn, ss = _counts(seg_n, seg_s, "segment")
    w = np.asarray(strength, dtype=float)
    if not (np.all(np.isfinite(w)) and np.all(w > 0)):
        raise ValueError(f"strength must be finite and > 0, got {strength}")
    m = (pa + os_) / (pa + pb + on)
    return m * w + ss, (1.0 - m) * w + (sn - ss)


def empirical_strength(
    seg_n: ArrayLike,
    seg_s: ArrayLike,
    min_strength: float = 1.0,
    max_strength: float = 1000.0,
) -> np.ndarray:
    """Per variant, the Beta-binomial concentration ``kappa`` that fits the segments' spread.

    ``seg_n``, ``seg_s`` have shape ``(..., segments, k)``; the result ``(..., k)``. Under
    ``p_j ~ Beta(m kappa, (1 - m) kappa)`` the segment rates have variance
    ``m (1 - m) / (kappa + 1)``; the between-segment variance ``V`` is estimated by the method
    of moments (the traffic-weighted variance of the observed rates ``s_j / n_j`` around the
    pooled rate ``m``, less its expected sampling part, divided by ``1 - sum w_j^2``), and
    ``kappa = m (1 - m) / V - 1``, clipped to ``[min_strength, max_strength]``. No
    measurable spread (``V <= 0``, fewer than two segments with rewards) gives
    ``max_strength``: pool. Use it as ``strength`` for :func:`shrunk_beta`.

    >>> empirical_strength([[500, 500], [500, 500]], [[450, 250], [250, 260]]).round(1).tolist()
    [1.6, 1000.0]
    """
    n, s = _counts(seg_n, seg_s, "segment")
    if n.ndim < 2:
        raise ValueError(f"seg_n must have shape (..., segments, k), got {n.shape}")
    lo, hi = float(min_strength), float(max_strength)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"need 0 < min_strength <= max_strength, got {min_strength}, {max_strength}")
    seen = n > 0
    total = n.sum(axis=-2)
    safe_total = np.where(total > 0, total, 1.0)
    m = s.sum(axis=-2) / safe_total
    var_p = m * (1.0 - m)
    safe_n = np.where(seen, n, 1.0)
    rates = s / safe_n
    w = n / safe_total[..., None, :]
    observed = (w * (rates - m[..., None, :]) ** 2).sum(axis=-2)
    # E[observed] = V (1 - sum w^2) + sum w (1 - w) var_p / n_j (the weighted estimator's bias).
    sampling = (np.where(seen, w * (1.0 - w) / safe_n, 0.0)).sum(axis=-2) * var_p
    denom = np.maximum(1.0 - (w * w).sum(axis=-2), 1e-12)
    between = (observed - sampling) / denom
    ok = (seen.sum(axis=-2) >= 2) & (var_p > 0) & (between > 0)
    kappa = var_p / np.where(ok, between, 1.0) - 1.0
    return np.where(ok, np.clip(kappa, lo, hi), hi)


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class SegmentAllocation:
    """Traffic shares per segment (``shares[segment][variant]``, each summing to 1), how each was
    decided (``modes``: burn_in | burn_in_challenger | contextual_thompson | promoted), and the
    allocation of a segment not seen yet (``default``: the overall, non-contextual one)."""

    names: tuple[str, ...]
    shares: dict[str, dict[str, float]]
    modes: dict[str, str]
    default: dict[str, float]
    default_mode: str

    def for_segment(self, segment: str) -> dict[str, float]:
        return self.shares.get(segment, self.default)

    def promoted(self, segment: str, champion: str) -> SegmentAllocation:
        """This allocation with ``segment`` sent whole to its ``champion``."""
        return replace(self, shares={**self.shares, segment: _all_to(self.names, champion)},
                       modes={**self.modes, segment: "promoted"})

    def pick(self, segment: str, u: float) -> tuple[str, float]:
        """The variant for a uniform ``u`` in [0, 1) and its propensity (its share, exactly)."""
        shares = self.for_segment(segment)
        weights = [shares[v] for v in self.names]
        i = choose(weights, u)
        return self.names[i], float(weights[i])


def _all_to(names: Sequence[str], champion: str) -> dict[str, float]:
    return {v: float(v == champion) for v in names}


def _shares(
    a: np.ndarray, b: np.ndarray, n: np.ndarray, *, min_weight: float, burn_in: float,
    draws: int, rng: np.random.Generator | None, mode: str,
) -> tuple[np.ndarray, str]:
    """allocate()'s rule on one segment: young arms 1/k, the rest by P(best), floored."""
    k = n.size
    young = n < burn_in
    if young.all():
        return np.full(k, 1.0 / k), "burn_in"
    mature = np.flatnonzero(~young)
    uniform = 1.0 / k
    rest = 1.0 - uniform * int(young.sum())
    out = np.full(k, uniform)
    if mature.size == 1:
        out[mature] = rest
    else:
        pb = _beta.prob_best(a[mature], b[mature], draws=draws, rng=rng)
        floor = min(min_weight / rest, 1.0 / mature.size)
        out[mature] = rest * apply_floor(pb, floor)
    return out, (mode if not young.any() else "burn_in_challenger")


def segment_shares(
    names: Sequence[str],
    overall: tuple[ArrayLike, ArrayLike],
    segments: Mapping[str, tuple[ArrayLike, ArrayLike]],
    *,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
    min_weight: float = 0.01,
    burn_in: int = 200,
    strength: float | ArrayLike | str = DEFAULT_STRENGTH,
    champions: Mapping[str, str] | None = None,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> SegmentAllocation:
    """Traffic shares of every seen segment, and the default for unseen ones.

    Parameters
    ----------
    names : sequence of str
        The live variants (``k``), in the order of every counter array.
    overall : (n, s)
        Each variant's rewards and reward sum over all segments, shape ``(k,)``.
    segments : mapping segment -> (n, s)
        The same per segment (zeros for a variant the segment has not rewarded yet).
    prior_alpha, prior_beta : float
        The policy's Beta prior.
    min_weight : float
        Floor of every share while a segment explores (as the policy's ``min_weight``).
    burn_in : int
        Rewards a variant needs *in a segment* before the segment's posteriors route it
        (uniform ``1/k`` until then, as :func:`~gateway.decisions.allocation.allocate`);
        the default allocation applies it to the overall counters. 0: shrinkage alone
        carries a young segment.
    strength : float, array of shape (k,), or "auto"
        Pseudo-rewards of the overall posterior in each segment's prior (:func:`shrunk_beta`);
        "auto": :func:`empirical_strength` of the segments' counters.
    champions : mapping segment -> variant, optional
        Segments already promoted: their champion takes all their traffic.
    draws, rng
        Monte-Carlo P(best); ``rng=None`` gives each segment a fresh ``default_rng(0)``, so
        equal counters give byte-identical shares (as the non-contextual allocation).

    Returns
    -------
    SegmentAllocation
        ``shares[segment][variant]`` sums to 1 per segment; ``default`` is what
        :func:`~gateway.decisions.allocation.allocate` gives for the overall counters (plain
        Thompson, no holdout: the caller mixes a holdout in as it does today).

    Examples
    --------
    >>> alloc = segment_shares(["a", "b"], ([400, 400], [300, 300]),
    ...                        {"plan=x": ([200, 200], [180, 120]), "plan=y": ([200, 200], [120, 180])})
    >>> alloc.shares["plan=x"], alloc.shares["plan=y"]["b"], alloc.modes["plan=y"]
    ({'a': 0.99, 'b': 0.01}, 0.99, 'contextual_thompson')
    >>> alloc.default_mode, round(sum(alloc.default.values()), 12)
    ('thompson', 1.0)
    """
    names = tuple(str(v) for v in names)
    k = len(names)
    if k < 1 or len(set(names)) != k:
        raise ValueError(f"names must be unique and non-empty, got {list(names)}")
    pa, pb = _check_prior(prior_alpha, prior_beta)
    mw = float(min_weight)
    if not (math.isfinite(mw) and 0 <= mw and mw * k <= 1.0 + 1e-12):
        raise ValueError(f"min_weight {min_weight} is impossible for {k} variants")
    if not (burn_in >= 0):
        raise ValueError(f"burn_in must be >= 0, got {burn_in}")
    on, os_ = _counts(*overall, what="overall")
    if on.shape != (k,):
        raise ValueError(f"overall counters have shape {on.shape}, expected ({k},)")
    seg = {}
    for key, (n, s) in segments.items():
        sn, ss = _counts(n, s, what=f"segment {key!r}")
        if sn.shape != (k,):
            raise ValueError(f"segment {key!r} counters have shape {sn.shape}, expected ({k},)")
        seg[str(key)] = (sn, ss)
    champions = dict(champions or {})
    for key, v in champions.items():
        if v not in names:
            raise ValueError(f"champion {v!r} of segment {key!r} is not one of {list(names)}")
    if isinstance(strength, str):
        if strength != "auto":
            raise ValueError(f"strength must be a number, per-variant numbers or 'auto', got {strength!r}")
        if seg:
            keys = sorted(seg)
            w: np.ndarray | float = empirical_strength([seg[c][0] for c in keys], [seg[c][1] for c in keys])
        else:
            w = DEFAULT_STRENGTH
    else:
        w = np.asarray(strength, dtype=float)

    a0, b0 = _beta.posterior(pa, pb, on, os_)
    default, default_mode = _shares(a0, b0, on, min_weight=mw, burn_in=burn_in, draws=draws, rng=rng,
                                    mode="thompson")
    shares: dict[str, dict[str, float]] = {}
    modes: dict[str, str] = {}
    for key in sorted(seg):  # a fixed order, so a shared rng is consumed reproducibly
        sn, ss = seg[key]
        if key in champions:
            shares[key] = _all_to(names, champions[key])
            modes[key] = "promoted"
            continue
        a, b = shrunk_beta(pa, pb, on, os_, sn, ss, w)
        x, mode = _shares(a, b, sn, min_weight=mw, burn_in=burn_in, draws=draws, rng=rng,
                          mode="contextual_thompson")
        shares[key] = dict(zip(names, map(float, x)))
        modes[key] = mode
    return SegmentAllocation(names, shares, modes, dict(zip(names, map(float, default))), default_mode)

