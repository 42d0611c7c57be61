"""CLI verbs that talk to a running gateway over HTTP: status and the operator decisions."""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from gateway.client import Client, GatewayClientError

console = Console()
err_console = Console(stderr=True)

URL = typer.Option("http://127.0.0.1:8000", "--url", envvar="GATEWAY_URL", help="The running gateway.")


def _client(url: str) -> Client:
    return Client(url, admin_token=os.environ.get("GATEWAY_ADMIN_TOKEN"))


def _call(url: str, action: Callable[[Client], Any]) -> Any:
    try:
        with _client(url) as client:
            return action(client)
    except GatewayClientError as err:
        err_console.print(f"[red]error:[/red] {err.status} {err.code}: {err.message}", highlight=False)
        raise typer.Exit(1) from None


def posterior_text(posterior: dict[str, float]) -> str:
    """Beta(alpha, beta) of a bernoulli reward; NIG(mu, kappa, alpha, beta) of a gaussian one."""
    if "mu" in posterior:
        return f"NIG({posterior['mu']:.4g}, {posterior['kappa']:g}, {posterior['alpha']:g}, {posterior['beta']:.4g})"
    return f"Beta({posterior['alpha']:g}, {posterior['beta']:g})"


def window_accuracy(state: dict[str, Any], variant: str) -> str:
    """The variant's accuracy over its newest labels, with how many: '-' while there is none."""
    window = ((state.get("kpis") or {}).get(variant) or {}).get("window") or {}
    if window.get("accuracy") is None:
        return "-"
    return f"{window['accuracy']:.3f} (n={window.get('n', 0)})"


def status_table(state: dict[str, Any]) -> Table:
    title = (
        f"{state['name']}: {state['status']}"
        + (f", champion {state['champion']}" if state.get("champion") else "")
        + f" ({state['totals']['requests']} requests, {state['totals']['rewards']} rewards)"
    )
    table = Table(title=title)
    columns = ["variant", "posterior", "mean", "95% interval", "P(best)", "exp. loss", "traffic", "requests", "rewards"]
    # Only once the monitor has computed KPIs (labelled feedback): an empty column says nothing.
    with_kpis = bool(state.get("kpis"))
    if with_kpis:
        columns.append("accuracy (window)")
    # Once the monitor has computed them from the log: the mean that adaptive allocation does not bias.
    corrected = state.get("corrected_means") or {}
    with_ips = any((c or {}).get("mean") is not None for c in corrected.values())
    if with_ips:
        columns.insert(3, "IPS mean")
    for col in columns:
        table.add_column(col, justify="left" if col == "variant" else "right")
    for v in state["variants"]:
        name = v["name"] + (f" ({v['role']})" if v.get("role") in ("holdout", "shadow") else "")
        if v["name"] == state.get("champion"):
            name = f"[bold]{name}[/bold] *"
        lo, hi = v["credible_interval"]
        cells = [
            name,
            posterior_text(v["posterior"]),
            f"{v['mean']:.4f}",
            *([_fmt((corrected.get(v["name"]) or {}).get("mean"))] if with_ips else []),
            f"[{lo:.4f}, {hi:.4f}]",
            "-" if v["prob_best"] is None else f"{v['prob_best']:.3f}",
            "-" if v["expected_loss"] is None else f"{v['expected_loss']:.4f}",
            f"{v['traffic_share']:.1%}",
            str(v["requests"]),
            str(v["rewards"]),
        ]
        if with_kpis:
            cells.append(window_accuracy(state, v["name"]))
        table.add_row(*cells)
    return table


def segments_table(state: dict[str, Any]) -> Table | None:
    """contextual_thompson: each segment's champion, or the shares it routes by."""
    segments = state.get("segments")
    if not segments:
        return None
    names = [v["name"] for v in state["variants"] if v.get("role") == "arm"]
    table = Table(title=f"{state['name']}: routing by segment")
    for col in ("segment", "champion", "mode", *(f"{v} share (mean, rewards)" for v in names)):
        table.add_column(col, justify="left" if col in ("segment", "champion", "mode") else "right")
    for key, seg in segments.items():
        cells = [key, seg.get("champion") or "-", seg["mode"]]
        for v in names:
            mean = (seg.get("means") or {}).get(v)
            cells.append(f"{seg['shares'].get(v, 0.0):.1%} ({_fmt(mean, '.3f')}, {seg['rewards'].get(v, 0)})")
        table.add_row(*cells)
    return table


def linear_table(state: dict[str, Any]) -> Table | None:
    """linear_thompson: each variant's learned coefficients (mean +- sd) by context term."""
    linear = state.get("linear")
    if not linear:
        return None
    table = Table(title=f"{state['name']}: linear models of the reward")
    for col in ("variant", "rewards", *linear["terms"], "noise sd"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for name, model in linear["variants"].items():
        coefs = [f"{_fmt(model['coefficients'][t])} ± {_fmt(model['coefficient_sd'][t])}" for t in linear["terms"]]
        table.add_row(name, str(model["rewards"]), *coefs, _fmt(model["noise_sd"]))
    return table


def off_policy_table(result: dict[str, Any]) -> Table:
    target = result["target"] if isinstance(result["target"], str) else ", ".join(
        f"{k}={v:g}" for k, v in result["target"].items())
    table = Table(title=f"{result['experiment']}: value of {target} ({result['n']} logged rewards, "
                        f"largest weight {result['max_weight']:.3g})")
    for col in ("estimator", "value", "95% interval", "std. error", "effective n"):
        table.add_column(col, justify="left" if col == "estimator" else "right")
    for e in result["estimates"].values():
        cells = [e["estimator"].upper(), _fmt(e["value"]), f"[{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]",
                 _fmt(e["stderr"]), _fmt(e["ess"], ".1f")]
        table.add_row(*cells)
    return table


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def register(app: typer.Typer) -> None:
    @app.command()
    def status(experiment: Optional[str] = typer.Argument(None, help="One experiment (default: all)."), url: str = URL) -> None:
        """A table per experiment: posteriors, P(best), traffic share, counts."""
        states = _call(url, lambda c: [c.experiment(experiment)] if experiment else c.experiments())
        for state in states:
            console.print(status_table(state))
            for routing in (segments_table(state), linear_table(state)):
                if routing is not None:
                    console.print(routing)
            for entry in state.get("history", [])[-5:]:
                console.print(f"  {entry['action']} {entry.get('variant') or ''}: {entry.get('reason', '')}", highlight=False)

    def decided(state: dict[str, Any]) -> None:
        console.print(status_table(state))

    @app.command()
    def promote(experiment: str, variant: str, url: str = URL) -> None:
        """Make VARIANT the champion now (needs GATEWAY_ADMIN_TOKEN)."""
        decided(_call(url, lambda c: c.promote(experiment, variant)))

    @app.command()
    def rollback(experiment: str, url: str = URL) -> None:
        """Back to the previous champion, or to exploring."""
        decided(_call(url, lambda c: c.rollback(experiment)))

    @app.command()
    def pause(experiment: str, url: str = URL) -> None:
        """Freeze the traffic split; rewards still count, nothing is decided."""
        decided(_call(url, lambda c: c.pause(experiment)))

    @app.command()
    def resume(experiment: str, url: str = URL) -> None:
        """Undo a pause."""
        decided(_call(url, lambda c: c.resume(experiment)))

    @app.command()
    def retire(experiment: str, variant: str, url: str = URL) -> None:
        """Take VARIANT out of rotation for good."""
        decided(_call(url, lambda c: c.retire(experiment, variant)))

    @app.command()
    def shadow(
        experiment: str, variant: str,
        off: bool = typer.Option(False, "--off", help="Take it out of shadow: it joins the bandit."),
        url: str = URL,
    ) -> None:
        """Put VARIANT in shadow: it answers copies of live requests, scored on their labels, and serves no one."""
        decided(_call(url, lambda c: c.shadow(experiment, variant, on=not off)))

    @app.command()
    def ope(
        experiment: str,
        target: str = typer.Option("uniform", help="'uniform', a variant's name, or shares like 'a=0.3,b=0.7'."),
        url: str = URL,
    ) -> None:
        """Estimate what TARGET would have earned, from the logged traffic (IPS, SNIPS, doubly robust)."""
        result = _call(url, lambda c: c.off_policy(experiment, target))
        console.print(off_policy_table(result))

    @app.command("add-variant")
    def add_variant(
        experiment: str,
        name: str,
        model: str = typer.Argument(..., help="Artifact path (.skops, .ubj, .json) on the gateway's machine."),
        sha256: Optional[str] = typer.Option(None, help="Refuse the artifact unless its sha256 is this."),
        url: str = URL,
    ) -> None:
        """Add a challenger from a model artifact; the bandit starts testing it at once."""
        decided(_call(url, lambda c: c.add_variant(experiment, name, str(Path(model).resolve()), sha256)))

    @app.command()
    def retrain(experiment: str, url: str = URL) -> None:
        """Retrain now on the newest labelled traffic; an admitted challenger is added."""
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("retraining {task.description}"), TimeElapsedColumn(), console=console) as bar:
            bar.add_task(experiment)
            outcome = _call(url, lambda c: c.retrain(experiment))
        console.print(f"{outcome['outcome']}: {outcome.get('variant') or outcome.get('reason', '')}", highlight=False)
