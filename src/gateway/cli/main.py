"""The `gateway` command line."""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from gateway.cli import admin as cli_admin
from gateway.cli.terminal import log_path, ray_output_to_log
from gateway.policy import PolicyError, load_policies
from gateway.settings import SettingsError, load_settings

app = typer.Typer(help="A model-serving gateway with bandit routing and automatic promotion.", no_args_is_help=True)
policy_app = typer.Typer(help="Work with policy files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
cli_admin.register(app)

console = Console()
err_console = Console(stderr=True)

VERBOSE_HELP = "Show Ray's own log lines here instead of in STATE_DIR/logs/gateway.log [env GATEWAY_VERBOSE]."


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


@app.command()
def serve(
    policy: Optional[Path] = typer.Option(None, help="A policy file or a folder of them [env GATEWAY_POLICY]."),
    port: Optional[int] = typer.Option(None, help="HTTP port [env GATEWAY_HTTP_PORT, default 8000]."),
    state_dir: Optional[Path] = typer.Option(None, help="Embedded Redis data, registry, logs [env GATEWAY_STATE_DIR]."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Run the gateway until SIGINT or SIGTERM, then stop everything it started."""
    from gateway.cli.local import LocalGateway, quiet_ray_environment
    from gateway.serving.ports import PortInUse

    try:
        settings = load_settings(policy=policy, http_port=port, state_dir=state_dir, verbose=verbose or None)
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
    log_file = log_path(settings.state_dir)
    with ray_output_to_log(log_file, [console, err_console], settings.verbose):
        if not settings.verbose:
            # soft_wrap: a path cut at the terminal's edge could not be pasted
            console.print(f"Ray's own messages go to {log_file} (--verbose: here)", highlight=False, soft_wrap=True)
        try:
            gw.start()
        except KeyboardInterrupt:
            console.print("stopped during start-up")
            return
        except (PolicyError, ValueError, PortInUse) as err:
            _fail(str(err))
        starting.clear()
        grpc = f", OIP gRPC at {settings.http_host}:{settings.grpc_port}" if settings.grpc_port else ""
        console.print(f"gateway serving {settings.policy} at {gw.url}{grpc} (state in {settings.state_dir})",
                      highlight=False, soft_wrap=True)
        try:
            stop.wait()
        finally:
            console.print("stopping ...")
            gw.stop()
            console.print("stopped")


@app.command()
def plan(
    baseline: float = typer.Option(..., help="Reward rate of the current model, e.g. 0.10."),
    mde: float = typer.Option(..., help="Smallest lift worth detecting, absolute, e.g. 0.02."),
    daily_traffic: Optional[float] = typer.Option(None, help="Rewards per day, for durations."),
    alpha: float = typer.Option(0.05, help="Error rate of the tests."),
    power: float = typer.Option(0.8, help="Power of the fixed-horizon test."),
    seeds: int = typer.Option(400, help="Simulated experiments for the sequential rule."),
) -> None:
    """How much traffic an experiment needs: a fixed-horizon test versus the gateway's rule."""
    from rich.table import Table

    from gateway.bandit.planning import plan as make_plan

    try:
        p = make_plan(baseline, mde, daily_traffic, alpha=alpha, power=power, seeds=seeds)
    except ValueError as err:
        _fail(str(err))

    def days(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f} days"

    table = Table(title=f"{baseline:g} vs {baseline + mde:g} (alpha {alpha:g})")
    for col in ("design", "rewards (total)", "duration"):
        table.add_column(col)
    table.add_row(f"fixed horizon, power {power:g}", f"{p.fixed_horizon_total:,} ({p.fixed_horizon_per_variant:,} per variant)",
                  days(p.fixed_horizon_days))
    median = "-" if p.sequential_median_total is None else f"{p.sequential_median_total:,.0f} (median)"
    table.add_row(f"gateway rule, top-two Thompson ({p.seeds} simulations)", median, days(p.sequential_median_days))
    console.print(table)
    console.print(f"the rule promoted the better variant in {p.sequential_promoted_share:.0%} of simulations "
                  f"within {p.horizon:,} rewards", highlight=False)


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
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Run the whole system with simulated users, show the bandit learn and promote, and
    leave an HTML report."""
    from gateway.cli.demo import DemoError, run_demo
    from gateway.serving.ports import PortInUse

    try:
        summary = run_demo(quick=quick, seed=seed, state_dir=state_dir, policy=policy, port=port, console=console,
                           consoles=[console, err_console], verbose=verbose)
    except (DemoError, PolicyError, SettingsError, PortInUse) as err:
        _fail(str(err))
    if summary_json is not None:
        import json

        summary_json.write_text(json.dumps(summary, indent=2))
        console.print(f"summary written to {summary_json}", highlight=False, soft_wrap=True)
