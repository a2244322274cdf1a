"""``candlekeep scan run PROFILE``: a scan through the run path (recorded in history like
any run): ``--dry-run`` scores and shows without writing artifacts or rows."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from candlekeep.cli import common
from candlekeep.cli.common import console, friendly_errors
from candlekeep.config.scans import SCAN_PROFILES as PROFILES

scan_app = typer.Typer(help="Scans of the universe from stored data (hot, warm, custom, "
                            "premove).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    @scan_app.command("run")
    @friendly_errors
    def run(
        ctx: typer.Context,
        profile: str = typer.Argument(..., help=f"One of: {', '.join(PROFILES)}."),
        universe: str | None = typer.Option(
            None, "--universe", "-u", help="Universe (default: the only one configured)."),
        timeframe: str = typer.Option("1h", "--timeframe", help="Candles to read (<= 1h)."),
        dry_run: bool = typer.Option(False, "--dry-run",
                                     help="Score and show; write no artifacts or rows."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Score the universe with the latest regime's weights and apply the profile's
        gates; write signals.csv and explain.json (premove: premove.csv too)."""
        from candlekeep.cli.data_cmds import report, run_job

        if profile not in PROFILES:
            console.print(f"[red]error:[/] unknown profile {escape(profile)!r}; valid: "
                          f"{', '.join(PROFILES)}", highlight=False)
            raise typer.Exit(2)
        t0 = time.monotonic()
        result = common.run(run_job(ctx, "scan", {
            "profile": profile, "universe": universe, "timeframe": timeframe,
        }, dry_run=dry_run, show_progress=False))
        if not as_json and result.ok:
            _show(result.details)
        report(result, t0, as_json, f"scan {profile}")

    app.add_typer(scan_app, name="scan")


def _show(found: dict[str, Any]) -> None:
    console.print(f"universe [bold]{escape(str(found['universe']))}[/], regime "
                  f"[bold]{found['regime']}[/]: {len(found['passed'])} of "
                  f"{found['symbols']} passed", highlight=False)
    if found["passed"]:
        table = Table()
        table.add_column("symbol")
        table.add_column("score", justify="right")
        for p in found["passed"]:
            table.add_row(escape(p["symbol"]), f"{p['score']:.2f}")
        console.print(table)
