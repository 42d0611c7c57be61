"""Pure statistics for Thompson-sampling bandit routing and promotion.

No I/O: only numpy/scipy. :mod:`.family` is the one interface of a posterior
family (:class:`PosteriorFamily`), implemented by :mod:`.beta_family` (rewards
in [0, 1]) and :mod:`.nig_family` (Gaussian rewards); :mod:`.promotion`
(automatic promotion decisions) and :mod:`.anytime` (the anytime-valid
promotion test) are written once against it. See :mod:`.beta` (Beta posterior
arithmetic), :mod:`.selection` (routing weights, sticky picks),
:mod:`.sequential` (the anytime-valid test for rewards in [0, 1]),
:mod:`.gaussian` (Normal-Inverse-Gamma posteriors and the same decisions for
continuous rewards) and :mod:`.discounted` (discounted statistics for
discounted Thompson sampling). The Gaussian and discounted
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
from .family import PosteriorFamily
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
    "PosteriorFamily",
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
