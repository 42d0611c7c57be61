"""Traffic allocation and the promotion check: policy plus counters in, decisions out. Pure
(no I/O), so the router and the tests share one definition.

The policy's reward type picks the posterior (bernoulli: Beta, gaussian: Normal-Inverse-Gamma)
and its algorithm the weights (thompson, top_two_thompson, discounted_thompson). Discounted
Thompson sampling needs discounted counters the store does not keep: each router replica keeps
a :class:`DiscountState`, folds every snapshot's counters into it with :func:`discount` and
passes it to :func:`allocate` (see gateway.bandit.discounted)."""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.bandit import beta, cuped, discounted, gaussian, promotion, selection, sequential
from gateway.policy import Policy, Variant
from gateway.store.snapshot import ArmCounts

# Columns of the counter arrays: rewards, reward sum, sum of squared rewards.
_N, _S, _SS = 0, 1, 2

# ArmPosteriors.mc_stats by posterior: the draws are seeded, so equal posteriors give equal
# figures, and the dashboard series recomputes every experiment's every 2 s whether or not its
# counters moved (20,000 draws each; with 100 idle experiments that was most of the router's idle
# CPU, bench/growth.md). Bounded: an entry is a few arrays of k floats.
_MC_CACHE: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_MC_CACHE_SIZE = 4096
_MC_LOCK = threading.Lock()  # the contextual and linear routings run in worker threads


@dataclass(frozen=True)
class Allocation:
    """Traffic shares of every variant (holdout included), summing to 1."""

    shares: dict[str, float]
    # burn_in | burn_in_challenger (a new arm burns in beside the bandit) | thompson |
    # top_two_thompson | discounted_thompson | promoted | paused
    mode: str

    def pick(self, u: float) -> tuple[str, float]:
        names = list(self.shares)
        weights = np.fromiter(self.shares.values(), dtype=float, count=len(names))
        i = selection.choose(weights, u)
        return names[i], float(weights[i])


@dataclass(frozen=True)
class ArmPosteriors:
    """Posteriors of some arms under the policy's reward model, in the order they were asked for.

    ``params`` is ``{"alpha", "beta"}`` (Beta, bernoulli rewards) or ``{"mu", "kappa", "alpha",
    "beta"}`` (Normal-Inverse-Gamma, gaussian rewards), one array entry per arm. Monte-Carlo
    figures are seeded inside gateway.bandit, so equal counters give equal figures."""

    reward: str
    params: dict[str, np.ndarray]

    def _args(self) -> tuple[np.ndarray, ...]:
        return tuple(self.params.values())

    def _module(self):
        return gaussian if self.reward == "gaussian" else beta

    def fields(self, i: int) -> dict[str, float]:
        """Arm ``i``'s posterior parameters as plain floats (the state's "posterior")."""
        return {k: float(v[i]) for k, v in self.params.items()}

    def mean(self) -> np.ndarray:
        return self._module().mean(*self._args())

    def credible_interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        return self._module().credible_interval(*self._args(), level)

    def take(self, idx: Sequence[int]) -> ArmPosteriors:
        return ArmPosteriors(self.reward, {k: v[list(idx)] for k, v in self.params.items()})

    def mc_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(prob_best, expected_loss) from one shared, seeded set of draws; remembered for the
        newest posteriors seen (the same seeded draws would give the same figures again)."""
        key = (self.reward, *((k, v.dtype.str, v.shape, v.tobytes()) for k, v in self.params.items()))
        with _MC_LOCK:
            hit = _MC_CACHE.get(key)
            if hit is not None:
                _MC_CACHE.move_to_end(key)
        if hit is None:
            hit = self._module()._mc_stats(*self._args(), beta.DEFAULT_DRAWS, None)
            with _MC_LOCK:
                _MC_CACHE[key] = hit
                while len(_MC_CACHE) > _MC_CACHE_SIZE:
                    _MC_CACHE.popitem(last=False)
        return hit[0].copy(), hit[1].copy()  # the caller may change its arrays; the cache's stay

    def prob_best(self) -> np.ndarray:
        return self._module().prob_best(*self._args())

    def sample(self, draws: int, rng: np.random.Generator) -> np.ndarray:
        """Joint draws of the arms' mean rewards, shape (draws, k)."""
        return self._module().sample(*self._args(), draws, rng)


def counters(arms: Mapping[str, ArmCounts], names: Sequence[str]) -> np.ndarray:
    """Cumulative (rewards, reward sum, sum of squares) per name, shape (k, 3); zeros when missing."""
    out = np.zeros((len(names), 3))
    for i, v in enumerate(names):
        c = arms.get(v, ArmCounts())
        out[i] = (c.rewards, c.reward_sum, c.reward_sq_sum)
    return out


def arm_posteriors(
    policy: Policy, arms: Mapping[str, ArmCounts], names: Sequence[str], stats: np.ndarray | None = None
) -> ArmPosteriors:
    """The posteriors of `names` from their counters, or from `stats` (shape (k, 3): rewards, sum,
    sum of squares, e.g. discounted ones) when given."""
    c = counters(arms, names) if stats is None else np.asarray(stats, dtype=float)
    n, s, ss = c[:, _N], c[:, _S], c[:, _SS]
    if policy.reward.type == "gaussian":
        p = policy.reward.gaussian_prior
        mu, kappa, a, b = gaussian.posterior(p.mu, p.kappa, p.alpha, p.beta, n, s, ss)
        return ArmPosteriors("gaussian", {"mu": mu, "kappa": kappa, "alpha": a, "beta": b})
    # Float sums of fractional rewards can drift a hair outside [0, n].
    a, b = beta.posterior(policy.prior.alpha, policy.prior.beta, n, np.clip(s, 0.0, n))
    return ArmPosteriors("bernoulli", {"alpha": a, "beta": b})


def posteriors(policy: Policy, arms: Mapping[str, ArmCounts], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Beta posteriors (alpha, beta) of a bernoulli reward; any reward type: :func:`arm_posteriors`."""
    if policy.reward.type != "bernoulli":
        raise ValueError(f"posteriors() is for bernoulli rewards; {policy.experiment} has {policy.reward.type} rewards")
    post = arm_posteriors(policy, arms, names)
    return post.params["alpha"], post.params["beta"]


def posterior_means(policy: Policy, arms: Mapping[str, ArmCounts], names: Sequence[str]) -> np.ndarray:
    """Posterior mean reward of each of `names`, whatever the reward type."""
    return arm_posteriors(policy, arms, names).mean()


@dataclass(frozen=True)
class DiscountState:
    """A replica's discounted counters of the live arms (discounted_thompson): rows follow
    `names`, columns are rewards, reward sum and sum of squares."""

    names: tuple[str, ...]
    gamma: float
    stats: discounted.DiscountedStats

    def effective_rewards(self) -> dict[str, float]:
        return {v: float(x) for v, x in zip(self.names, self.stats.decayed[:, _N])}


def discount(
    policy: Policy, arms: Mapping[str, ArmCounts], meta: Mapping[str, str], previous: DiscountState | None
) -> DiscountState | None:
    """Fold the current counters into `previous` (None: start from nothing, the whole history as
    one batch). None unless the policy's algorithm is discounted_thompson. Idempotent: the same
    counters twice change nothing. New arms start from zero, retired ones are dropped, a changed
    discount starts over."""
    if policy.algorithm != "discounted_thompson":
        return None
    live = live_arms(policy, meta)
    state = discounted.initial(len(live), 3)
    if previous is not None and previous.gamma == policy.discount:
        rows = {v: i for i, v in enumerate(previous.names)}
        seen, decayed = state.seen.copy(), state.decayed.copy()
        for i, v in enumerate(live):
            if v in rows:
                seen[i] = previous.stats.seen[rows[v]]
                decayed[i] = previous.stats.decayed[rows[v]]
        state = discounted.DiscountedStats(seen, decayed)
    return DiscountState(tuple(live), policy.discount, discounted.update(state, counters(arms, live), policy.discount))


def effective_policy(policy: Policy, dynamic: Mapping[str, Mapping]) -> Policy:
    """The policy plus the challengers added at run time (in the order they were added)."""
    if not dynamic:
        return policy
    known = set(policy.variant_names)
    added = sorted((v for k, v in dynamic.items() if k not in known), key=lambda v: (v.get("added_at", 0), v["name"]))
    extra = tuple(Variant(name=v["name"], model=v["path"], role=v.get("role", "live"), features=v.get("features"))
                  for v in added)
    return policy.model_copy(update={"variants": policy.variants + extra})


def retired(meta: Mapping[str, str]) -> set[str]:
    return set(json.loads(meta["retired"])) if meta.get("retired") else set()


def arms_to_retire(policy: Policy, arms: Mapping[str, ArmCounts], meta: Mapping[str, str], max_variants: int) -> list[str]:
    """Beyond `max_variants` live arms, the ones with the lowest posterior mean (never the
    champion, never an arm still without rewards), lowest first."""
    live = live_arms(policy, meta)
    extra = len(live) - max_variants
    if extra <= 0:
        return []
    means = posterior_means(policy, arms, live)
    candidates = sorted(
        (float(means[i]), v) for i, v in enumerate(live)
        if v != meta.get("champion") and arms.get(v) is not None and arms[v].rewards > 0
    )
    return [v for _, v in candidates[:extra]]


def role_overrides(meta: Mapping[str, str]) -> dict[str, str]:
    """Roles set at run time (an operator, or shadow-first graduation): variant -> live | shadow."""
    return json.loads(meta["roles"]) if meta.get("roles") else {}


def shadow_arms(policy: Policy, meta: Mapping[str, str]) -> list[str]:
    """The variants in shadow now: by the policy (or the challenger's entry) unless a run-time
    role says otherwise; never a retired one."""
    gone, roles = retired(meta), role_overrides(meta)
    return [v.name for v in policy.variants if roles.get(v.name, v.role) == "shadow" and v.name not in gone]


def live_arms(policy: Policy, meta: Mapping[str, str]) -> list[str]:
    """The bandit's arms: every variant but the holdout, the retired and the shadow ones."""
    held = policy.holdout.variant if policy.holdout else None
    out = set(shadow_arms(policy, meta)) | retired(meta) | {held}
    return [v for v in policy.variant_names if v not in out]


def _with_holdout(policy: Policy, bandit_shares: Mapping[str, float]) -> dict[str, float]:
    if policy.holdout is None:
        return dict(bandit_shares)
    f = policy.holdout.fraction
    out = {v: (1 - f) * w for v, w in bandit_shares.items()}
    out[policy.holdout.variant] = f
    return {v: out.get(v, 0.0) for v in policy.variant_names}


def allocate(
    policy: Policy,
    arms: Mapping[str, ArmCounts],
    meta: Mapping[str, str],
    discounted_state: DiscountState | None = None,
) -> Allocation:
    """Traffic shares. `discounted_state` (discounted_thompson only) is the replica's state from
    :func:`discount`; without it the discounted counters are rebuilt from the cumulative ones."""
    status = meta.get("status", "exploring")
    live = live_arms(policy, meta)
    champion = meta.get("champion")
    if status == "promoted" and champion in live:
        return Allocation(_with_holdout(policy, {v: float(v == champion) for v in live}), "promoted")
    if status == "paused" and meta.get("frozen_weights"):
        frozen = json.loads(meta["frozen_weights"])
        if set(frozen) == set(policy.variant_names):
            return Allocation({v: float(frozen[v]) for v in policy.variant_names}, "paused")
    counts = [arms.get(v, ArmCounts()).rewards for v in live]
    # Burn-in counts every reward ever received, discounted or not. An arm still burning in
    # (at the start all of them; later a new challenger) gets the uniform share 1/k; the others
    # share the rest by the bandit's weights, so one new arm does not make all traffic uniform.
    young = [c < policy.burn_in_rewards for c in counts]
    if all(young):
        return Allocation(_with_holdout(policy, dict(zip(live, map(float, selection.uniform_weights(len(live)))))), "burn_in")
    mature = [v for v, y in zip(live, young) if not y]
    stats = None
    if policy.algorithm == "discounted_thompson":
        # Idempotent: a state that already holds these counters is used as it is.
        state = discount(policy, arms, meta, discounted_state)
        assert state is not None
        stats = state.stats.decayed[[state.names.index(v) for v in mature]]
    pb = arm_posteriors(policy, arms, mature, stats).prob_best()
    if policy.algorithm == "top_two_thompson":
        pb = sequential.top_two_weights(pb)
    uniform = 1.0 / len(live)
    rest = 1.0 - uniform * sum(young)
    # The floor applies to the final shares: rest >= (mature arms) * min_weight since k * min_weight <= 1.
    # Full until every live arm has min_samples rewards, then decaying with the evidence (issue 16).
    full = selection.floor_schedule(policy.min_weight, counts, policy.promotion.min_samples, policy.min_weight_final)
    floor = min(full / rest, 1.0 / len(mature))
    mature_weights = dict(zip(mature, selection.apply_floor(pb, floor))) if len(mature) > 1 else {mature[0]: 1.0}
    shares = {v: uniform if y else rest * float(mature_weights[v]) for v, y in zip(live, young)}
    return Allocation(_with_holdout(policy, shares), policy.algorithm if not any(young) else "burn_in_challenger")


def promotion_decision(
    policy: Policy, arms: Mapping[str, ArmCounts], meta: Mapping[str, str], now: float
) -> promotion.Decision | None:
    """The rule's verdict while exploring; None when the experiment is not exploring, or routes
    by context (each segment is promoted on its own: gateway.decisions.segments)."""
    if meta.get("status", "exploring") != "exploring" or policy.algorithm == "contextual_thompson":
        return None
    live = live_arms(policy, meta)
    # Promotion always judges the cumulative counters: the anytime-valid test needs them raw
    # (discounting is for routing under drift, not for the evidence).
    post = arm_posteriors(policy, arms, live)
    c = counters(arms, live)
    n = c[:, _N]
    # A challenger added later must run min_duration_s too before anyone is promoted.
    started = max(float(meta.get("started_at", now)), float(meta.get("challenger_at", "-inf")))
    rule = promotion.PromotionRule(
        prob_best=policy.promotion.prob_best,
        max_expected_loss=policy.promotion.max_expected_loss,
        min_samples=policy.promotion.min_samples,
        min_duration_s=policy.promotion.min_duration_s,
    )
    level, tau2 = policy.promotion.alpha, policy.promotion.tau2
    if policy.variance_reduction is not None:
        # CUPED: the same test on rewards adjusted by the covariate (gateway.bandit.cuped).
        x = np.array([[a.x_sum, a.xx_sum, a.xy_sum] for a in (arms.get(v, ArmCounts()) for v in live)]).reshape(-1, 3)
        decision = cuped.evaluate_sequential_cuped(
            live, n, c[:, _S], c[:, _SS], x[:, 0], x[:, 1], x[:, 2], rule, elapsed_s=now - started, alpha=level,
            tau2=tau2, prior=(policy.prior.alpha, policy.prior.beta),
        )
    elif post.reward == "gaussian":
        decision = gaussian.evaluate_sequential(
            live, tuple(post.params.values()), n, c[:, _S], c[:, _SS], rule, elapsed_s=now - started,
            alpha=level, tau2=tau2,
        )
    else:
        a, b = post.params["alpha"], post.params["beta"]
        s = np.clip(c[:, _S], 0.0, n)
        decision = sequential.evaluate_sequential(
            live, a, b, n, s, rule, elapsed_s=now - started, alpha=level, tau2=tau2
        )
    if decision.outcome == "promote" and decision.variant in guardrail_blocked(meta):
        # Rolled back by a guardrail: only an operator may make it champion again, or the rule
        # and the guardrail would take turns.
        return promotion.Decision(
            "inconclusive", None, f"{decision.variant} was rolled back by a guardrail; an operator may promote it",
            decision.evidence,
        )
    return decision


def guardrail_blocked(meta: Mapping[str, str]) -> set[str]:
    return set(json.loads(meta["guardrail_blocked"])) if meta.get("guardrail_blocked") else set()
