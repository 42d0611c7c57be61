"""Pure statistics for Thompson-sampling bandit routing and promotion.

No I/O: only numpy/scipy. See :mod:`.beta` (posterior arithmetic),
:mod:`.selection` (routing weights, sticky picks) and :mod:`.promotion`
(automatic promotion decisions), :mod:`.sequential` (the anytime-valid
promotion test), :mod:`.gaussian` (Normal-Inverse-Gamma posteriors and the
same decisions for continuous rewards) and :mod:`.discounted` (discounted
statistics for discounted Thompson sampling). The Gaussian and discounted
functions share names with the Beta ones, so they are reached through their
modules (``gaussian.prob_best``), not re-exported here.
"""

from . import discounted, gaussian
from .beta import (
    DEFAULT_DRAWS,
    DEFAULT_SEED,
    credible_interval,
    expected_loss,
    mean,
    posterior,
    prob_best,
    prob_best_two,
    sample,
)
from .promotion import INCONCLUSIVE, PROMOTE, Decision, PromotionRule, evaluate
from .selection import (
    apply_floor,
    choose,
    mix_holdout,
    thompson_weights,
    uniform_weights,
    unit_uniform,
)

__all__ = [
    "DEFAULT_DRAWS",
    "DEFAULT_SEED",
    "INCONCLUSIVE",
    "PROMOTE",
    "Decision",
    "PromotionRule",
    "apply_floor",
    "choose",
    "credible_interval",
    "discounted",
    "evaluate",
    "expected_loss",
    "gaussian",
    "mean",
    "mix_holdout",
    "posterior",
    "prob_best",
    "prob_best_two",
    "sample",
    "thompson_weights",
    "uniform_weights",
    "unit_uniform",
]
