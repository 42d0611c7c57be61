"""Sample-ratio mismatch with weights that change over time: the expected count of a variant
is the sum over periods of (its traffic share in that period x the requests of that period),
and a chi-square test compares it with what was served. A mismatch means assignment or
logging is broken (a variant failing silently, a sticky-unit skew, lost records), which makes
every comparison between variants suspect."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

# The usual alarm level for SRM: far below the tests' alpha, since a false alarm is costly.
SRM_ALPHA = 0.001
# Fewer expected requests than this in some variant make the chi-square approximation poor.
MIN_EXPECTED = 5.0


@dataclass
class SrmTracker:
    """Accumulates expected and observed counts from successive (shares, request counters)."""

    expected: dict[str, float] = field(default_factory=dict)
    observed: dict[str, float] = field(default_factory=dict)
    _last: dict[str, int] | None = None
    _shares: dict[str, float] | None = None

    def update(self, shares: Mapping[str, float], requests: Mapping[str, int]) -> None:
        """`shares`: the weights in force since the previous update; `requests`: cumulative
        requests per variant now."""
        if self._last is not None and self._shares is not None:
            served = {v: requests.get(v, 0) - self._last.get(v, 0) for v in set(requests) | set(self._last)}
            total = sum(max(0, d) for d in served.values())
            for v, w in self._shares.items():
                self.expected[v] = self.expected.get(v, 0.0) + w * total
            for v, d in served.items():
                self.observed[v] = self.observed.get(v, 0.0) + max(0, d)
        self._last = dict(requests)
        self._shares = dict(shares)

    def result(self) -> dict:
        names = sorted(v for v in set(self.expected) | set(self.observed) if self.expected.get(v, 0.0) > 0)
        exp = np.array([self.expected.get(v, 0.0) for v in names])
        obs = np.array([self.observed.get(v, 0.0) for v in names])
        out = {"expected": dict(zip(names, exp.round(1).tolist())), "observed": dict(zip(names, obs.tolist())),
               "p_value": None, "mismatch": False}
        if len(names) < 2 or exp.min() < MIN_EXPECTED or obs.sum() == 0:
            return out
        exp = exp * obs.sum() / exp.sum()  # same totals: the test is about proportions
        p = float(stats.chisquare(obs, exp).pvalue)
        return {**out, "p_value": p, "mismatch": p < SRM_ALPHA}
