"""``candlekeep`` entry point: global options, then each command module registers itself."""

from __future__ import annotations

from pathlib import Path

import typer

from candlekeep import __version__
from candlekeep.cli import common

app = typer.Typer(
    name="candlekeep",
    help="Keeps crypto market data complete, fresh and correct on a schedule.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: Rich-formatted help imports a Markdown parser, a fifth of the start-up.
    rich_markup_mode=None,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"candlekeep {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", "-c", envvar="CANDLEKEEP_CONFIG",
        help="Path to candlekeep.yaml (default ./candlekeep.yaml)."),
    log_json: bool = typer.Option(False, "--log-json", help="Log JSON lines instead of text."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    common.configure(ctx, config, log_json, verbose)


def _register_commands() -> None:
    import importlib

    for module in ("data_cmds", "demo_cmds", "sim_cmds", "scheduler_cmds", "store_cmds",
                   "buffer_cmds", "freshness_cmds", "serve_cmds", "report_cmds",
                   "availability_cmds", "availability_query_cmds", "slo_cmds",
                   "providers_cmds", "regime_cmds", "scan_cmds"):
        try:
            mod = importlib.import_module(f"candlekeep.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"candlekeep.cli.{module}":
                raise
            continue
        mod.register(app)


_register_commands()
