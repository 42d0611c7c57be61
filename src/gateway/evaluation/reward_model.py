"""The cross-fitted reward model q̂(x, a) of the doubly robust estimator: one ridge regression
per arm, each row predicted by models fitted on the other folds only (so a row's own reward
never enters its q̂). Pure: numpy and scikit-learn, deterministic for a given seed."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge

# Ridge penalty on the raw features (sklearn's default); the intercept is not penalised.
RIDGE_ALPHA = 1.0


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold of each of ``n`` rows: ``np.random.default_rng(seed).permutation(n) % folds``.

    >>> fold_ids(6, 2, 0).tolist()
    [1, 0, 1, 0, 0, 1]
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    return np.random.default_rng(seed).permutation(n) % int(folds)


def cross_fit(
    features: np.ndarray, actions: np.ndarray, rewards: np.ndarray, n_arms: int, fold_of: np.ndarray
) -> np.ndarray:
    """(n, n_arms) predictions q̂(x_i, a): row i's from the rows whose fold differs from its own."""
    n = len(rewards)
    q = np.zeros((n, n_arms))
    for f in np.unique(fold_of):
        test = fold_of == f
        train = ~test
        q[test] = _fit_predict(features[train], actions[train], rewards[train], features[test], n_arms)
    return q


def _fit_predict(
    x_train: np.ndarray, a_train: np.ndarray, r_train: np.ndarray, x_test: np.ndarray, n_arms: int
) -> np.ndarray:
    """Per arm: Ridge on the arm's training rows (their mean reward when there are no features);
    an arm absent from the training rows gets the training rows' mean reward (0 with none)."""
    fallback = float(r_train.mean()) if len(r_train) else 0.0
    out = np.full((len(x_test), n_arms), fallback)
    for k in range(n_arms):
        rows = a_train == k
        if not rows.any() or not len(x_test):
            continue
        if x_train.shape[1] == 0:
            out[:, k] = r_train[rows].mean()
        else:
            out[:, k] = Ridge(alpha=RIDGE_ALPHA).fit(x_train[rows], r_train[rows]).predict(x_test)
    return out
