"""``candlekeep slo``: each job's objective against its run history (``queries.slo``).

Reads the state DB through the listings' plain driver reader (no SQLAlchemy, no runtime),
like ``list`` and ``history``.
"""

from __future__ import annotations

import time

import typer
from rich.markup import escape
from rich.table import Table

from candlekeep.cli import common
from candlekeep.cli.common import console, friendly_errors, print_json
from candlekeep.core.timeutil import fmt_duration, fmt_ms, parse_duration

DAY_MS = 86_400_000


def _window_ms(window: str | None, days: float | None) -> int | None:
    if window is not None and days is not None:
        raise typer.BadParameter("give --window or --days, not both", param_hint="--window")
    if days is not None:
        if days <= 0:
            raise typer.BadParameter("must be more than 0", param_hint="--days")
        return int(days * DAY_MS)
    if window is None:
        return None
    try:
        seconds = parse_duration(window)
    except ValueError as exc:
        raise typer.BadParameter(f"{exc} (e.g. 30d, 12h)", param_hint="--window") from None
    if seconds <= 0:
        raise typer.BadParameter("must be longer than 0 (e.g. 30d)", param_hint="--window")
    return int(seconds * 1000)


def _window_text(ms: int) -> str:
    return f"{ms // DAY_MS}d" if ms % DAY_MS == 0 else fmt_duration(ms)


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def slo(
        ctx: typer.Context,
        window: str | None = typer.Option(None, "--window", help="Window for every job "
                                          "(e.g. 30d); default: each job's own."),
        days: float | None = typer.Option(None, "--days", help="Window in days (same as "
                                          "--window Nd)."),
        target: float | None = typer.Option(None, "--target", help="Required share (0..1) "
                                            "for every job; default: each job's own."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Per job: its objective (slo: block, its job type's default, else 95 % over 30
        days) against the runs in its window, with the error budget left.

        Scheduled jobs owe every tick (a tick not run, skipped or failed is a miss); jobs run
        by hand count the runs that ended. Exits 1 when an objective is not met, so it can
        gate a monitoring check.
        """
        if target is not None and not 0 < target <= 1:
            raise typer.BadParameter("must be in (0, 1]", param_hint="--target")
        window_ms = _window_ms(window, days)
        from candlekeep.queries.encode import plain
        from candlekeep.queries.slo import slo_views
        from candlekeep.scheduler.validate import load_jobs
        from candlekeep.state.reader import reading

        cfg = common.state(ctx).config()
        specs = load_jobs(cfg)
        with reading(cfg.state_url, cfg.data_dir) as reader:
            views = slo_views(specs, cfg, reader, int(time.time() * 1000), target=target,
                              window_ms=window_ms)
        if as_json:
            print_json(plain(views))
        else:
            table = Table()
            for col in ("job", "objective", "since (UTC)", "counted", "ok", "failed",
                        "skipped", "not run", "share", "budget left", "met", "last failure"):
                table.add_column(col, overflow="fold")
            for v in views:
                met = ("-" if v.met is None else "[green]yes[/]" if v.met else "[red]no[/]")
                budget = f"{v.budget_left} of {v.allowed_misses}" if v.expected_ticks else "-"
                table.add_row(
                    escape(v.job),
                    f"{v.target:.2%} / {_window_text(v.window_ms)} ({v.set_by})",
                    fmt_ms(v.since) if v.since is not None else "not yet seen",
                    f"{v.expected_ticks} {v.basis}", str(v.succeeded), str(v.failed),
                    str(v.skipped), str(v.not_run),
                    "-" if v.share is None else f"{v.share:.2%}",
                    budget, met, fmt_ms(v.last_failure_at))
            console.print(table)
            for v in views:
                if v.last_failure_at is not None:
                    error = (v.last_failure_error or "").replace("\n", " ")
                    console.print(f"{escape(v.job)}: last failure {fmt_ms(v.last_failure_at)} "
                                  f"{v.last_failure_status}: {escape(error[:200])}",
                                  highlight=False, soft_wrap=True)
            if not views:
                console.print("no job to judge: no enabled scheduled job and no job with an "
                              "slo: block")
        if any(v.met is False for v in views):
            raise typer.Exit(1)
