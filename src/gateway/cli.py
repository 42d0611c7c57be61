"""The `gateway` command line."""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from gateway import cli_admin
from gateway.policy import PolicyError, load_policies
from gateway.settings import SettingsError, load_settings

app = typer.Typer(help="A model-serving gateway with bandit routing and automatic promotion.", no_args_is_help=True)
policy_app = typer.Typer(help="Work with policy files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
cli_admin.register(app)

console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


@app.command()
def serve(
    policy: Optional[Path] = typer.Option(None, help="A policy file or a folder of them [env GATEWAY_POLICY]."),
    port: Optional[int] = typer.Option(None, help="HTTP port [env GATEWAY_HTTP_PORT, default 8000]."),
    state_dir: Optional[Path] = typer.Option(None, help="Embedded Redis data, registry, logs [env GATEWAY_STATE_DIR]."),
) -> None:
    """Run the gateway until SIGINT or SIGTERM, then stop everything it started."""
    from gateway.runtime import LocalGateway, quiet_ray_environment

    try:
        settings = load_settings(policy=policy, http_port=port, state_dir=state_dir)
        load_policies(settings.policy)  # fail fast, before Ray starts
    except (SettingsError, PolicyError) as err:
        _fail(str(err))
    quiet_ray_environment()
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        if not stop.is_set():
            stop.set()
            if starting.is_set():
                raise KeyboardInterrupt  # abandon start-up; LocalGateway.start cleans up

    starting = threading.Event()
    starting.set()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    gw = LocalGateway(settings)
    try:
        gw.start()
    except KeyboardInterrupt:
        console.print("stopped during start-up")
        return
    except (PolicyError, ValueError) as err:
        _fail(str(err))
    starting.clear()
    console.print(f"gateway serving {settings.policy} at {gw.url} (state in {settings.state_dir})", highlight=False)
    try:
        stop.wait()
    finally:
        console.print("stopping ...")
        gw.stop()
        console.print("stopped")


@policy_app.command("check")
def policy_check(file: Path = typer.Argument(..., help="A policy file or folder.")) -> None:
    """Validate policy files; errors name the field."""
    try:
        policies = load_policies(file)
    except PolicyError as err:
        _fail(str(err), code=1)
    for name, (p, path) in policies.items():
        console.print(
            f"[green]ok[/green] {path}: experiment {name!r}, variants {p.variant_names}, algorithm {p.algorithm}",
            highlight=False,
        )


@app.command()
def demo(
    quick: bool = typer.Option(False, "--quick", help="Finish in under 3 minutes on 2 cores."),
    seed: int = typer.Option(0, help="Seed of the simulated users."),
    summary_json: Optional[Path] = typer.Option(None, help="Write the summary here as JSON."),
    state_dir: Optional[Path] = typer.Option(None, help="A new folder for this demo's state."),
    policy: Path = typer.Option(Path("policies/default.yaml"), help="The policy the demo serves."),
    port: Optional[int] = typer.Option(None, help="HTTP port (default: a free one)."),
) -> None:
    """Run the whole system with simulated users, show the bandit learn and promote, and
    leave an HTML report."""
    from gateway.demo import DemoError, run_demo

    try:
        summary = run_demo(quick=quick, seed=seed, state_dir=state_dir, policy=policy, port=port, console=console)
    except (DemoError, PolicyError, SettingsError) as err:
        _fail(str(err))
    if summary_json is not None:
        import json

        summary_json.write_text(json.dumps(summary, indent=2))
        console.print(f"summary written to {summary_json}", highlight=False)


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
