"""How a batch of rewards is cut into reward.lua calls (and a batch of shadow answers into
shadow.lua calls, by the same bounds): one call per experiment (its keys share one
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


def bounded_calls(rows: Sequence[int], items_per_call: int, rows_per_call: int) -> list[list[int]]:
    """Indices of items (each of `rows[i]` rows) cut, in order, into calls of at most
    `items_per_call` items and `rows_per_call` rows (an item of more rows goes alone)."""
    calls: list[list[int]] = []
    total = 0
    for i, n in enumerate(rows):
        if not calls or len(calls[-1]) >= items_per_call or total + n > rows_per_call:
            calls.append([])
            total = 0
        calls[-1].append(i)
        total += n
    return calls


def reward_calls(items: Sequence[RewardItem]) -> list[tuple[str, list[int]]]:
    """(experiment, indices of its items) per call, in the items' order within each experiment."""
    by_experiment: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_experiment.setdefault(it.experiment, []).append(i)
    return [(experiment, [ids[k] for k in call])
            for experiment, ids in by_experiment.items()
            for call in bounded_calls([label_rows(items[i].label) for i in ids], REWARDS_PER_CALL, LABEL_ROWS_PER_CALL)]
