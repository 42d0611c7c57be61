import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from gateway.monitoring.kpis import OnlineKPIs, rank_auc


def _sk(y, p, s=None):
    kw = {"zero_division": np.nan}
    out = {
        "accuracy": skm.accuracy_score(y, p),
        "precision": skm.precision_score(y, p, **kw),
        "recall": skm.recall_score(y, p, **kw),
        "f1": skm.f1_score(y, p, **kw),
    }
    if s is not None:
        out["roc_auc"] = skm.roc_auc_score(y, s) if len(set(y.tolist())) == 2 else None
    return {k: (None if v is None or np.isnan(v) else float(v)) for k, v in out.items()}


def _check(got, want, auc_tol=1e-12):
    for k in ("accuracy", "precision", "recall", "f1"):
        if want[k] is None:
            assert got[k] is None, k
        else:
            assert got[k] == pytest.approx(want[k], abs=1e-12), k
    if "roc_auc" in want:
        if want["roc_auc"] is None:
            assert got["roc_auc"] is None
        else:
            assert got["roc_auc"] == pytest.approx(want["roc_auc"], abs=auc_tol)


def _stream(seed, n):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.35 * y + rng.uniform(0, 0.65, n), 0, 1)  # informative but imperfect scores
    p = (s > 0.5).astype(np.int64)
    return y, p, s


def _feed(k, variant, y, p, s, seed):
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(y):  # requests of 1..4 instances
        m = int(rng.integers(1, 5))
        k.update(variant, p[i : i + m].tolist(), y[i : i + m].tolist(), scores=s[i : i + m].tolist(), t=float(i))
        i += m


def test_window_and_lifetime_equal_sklearn():
    y, p, s = _stream(0, 2500)
    s_grid = np.round(s * 1000) / 1000  # scores on the histogram's grid: the lifetime AUC is exact
    k = OnlineKPIs(window=700)
    _feed(k, "xgb", y, p, s_grid, seed=1)
    snap = k.snapshot()["xgb"]
    assert snap["n"] == 2500 and snap["window"]["n"] == 700 and snap["window_size"] == 700
    assert snap["since"] == 0.0 and snap["last_t"] is not None
    _check(snap["lifetime"], _sk(y, p, s_grid))
    _check(snap["window"], _sk(y[-700:], p[-700:], s_grid[-700:]))
    cm = skm.confusion_matrix(y[-700:], p[-700:], labels=[0, 1])
    assert (snap["window"]["tn"], snap["window"]["fp"], snap["window"]["fn"], snap["window"]["tp"]) == tuple(cm.ravel())


def test_lifetime_auc_on_continuous_scores_is_within_the_grid_error():
    y, p, s = _stream(2, 3000)
    k = OnlineKPIs(window=500)
    _feed(k, "a", y, p, s, seed=3)
    snap = k.snapshot()["a"]
    _check(snap["lifetime"], _sk(y, p, s), auc_tol=2e-3)
    _check(snap["window"], _sk(y[-500:], p[-500:], s[-500:]))  # the window AUC is exact


def test_variants_are_independent():
    y, p, s = _stream(4, 600)
    k = OnlineKPIs(window=100)
    for i in range(600):
        k.update("a" if i % 3 else "b", int(p[i]), int(y[i]), scores=float(s[i]))
    idx_a = np.array([i for i in range(600) if i % 3])
    idx_b = np.array([i for i in range(600) if not i % 3])
    snap = k.snapshot()
    assert set(snap) == {"a", "b"} and k.variants() == ["b", "a"]
    _check(snap["a"]["window"], _sk(y[idx_a][-100:], p[idx_a][-100:], s[idx_a][-100:]))
    _check(snap["b"]["window"], _sk(y[idx_b][-100:], p[idx_b][-100:], s[idx_b][-100:]))
    _check(snap["b"]["lifetime"], _sk(y[idx_b], p[idx_b]))


def test_undefined_metrics_are_none():
    k = OnlineKPIs(window=10)
    k.update("a", [0, 0, 0], [0, 0, 1])  # no predicted positives, no scores
    m = k.snapshot()["a"]["window"]
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["precision"] is None and m["recall"] == 0.0 and m["f1"] == 0.0 and m["roc_auc"] is None
    k.update("b", [1, 1], [1, 1], scores=[0.9, 0.8])  # a single class: no AUC
    m = k.snapshot()["b"]
    assert m["window"]["roc_auc"] is None and m["lifetime"]["roc_auc"] is None
    assert m["window"]["precision"] == 1.0 and m["window"]["n_scored"] == 2
    k.update("c", [0], [0])
    m = k.snapshot()["c"]["window"]
    assert m["precision"] is None and m["recall"] is None and m["f1"] is None


def test_window_slides_out_old_labels():
    k = OnlineKPIs(window=3)
    k.update("a", [1, 1, 1], [0, 0, 0])  # three wrong
    k.update("a", [1, 0, 1], [1, 0, 1])  # three right: the wrong ones left the window
    snap = k.snapshot()["a"]
    assert snap["window"]["accuracy"] == 1.0 and snap["lifetime"]["accuracy"] == 0.5
    assert snap["window"]["n"] == 3 and snap["n"] == 6


def test_labels_compare_like_the_gateway():
    k = OnlineKPIs()
    k.update("a", [1, 0, True, "1"], [1.0, False, 1, "1"])
    assert k.snapshot()["a"]["lifetime"]["accuracy"] == 1.0
    words = OnlineKPIs(positive_label="churn")
    words.update("a", ["churn", "stay", "churn"], ["churn", "churn", "stay"])
    m = words.snapshot()["a"]["lifetime"]
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (1, 1, 1, 0)


def test_reset_and_bad_input():
    k = OnlineKPIs(window=5)
    k.update("a", [1], [1], t=10.0)
    k.reset("a", since=20.0)
    assert k.snapshot()["a"]["n"] == 0 and k.snapshot()["a"]["since"] == 20.0
    k.remove("a")
    assert k.snapshot() == {}
    with pytest.raises(ValueError):
        k.update("a", [1, 0], [1])
    with pytest.raises(ValueError):
        k.update("a", [1], [1], scores=[1.5])
    with pytest.raises(ValueError):
        k.update("a", [1], [1], scores=[0.1, 0.2])
    with pytest.raises(ValueError):
        OnlineKPIs(window=0)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 20)), min_size=1, max_size=60
    ),
    st.integers(1, 25),
)
def test_matches_sklearn_on_any_stream(items, window):
    y = np.array([i[0] for i in items])
    p = np.array([i[1] for i in items])
    s = np.array([i[2] / 20 for i in items])  # coarse scores with many ties, on the grid
    k = OnlineKPIs(window=window)
    for yi, pi, si in zip(y, p, s, strict=True):
        k.update("v", int(pi), int(yi), scores=float(si))
    snap = k.snapshot()["v"]
    _check(snap["lifetime"], _sk(y, p, s))
    _check(snap["window"], _sk(y[-window:], p[-window:], s[-window:]))


def test_rank_auc_handles_ties_like_sklearn():
    y = np.array([0, 1, 0, 1, 1, 0, 1])
    s = np.array([0.2, 0.2, 0.5, 0.5, 0.9, 0.1, 0.5])
    assert rank_auc(s, y == 1) == pytest.approx(skm.roc_auc_score(y, s))
