"""The experiments one data plane serves: each one's policy, feature view and variants, and what the
upkeep last computed for it (snapshot, allocation, KPIs, drift, state)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from gateway.bandit.contextual import SegmentAllocation
from gateway.decisions import allocation, shadow_first
from gateway.decisions.linear import LinearRoutes
from gateway.bandit.srm import SrmTracker
from gateway.errors import NotFound
from gateway.learning.features import FeatureEncoder
from gateway.learning.views import FeatureView
from gateway.policy import Policy
from gateway.store.snapshot import RewardRules, Snapshot


class VariantClient(Protocol):
    async def predict(self, matrix: np.ndarray, carrier: dict[str, str]) -> dict[str, Any]: ...


@dataclass
class ExperimentRuntime:
    policy: Policy  # the policy file's, plus challengers added at run time
    view: FeatureView  # of `policy`: rebuilt when a challenger joins
    variants: dict[str, VariantClient]
    base_policy: Policy | None = None
    champion_seen: str | None = None
    # Sample-ratio mismatch as seen by this replica since it started (weights change over time).
    srm: SrmTracker = field(default_factory=SrmTracker)
    snapshot: Snapshot | None = None
    allocation: allocation.Allocation | None = None
    evaluated_counts: tuple | None = None
    # The last full state (with history), refreshed with the series; read by the gauges.
    state: dict[str, Any] | None = None
    # Online KPIs per variant and the drift report, refreshed by the monitor.
    kpis: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    # discounted_thompson: this replica's discounted counters, folded in at every refresh.
    discount: allocation.DiscountState | None = None
    # The variants in shadow now (by the policy and the run-time roles), as of the last refresh.
    shadows: tuple[str, ...] = ()
    shadow_checked_at: float = float("-inf")
    # contextual_thompson: each context segment's traffic shares, as of the last refresh.
    segments: SegmentAllocation | None = None
    # linear_thompson: the variants' linear models, ready to route at any context, as of the last refresh.
    linear: LinearRoutes | None = None
    # Each variant's IPS-corrected mean reward (off-policy, from the logged propensities), by the monitor.
    corrected: dict[str, Any] | None = None

    def as_served(self, state: dict[str, Any]) -> dict[str, Any]:
        """The state as the API serves it: with this replica's sample-ratio check, the monitor's
        KPIs and drift, and beside each variant's posterior mean its IPS-corrected mean (the
        plain mean of adaptively allocated rewards is biased; this one is not)."""
        state["srm"] = self.srm.result()
        state["kpis"], state["drift"] = self.kpis, self.drift
        state["corrected_means"] = self.corrected
        return state

    @property
    def encoder(self) -> FeatureEncoder:
        """The request schema's encoder (raw columns, no derived ones)."""
        return self.view.encoder

    def set_policy(self, policy: Policy, retired: frozenset[str] | None = None) -> None:
        """A new policy (a challenger joined) or retired set: the view follows."""
        retired = self.view.retired if retired is None else retired
        self.policy, self.view = policy, FeatureView(policy, retired=retired)

    @property
    def reward_rules(self) -> RewardRules:
        r = self.policy.reward
        return RewardRules(default=r.default, max_per_unit=r.max_per_unit, window_s=r.window_s,
                           shadows_earn=shadow_first.credits_shadow_rewards(self.policy),
                           linear_context=self.linear_context,
                           unit_window_s=self.policy.aggregates.window_s if self.policy.aggregates else None)

    @property
    def linear_context(self) -> tuple[str, ...]:
        """linear_thompson's context, which names its counters' key (empty otherwise)."""
        return tuple(self.policy.context) if self.policy.algorithm == "linear_thompson" else ()


class Experiments(dict[str, ExperimentRuntime]):
    """Runtimes by experiment name."""

    @classmethod
    def build(cls, policies: Mapping[str, Policy], variants: Mapping[str, Mapping[str, VariantClient]]) -> Experiments:
        return cls({
            name: ExperimentRuntime(p, FeatureView(p), dict(variants[name]), p)
            for name, p in policies.items()
        })

    def runtime(self, experiment: str) -> ExperimentRuntime:
        """The experiment's runtime; 404 for a name this gateway does not serve."""
        rt = self.get(experiment)
        if rt is None:
            raise NotFound(f"no experiment named {experiment!r}", code="experiment_not_found")
        return rt

    def reward_rules(self) -> dict[str, RewardRules]:
        return {name: rt.reward_rules for name, rt in self.items()}

    def linear_contexts(self) -> dict[str, tuple[str, ...]]:
        """The linear_thompson experiments' contexts, for the store's snapshots."""
        return {name: rt.linear_context for name, rt in self.items() if rt.linear_context}
