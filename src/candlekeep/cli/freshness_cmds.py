"""``candlekeep freshness``: run the freshness check now (through the run path, recorded
like any run) and show the verdicts as the API's ``/freshness`` does."""

from __future__ import annotations

import time

import typer
from rich.markup import escape
from rich.table import Table

from candlekeep.cli import common
from candlekeep.cli.common import console, err_console, friendly_errors, print_json
from candlekeep.core.timeutil import fmt_duration, fmt_ms
from candlekeep.state.statuses import FreshnessStatus

_STYLE = {FreshnessStatus.OK: "green", FreshnessStatus.STALE: "yellow",
          FreshnessStatus.MISSING: "red", FreshnessStatus.ERROR: "red"}


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def freshness(
        ctx: typer.Context,
        check: bool = typer.Option(True, "--check/--no-check",
                                   help="Judge now (default), or show the last verdicts."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Age of the newest row of every series and watched dataset against its threshold.

        Exits 1 when anything is stale, missing or unreadable, so it can gate a check.
        """
        from candlekeep.cli.data_cmds import run_job
        from candlekeep.queries.encode import plain
        from candlekeep.queries.freshness import freshness as read_freshness
        from candlekeep.state.reader import reading

        cfg = common.state(ctx).config()
        failed = False
        if check:
            result = common.run(run_job(ctx, "freshness", {}, show_progress=False))
            failed = not result.ok
            for e in result.errors:
                err_console.print(f"[red]error:[/] {escape(e)}", highlight=False)
        with reading(cfg.state_url, cfg.data_dir) as reader:
            views = read_freshness(reader)
        now = int(time.time() * 1000)
        if as_json:
            print_json(plain(views))
        else:
            table = Table(title="freshness")
            for col, just in (("store", "left"), ("subject", "left"), ("status", "left"),
                              ("newest (UTC)", "left"), ("age", "right"),
                              ("allowed", "right"), ("since", "left"), ("detail", "left")):
                table.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
            for v in views:
                style = _STYLE[v.status]
                table.add_row(v.store, escape(v.subject), f"[{style}]{v.status}[/]",
                              fmt_ms(v.newest_ms),
                              fmt_duration(v.age_ms) if v.age_ms is not None else "-",
                              fmt_duration(v.threshold_ms),
                              fmt_duration(max(0, now - v.status_since)) + " ago",
                              escape(v.detail or ""))
            console.print(table)
            if not views:
                console.print("nothing to judge: no open-ended series and no watched datasets "
                              "(see freshness: in the guide)")
        if failed or any(v.status != FreshnessStatus.OK for v in views):
            raise typer.Exit(1)
