"""Paired comparison of two models on the same labelled rows (exact McNemar test)."""
from __future__ import annotations

from scipy.stats import binomtest


def mcnemar_p_value(wins: int, losses: int) -> float:
    """One-sided exact McNemar test: the probability of at least `wins` rows that only the
    challenger got right, among `wins + losses` discordant rows, if both were equally accurate."""
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)
