"""How a batch of rewards is cut into reward.lua calls: one call per experiment (its keys share one
slot on a cluster) and chunk, the items of a call in their order, so a request rewarded twice in
a batch reads 'duplicate' the second time. Fewer calls cost the router less, but a call holds
Redis while other clients wait, so a chunk is bounded by items and by label rows (a labelled
item costs the script a few commands per row: ~6 ms for a label of 1,000 rows)."""
from __future__ import annotations

import json
from collections.abc import Sequence

from gateway.store.snapshot import RewardItem

# 30-40 us of Redis CPU an item in bench/growth.py's reward run: ~4 ms a call of one-row items.
REWARDS_PER_CALL = 100
LABEL_ROWS_PER_CALL = 1000


def label_rows(label: str) -> int:
    """Rows of a label as JSON (1 for a single value or none)."""
    if not label.startswith("["):
        return 1
    try:
        return max(1, len(json.loads(label)))
    except (ValueError, TypeError):
        return 1


def reward_calls(items: Sequence[RewardItem]) -> list[tuple[str, list[int]]]:
    """(experiment, indices of its items) per call, in the items' order within each experiment."""
    by_experiment: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_experiment.setdefault(it.experiment, []).append(i)
    calls: list[tuple[str, list[int]]] = []
    for experiment, ids in by_experiment.items():
        rows = 0
        for i in ids:
            n = label_rows(items[i].label)
            if not calls or calls[-1][0] != experiment or len(calls[-1][1]) >= REWARDS_PER_CALL \
                    or rows + n > LABEL_ROWS_PER_CALL:
                calls.append((experiment, []))
                rows = 0
            calls[-1][1].append(i)
            rows += n
    return calls
