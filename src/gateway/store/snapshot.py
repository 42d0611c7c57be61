"""What the store reads back and takes, as plain values: an experiment's counters (ArmCounts,
Snapshot, parsed from Redis hashes here) and a reward to apply with the policy's rules. No Redis
client: the decisions import these without the store's machinery."""
from __future__ import annotations

from dataclasses import dataclass, field

from gateway.bandit.linear_ts import LinearStats


@dataclass(frozen=True)
class ArmCounts:
    rewards: int = 0
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0
    requests: int = 0
    # variance_reduction: sums of the covariate, its square and its product with the reward.
    x_sum: float = 0.0
    xx_sum: float = 0.0
    xy_sum: float = 0.0


@dataclass(frozen=True)
class Snapshot:
    arms: dict[str, ArmCounts]
    meta: dict[str, str]
    dynamic: dict[str, dict] = field(default_factory=dict)  # challengers added at run time
    # Contextual routing: each segment's counters per variant (segment -> variant -> counts).
    segments: dict[str, dict[str, ArmCounts]] = field(default_factory=dict)
    # linear_thompson: each variant's linear-model statistics (one variant each, k = 1).
    linear: dict[str, LinearStats] = field(default_factory=dict)


@dataclass(frozen=True)
class RewardItem:
    experiment: str
    request_id: str
    variant: str
    reward: float
    label: str = ""  # JSON of the label(s) when the feedback carried them
    from_label: bool = False  # the reward was made from the label ('match'): shadows may earn theirs
    nonce: str = ""  # the prediction record's, from its token ('': any record of the request id)


@dataclass(frozen=True)
class RewardRules:
    """What the policy says about feedback, as the reward script needs it."""

    default: float | None = None  # applied after the window; later feedback is 'late'
    max_per_unit: int | None = None  # rewards per unit_id within the window
    window_s: float = 86_400.0
    # A label-made reward also earns each shadow that answered the request its own, for when it
    # goes live (gateway.decisions.shadow_first.credits_shadow_rewards).
    shadows_earn: bool = False
    # linear_thompson: the context its counters are kept under (keys.linear).
    linear_context: tuple[str, ...] = ()
    # The policy's `aggregates`: seconds a unit's counters live (None: the policy keeps none).
    unit_window_s: float | None = None


def parse_segments(raw: dict[str, str]) -> dict[str, dict[str, ArmCounts]]:
    """'<segment>|<variant>:<counter>' fields by segment (a variant's name has no '|')."""
    cells: dict[str, dict[str, str]] = {}
    for key, value in raw.items():
        cell, _, counter = key.rpartition(":")
        cells.setdefault(cell, {})[counter] = value
    out: dict[str, dict[str, ArmCounts]] = {}
    for cell, fields in cells.items():
        segment, _, variant = cell.rpartition("|")
        out.setdefault(segment, {})[variant] = _counts(fields)
    return out


def parse_linear(raw: dict[str, str]) -> dict[str, LinearStats]:
    """'<variant>|<field>' fields by variant, each as LinearStats of one variant; the dimension is
    the one its fields show (a variant name has no '|')."""
    fields: dict[str, dict[str, str]] = {}
    for key, value in raw.items():
        variant, _, name = key.partition("|")
        fields.setdefault(variant, {})[name] = value
    out = {}
    for variant, f in fields.items():
        d = 1 + max((int(name.split(":")[1]) for name in f if name.startswith("xty:")), default=-1)
        if d >= 1:
            out[variant] = LinearStats.from_fields([f], d)
    return out


def _counts(f: dict[str, str]) -> ArmCounts:
    return ArmCounts(rewards=int(f.get("n", 0)), reward_sum=float(f.get("s", 0.0)),
                     reward_sq_sum=float(f.get("ss", 0.0)), requests=int(f.get("req", 0)),
                     x_sum=float(f.get("x", 0.0)), xx_sum=float(f.get("xx", 0.0)), xy_sum=float(f.get("xy", 0.0)))


def parse_arms(raw: dict[str, str]) -> dict[str, ArmCounts]:
    fields: dict[str, dict[str, str]] = {}
    for key, value in raw.items():
        variant, _, counter = key.rpartition(":")
        fields.setdefault(variant, {})[counter] = value
    return {v: _counts(f) for v, f in fields.items()}
