"""Model monitoring from the decision log and the feedback stream: online KPIs per variant and
drift (PSI). Pure functions over the entries the store returns, so any router replica computes
the same figures from Redis.

- KPIs: lifetime figures come from the confusion counts the reward script keeps per variant
  (exact, however long the variant lives); window figures from the variant's newest labelled
  feedback items (`monitoring.window` of them), with ROC AUC when the model gave scores.
- Drift: the population stability index of every feature, live (the newest `window`
  predictions) against the reference: the champion's training window when it was trained here
  (its rows are still in the decision log), otherwise the first `window` predictions the
  experiment served (the baseline it was deployed against). Predictions get a PSI per variant,
  each against that variant's own predictions in the reference window, so a change in routing
  is never mistaken for drift.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from gateway.monitoring import drift, kpis
from gateway.learning.features import FeatureError
from gateway.policy import Policy

log = logging.getLogger("gateway.monitoring")


def lifetime_kpis(counts: Mapping[str, int]) -> dict[str, Any]:
    """Accuracy, precision, recall and F1 from {tp, fp, tn, fn, correct}."""
    return kpis.metrics_from_counts(**{k: int(counts.get(k, 0)) for k in ("tp", "fp", "tn", "fn", "correct")})


def _decode(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def with_shadow_answers(feedback: Sequence[Mapping[str, str]]) -> Iterator[Mapping[str, str]]:
    """Each feedback entry, followed by one entry per shadow answer it carries ('sh:<variant>'
    and 'shs:<variant>' fields, written by the reward script): a shadow is scored on the same
    label, in the same order, as the served variant."""
    for entry in feedback:
        yield entry
        for field, pred in entry.items():
            if field.startswith("sh:"):
                variant = field[3:]
                yield {"variant": variant, "label": entry.get("label", ""), "pred": pred,
                       "scores": entry.get(f"shs:{variant}", "")}


def window_kpis(feedback: Sequence[Mapping[str, str]], window: int) -> dict[str, dict[str, Any]]:
    """Per variant, the KPIs of its newest `window` labelled feedback items (entries oldest
    first, as the feedback stream holds them: variant, label, pred and scores as JSON)."""
    online = kpis.OnlineKPIs(window=window)
    for entry in with_shadow_answers(feedback):
        labels, preds = _decode(entry.get("label")), _decode(entry.get("pred"))
        if labels is None or preds is None:
            continue
        scores = _decode(entry.get("scores"))
        try:
            online.update(entry.get("variant", ""), preds, labels, scores=scores)
        except ValueError:
            # A label list that does not match the predictions, or scores outside [0, 1]: the
            # reward path already refused or ignored it; it cannot count here either.
            continue
    return {v: s["window"] for v, s in online.snapshot().items()}


def variant_kpis(
    names: Sequence[str], counts: Mapping[str, Mapping[str, int]], windowed: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """{variant: {"lifetime": {...}, "window": {...}}} for every variant name."""
    out = {}
    for v in names:
        window = windowed.get(v) or kpis.metrics_from_counts() | {"roc_auc": None, "n_scored": 0}
        out[v] = {"lifetime": lifetime_kpis(counts.get(v, {})), "window": dict(window)}
    return out


def _rows_and_preds(entries: Sequence[Mapping[str, str]]) -> tuple[list, dict[str, list]]:
    rows: list = []
    preds: dict[str, list] = {}
    for e in entries:
        x, p = _decode(e.get("x")), _decode(e.get("pred"))
        if not isinstance(x, list) or not isinstance(p, list) or len(x) != len(p):
            continue
        rows.extend(x)
        preds.setdefault(e.get("variant", ""), []).extend(p)
    return rows, preds


def drift_report(
    policy: Policy,
    reference: Sequence[Mapping[str, str]],
    live: Sequence[Mapping[str, str]],
    reference_kind: str,
) -> dict[str, Any]:
    """PSI per feature and per variant's predictions, with the worst value and its reading.
    Too few rows on either side: `status` says so and no value is given (never an alarm)."""
    min_rows = policy.monitoring.min_drift_rows
    ref_rows, ref_preds = _rows_and_preds(reference)
    live_rows, live_preds = _rows_and_preds(live)
    out: dict[str, Any] = {
        "reference": reference_kind,
        "reference_rows": len(ref_rows),
        "live_rows": len(live_rows),
        "features": {},
        "predictions": {},
        "max_psi": None,
        "level": None,
        "status": "insufficient_data",
    }
    if len(ref_rows) < min_rows or len(live_rows) < min_rows:
        return out
    try:
        out["features"] = drift.feature_drift(policy, ref_rows, live_rows, bins=10)
    except (FeatureError, ValueError) as err:
        log.warning("drift of %s not computed: %s", policy.experiment, err)
        return out
    for variant, ref in ref_preds.items():
        now = live_preds.get(variant, [])
        if len(ref) >= min_rows and len(now) >= min_rows:
            try:
                out["predictions"][variant] = drift.prediction_drift(ref, now)
            except ValueError:
                continue
    values = [*out["features"].values(), *out["predictions"].values()]
    out["max_psi"] = max(values) if values else None
    out["level"] = drift.level(out["max_psi"]) if values else None
    out["status"] = "ok"
    return out
