"""What `gateway status`, the admin verbs and `gateway ope` print: an experiment's state as
tables sized to the console (gateway.cli.fit splits a table that would not fit)."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from gateway.cli.fit import Column, fitted_tables


def posterior_text(posterior: dict[str, float]) -> str:
    """Beta(alpha, beta) of a bernoulli reward; NIG(mu, kappa, alpha, beta) of a gaussian one."""
    if "mu" in posterior:
        return f"NIG({posterior['mu']:.4g}, {posterior['kappa']:g}, {posterior['alpha']:g}, {posterior['beta']:.4g})"
    return f"Beta({posterior['alpha']:g}, {posterior['beta']:g})"


def interval_text(interval: list[float], spec: str = ".4f") -> str:
    lo, hi = interval
    return f"[{lo:{spec}}, {hi:{spec}}]"


def window_accuracy(state: dict[str, Any], variant: str) -> str:
    """The variant's accuracy over its newest labels, with how many: '-' while there is none."""
    window = ((state.get("kpis") or {}).get(variant) or {}).get("window") or {}
    if window.get("accuracy") is None:
        return "-"
    return f"{window['accuracy']:.3f} (n={window.get('n', 0)})"


def fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _variant_label(state: dict[str, Any], v: dict[str, Any]) -> str:
    name = v["name"] + (f" ({v['role']})" if v.get("role") in ("holdout", "shadow") else "")
    return f"[bold]{name}[/bold] *" if v["name"] == state.get("champion") else name


def status_tables(console: Console, state: dict[str, Any]) -> list[Table]:
    title = (
        f"{state['name']}: {state['status']}"
        + (f", champion {state['champion']}" if state.get("champion") else "")
        + f" ({state['totals']['requests']} requests, {state['totals']['rewards']} rewards)"
    )
    variants = state["variants"]
    key = Column("variant", [_variant_label(state, v) for v in variants], justify="left")
    columns = [
        Column("posterior", [posterior_text(v["posterior"]) for v in variants]),
        Column("mean", [f"{v['mean']:.4f}" for v in variants]),
        Column("95% interval", [interval_text(v["credible_interval"]) for v in variants]),
        Column("P(best)", [fmt(v["prob_best"], ".3f") for v in variants]),
        Column("exp. loss", [fmt(v["expected_loss"]) for v in variants]),
    ]
    # Once the monitor has computed them from the log: the mean that adaptive allocation does not bias.
    corrected = state.get("corrected_means") or {}
    if any((c or {}).get("mean") is not None for c in corrected.values()):
        columns.insert(2, Column("IPS mean", [fmt((corrected.get(v["name"]) or {}).get("mean")) for v in variants]))
    columns += [
        Column("traffic", [f"{v['traffic_share']:.1%}" for v in variants]),
        Column("requests", [str(v["requests"]) for v in variants]),
        Column("rewards", [str(v["rewards"]) for v in variants]),
    ]
    # Only once the monitor has computed KPIs (labelled feedback): an empty column says nothing.
    if state.get("kpis"):
        columns.append(Column("accuracy (window)", [window_accuracy(state, v["name"]) for v in variants]))
    return fitted_tables(console, title, key, columns)


def segments_tables(console: Console, state: dict[str, Any]) -> list[Table]:
    """contextual_thompson: each segment's champion, or the shares it routes by."""
    segments = state.get("segments")
    if not segments:
        return []
    names = [v["name"] for v in state["variants"] if v.get("role") == "arm"]
    rows = list(segments.items())
    key = Column("segment", [k for k, _ in rows], justify="left")
    columns = [
        Column("champion", [seg.get("champion") or "-" for _, seg in rows], justify="left"),
        Column("mode", [seg["mode"] for _, seg in rows], justify="left"),
    ]
    for v in names:
        columns.append(Column(v, [
            f"{seg['shares'].get(v, 0.0):.1%} ({fmt((seg.get('means') or {}).get(v), '.3f')}, {seg['rewards'].get(v, 0)})"
            for _, seg in rows
        ]))
    title = f"{state['name']}: routing by segment (per variant: share (mean reward, rewards))"
    return fitted_tables(console, title, key, columns)


def linear_tables(console: Console, state: dict[str, Any]) -> list[Table]:
    """linear_thompson: each variant's learned coefficients (mean ± sd) by context term."""
    linear = state.get("linear")
    if not linear:
        return []
    models = list(linear["variants"].items())
    key = Column("variant", [name for name, _ in models], justify="left")
    columns = [Column("rewards", [str(m["rewards"]) for _, m in models])]
    for t in linear["terms"]:
        columns.append(Column(t, [f"{fmt(m['coefficients'][t])} ± {fmt(m['coefficient_sd'][t])}" for _, m in models]))
    columns.append(Column("noise sd", [fmt(m["noise_sd"]) for _, m in models]))
    return fitted_tables(console, f"{state['name']}: linear models of the reward", key, columns)


def off_policy_tables(console: Console, result: dict[str, Any]) -> list[Table]:
    target = result["target"] if isinstance(result["target"], str) else ", ".join(
        f"{k}={v:g}" for k, v in result["target"].items())
    title = (f"{result['experiment']}: value of {target} ({result['n']} logged rewards, "
             f"largest weight {result['max_weight']:.3g})")
    estimates = list(result["estimates"].values())
    key = Column("estimator", [e["estimator"].upper() for e in estimates], justify="left")
    columns = [
        Column("value", [fmt(e["value"]) for e in estimates]),
        Column("95% interval", [f"[{fmt(e['ci_low'])}, {fmt(e['ci_high'])}]" for e in estimates]),
        Column("std. error", [fmt(e["stderr"]) for e in estimates]),
        Column("effective n", [fmt(e["ess"], ".1f") for e in estimates]),
    ]
    return fitted_tables(console, title, key, columns)
