"""The Redis key schema. Every key of one experiment carries the hash tag {experiment}, so
each Lua script touches a single slot and works on Redis Cluster too."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence


def arms(experiment: str) -> str:
    """Hash of per-variant counters: '<variant>:n' rewards, ':s' reward sum, ':ss' sum of
    squares, ':req' requests served."""
    return f"gw:{{{experiment}}}:arms"


def meta(experiment: str) -> str:
    """Hash: status, champion, previous champion, started_at, changed_at, frozen weights."""
    return f"gw:{{{experiment}}}:meta"


def history(experiment: str) -> str:
    """List of JSON decisions (promotions, rollbacks, pauses) in time order."""
    return f"gw:{{{experiment}}}:history"


def request(experiment: str, request_id: str) -> str:
    """Hash for one served prediction until its reward window ends."""
    return request_prefix(experiment) + request_id


def decision_log(experiment: str) -> str:
    """Stream of served predictions (bounded), for the retrainer and audits."""
    return f"gw:{{{experiment}}}:log"


def feedback(experiment: str) -> str:
    """Stream of accepted feedback (request id, time, variant, reward, label), bounded."""
    return f"gw:{{{experiment}}}:feedback"


def pending(experiment: str) -> str:
    """Sorted set of request ids still waiting for feedback, scored by their reward deadline
    (only when the policy has a default reward)."""
    return f"gw:{{{experiment}}}:pending"


def kpis(experiment: str) -> str:
    """Hash of labelled-feedback confusion counts: '<variant>:tp' / ':fp' / ':tn' / ':fn' /
    ':correct'."""
    return f"gw:{{{experiment}}}:kpi"


def segments(experiment: str) -> str:
    """Hash of per-segment reward counters (contextual routing): '<segment>|<variant>:n', ':s',
    ':ss', as in the arms hash but for the requests of one context segment."""
    return f"gw:{{{experiment}}}:segments"


def linear(experiment: str, context: Sequence[str] = ()) -> str:
    """Hash of each variant's linear-model counters (linear_thompson): '<variant>|n', '|yty',
    '|xty:<j>', '|xtx:<j>:<m>' (j <= m), gateway.bandit.linear_ts's sufficient statistics."""
    # Named by the context too: counters learned on other features (or another order) are never
    # read or added to after `context` changes; the new model starts afresh.
    digest = hashlib.blake2b(",".join(context).encode(), digest_size=6).hexdigest()
    return f"gw:{{{experiment}}}:linear:{digest}"


def paired(experiment: str) -> str:
    """Hash of a shadow variant's outcomes paired with the served variant's on the same labelled
    rows: '<shadow>|<served>:sw' (only the shadow right), ':lw' (only the served one), ':n'."""
    return f"gw:{{{experiment}}}:paired"


def shadow_rewards(experiment: str) -> str:
    """Hash of the rewards a shadow variant would have earned on the live requests it answered,
    where the reward came from the label: '<shadow>:n', ':s', ':ss' (added to its arm when it
    goes live)."""
    return f"gw:{{{experiment}}}:shadow-rewards"


def shadow_log(experiment: str) -> str:
    """Stream of shadow variants' answers to live requests (request id, variant, prediction),
    the decision log's companion: the decision log holds what was served."""
    return f"gw:{{{experiment}}}:shadow"


def quota_prefix(experiment: str) -> str:
    """Prefix of the per-unit reward counters (the unit id follows), expiring with the window."""
    return f"gw:{{{experiment}}}:quota:"


def request_prefix(experiment: str) -> str:
    return f"gw:{{{experiment}}}:req:"


def dynamic_variants(experiment: str) -> str:
    """Hash of challengers added at run time: name -> JSON (artifact path, sha256, metrics)."""
    return f"gw:{{{experiment}}}:dynamic"


def retrain_lock(experiment: str) -> str:
    return f"gw:{{{experiment}}}:retrain-lock"


def series(experiment: str) -> str:
    """Stream of periodic state points (traffic shares, P(best), means) for the dashboard."""
    return f"gw:{{{experiment}}}:series"


def series_lock(experiment: str) -> str:
    return f"gw:{{{experiment}}}:series-lock"


SECRET = "gw:reward-secret"


def unit_prefix(experiment: str) -> str:
    """Per-unit aggregate counters (the policy's `aggregates`): this prefix + the unit id."""
    return f"gw:{{{experiment}}}:unit:"
