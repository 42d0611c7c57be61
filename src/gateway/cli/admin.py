"""CLI verbs that talk to a running gateway over HTTP: status and the operator decisions."""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable
from typing import Any, Optional

import typer
from rich.console import Console

from gateway.cli.status_view import linear_tables, off_policy_tables, segments_tables, status_tables
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


def register(app: typer.Typer) -> None:
    @app.command()
    def status(experiment: Optional[str] = typer.Argument(None, help="One experiment (default: all)."), url: str = URL) -> None:
        """A table per experiment: posteriors, P(best), traffic share, counts."""
        states = _call(url, lambda c: [c.experiment(experiment)] if experiment else c.experiments())
        for state in states:
            console.print(*status_tables(console, state), *segments_tables(console, state),
                          *linear_tables(console, state))
            for entry in state.get("history", [])[-5:]:
                console.print(f"  {entry['action']} {entry.get('variant') or ''}: {entry.get('reason', '')}", highlight=False)

    def decided(state: dict[str, Any]) -> None:
        console.print(*status_tables(console, state))

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
        console.print(*off_policy_tables(console, result))

    @app.command("add-variant")
    def add_variant(
        experiment: str,
        name: str,
        model: str = typer.Argument(..., help="Artifact path (.skops, .ubj, .json) on the gateway's machine, or an "
                                    "MLflow model URI: models:/<name>/<version>, models:/<name>@<alias>, "
                                    "runs:/<run_id>/<path>."),
        sha256: Optional[str] = typer.Option(None, help="Refuse the artifact unless its sha256 is this."),
        features: Optional[str] = typer.Option(
            None, help="Comma-separated features the model takes, in its column order (default: its metadata's, "
            "else all the policy's)."),
        url: str = URL,
    ) -> None:
        """Add a challenger from a model artifact or an MLflow model; the bandit starts testing it at once."""
        from gateway.policy import is_mlflow_uri

        names = [n.strip() for n in features.split(",") if n.strip()] if features else None
        # A path is made absolute here (the gateway's working directory is not this one); an
        # MLflow URI goes as it is, for the gateway to fetch.
        source = model if is_mlflow_uri(model) else str(Path(model).resolve())
        decided(_call(url, lambda c: c.add_variant(experiment, name, source, sha256, names)))

    @app.command()
    def retrain(experiment: str, url: str = URL) -> None:
        """Retrain now on the newest labelled traffic; an admitted challenger is added."""
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("retraining {task.description}"), TimeElapsedColumn(), console=console) as bar:
            bar.add_task(experiment)
            outcome = _call(url, lambda c: c.retrain(experiment))
        console.print(f"{outcome['outcome']}: {outcome.get('variant') or outcome.get('reason', '')}", highlight=False)
