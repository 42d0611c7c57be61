"""Paired comparison of two models on the same labelled rows: only the rows where exactly one
of them is right (discordant) carry evidence. The exact McNemar test looks once; the e-values
may be looked at after every row (anytime-valid: the chance that one ever reaches 1/alpha while
the two are equally accurate is at most alpha, by Ville's inequality)."""
from __future__ import annotations

import math

from scipy.special import betainc, betaln
from scipy.stats import binomtest


def mcnemar_p_value(wins: int, losses: int) -> float:
    """One-sided exact McNemar test: the probability of at least `wins` rows that only the
    challenger got right, among `wins + losses` discordant rows, if both were equally accurate."""
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)


def log_e_values(wins: int, losses: int) -> tuple[float, float]:
    """Log e-values that the challenger is more accurate, and that it is less accurate: the
    likelihood ratio of its share p of the discordant rows against p = 1/2, mixed over p
    uniform on (1/2, 1] (and on [0, 1/2)). Each is a nonnegative supermartingale under its
    null (p <= 1/2, resp. p >= 1/2), so it can be checked after every label."""
    n = wins + losses
    base = (n + 1) * math.log(2.0) + float(betaln(wins + 1, losses + 1))
    below = float(betainc(wins + 1, losses + 1, 0.5))  # the mixture's mass on p < 1/2
    return base + math.log(max(1.0 - below, 1e-300)), base + math.log(max(below, 1e-300))
