"""Data commands: backfill, ingest, gaps scan/list/repair, coverage.

Each command imports the job machinery it needs when it runs (see scheduler_cmds.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from candlekeep.cli import common
from candlekeep.cli.common import console, friendly_errors, print_json
from candlekeep.core.timeutil import fmt_ms, to_ms
from candlekeep.state.statuses import GAP_STATUSES

if TYPE_CHECKING:
    from candlekeep.jobs.base import JobResult
    from candlekeep.jobs.runtime import Runtime
    from candlekeep.queries.coverage import CoverageView

gaps_app = typer.Typer(help="Find, list and repair missing candle ranges.", no_args_is_help=True)


def _date(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    try:
        return to_ms(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from None


async def run_job(ctx: typer.Context, job_type: str, params: dict[str, Any], *,
                  dry_run: bool = False, show_progress: bool = True,
                  name: str | None = None) -> JobResult:
    from candlekeep.cli.progress import progress_for
    from candlekeep.jobs.runner import build_params
    from candlekeep.jobs.runtime import Runtime
    from candlekeep.scheduler.manual import run_adhoc

    cfg = common.state(ctx).config()
    p = build_params(job_type, {k: v for k, v in params.items() if v is not None})
    rt = Runtime(cfg)
    try:
        with progress_for(console, show_progress) as prog:
            return await run_adhoc(rt, job_type, p, dry_run=dry_run, progress=prog,
                                   name=name)
    finally:
        await rt.aclose()


def report(result: JobResult, started: float, as_json: bool, what: str) -> None:
    elapsed = time.monotonic() - started
    if as_json:
        print_json({"ok": result.ok, "rows_written": result.rows_written,
                    "requests": result.requests, "errors": result.errors,
                    "warnings": result.warnings, "details": result.details,
                    "elapsed_s": round(elapsed, 3)})
    else:
        for w in result.warnings:
            console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
        for e in result.errors:
            console.print(f"[red]error:[/] {escape(e)}", highlight=False)
        plan = result.details.get("plan")
        if plan:
            for line in plan if isinstance(plan, list) else [plan]:
                console.print(f"would fetch {line}", highlight=False)
        status = "[green]ok[/]" if result.ok else "[red]failed[/]"
        console.print(f"{what}: {status} rows={result.rows_written} "
                      f"requests={result.requests} in {elapsed:.1f}s", highlight=False)
    if not result.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def backfill(
        ctx: typer.Context,
        source: str | None = typer.Option(None, "--source", help="Only this source."),
        symbol: str | None = typer.Option(None, "--symbol", help="Only this symbol."),
        timeframe: str | None = typer.Option(None, "--timeframe", help="Only this timeframe."),
        start: str | None = typer.Option(None, "--start", help="From this date (UTC)."),
        end: str | None = typer.Option(None, "--end", help="Up to this date (UTC)."),
        restart: bool = typer.Option(False, "--restart/--resume",
                                     help="Ignore checkpoints (default: resume)."),
        bulk: bool = typer.Option(True, "--bulk/--no-bulk",
                                  help="Use the archive of sources with a bulk block."),
        dry_run: bool = typer.Option(False, "--dry-run",
                                     help="Say what would be fetched: files and REST ranges."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Fetch history of the configured series; resumes where it stopped."""
        t0 = time.monotonic()
        res = common.run(run_job(ctx, "backfill", {
            "source": source, "symbol": symbol, "timeframe": timeframe,
            "start": _date(start, "--start"), "end": _date(end, "--end"), "restart": restart,
            "bulk": bulk,
        }, dry_run=dry_run, show_progress=not as_json))
        report(res, t0, as_json, "backfill")

    @app.command()
    @friendly_errors
    def ingest(
        ctx: typer.Context,
        source: str | None = typer.Option(None, "--source"),
        symbol: str | None = typer.Option(None, "--symbol"),
        timeframe: str | None = typer.Option(None, "--timeframe"),
        dry_run: bool = typer.Option(False, "--dry-run"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Fetch from each series' last stored candle up to the last closed one."""
        t0 = time.monotonic()
        res = common.run(run_job(ctx, "ingest", {
            "source": source, "symbol": symbol, "timeframe": timeframe,
        }, dry_run=dry_run, show_progress=not as_json))
        report(res, t0, as_json, "ingest")

    @gaps_app.command("scan")
    @friendly_errors
    def gaps_scan(
        ctx: typer.Context,
        source: str | None = typer.Option(None, "--source"),
        symbol: str | None = typer.Option(None, "--symbol"),
        timeframe: str | None = typer.Option(None, "--timeframe"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Find missing ranges inside each series' stored span (in the store, with SQL)."""
        t0 = time.monotonic()
        res = common.run(run_job(ctx, "gaps_scan", {
            "source": source, "symbol": symbol, "timeframe": timeframe}, show_progress=False))
        if not as_json:
            d = res.details
            console.print(f"gaps found={d.get('gaps', 0)} missing candles="
                          f"{d.get('missing_candles', 0)} new={d.get('new', 0)} "
                          f"closed={d.get('closed', 0)}", highlight=False)
        report(res, t0, as_json, "gaps scan")

    @gaps_app.command("list")
    @friendly_errors
    def gaps_list(
        ctx: typer.Context,
        status: str | None = typer.Option(None, "--status", help="|".join(GAP_STATUSES)),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Recorded gaps with their status and attempts."""
        if status is not None and status not in GAP_STATUSES:
            raise typer.BadParameter(f"use one of {', '.join(GAP_STATUSES)}",
                                     param_hint="--status")
        from candlekeep.queries.encode import plain
        from candlekeep.queries.gaps import gaps
        from candlekeep.state.reader import reading

        cfg = common.state(ctx).config()
        with reading(cfg.state_url, cfg.data_dir) as reader:
            rows = gaps(reader, status=status).items
        if as_json:
            print_json(plain(rows))
            return
        table = Table(title=f"gaps ({len(rows)})")
        for col in ("series", "from", "to", "candles", "status", "attempts", "last error"):
            table.add_column(col)
        for r in rows:
            table.add_row(r.series, fmt_ms(r.gap_start), fmt_ms(r.gap_end), str(r.candles),
                          r.status, str(r.attempts), (r.last_error or "")[:60])
        console.print(table)

    @gaps_app.command("repair")
    @friendly_errors
    def gaps_repair(
        ctx: typer.Context,
        max_gaps: int | None = typer.Option(None, "--max-gaps", min=1),
        include_failed: bool = typer.Option(False, "--include-failed"),
        dry_run: bool = typer.Option(False, "--dry-run"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Refetch open gaps; mark exchange-side holes confirmed_empty after two empty tries."""
        t0 = time.monotonic()
        res = common.run(run_job(ctx, "gaps_repair", {
            "max_gaps": max_gaps, "include_failed": include_failed},
            dry_run=dry_run, show_progress=not as_json))
        if not as_json:
            d = res.details
            console.print(
                f"gaps={d.get('gaps', 0)} windows={d.get('windows', 0)} "
                f"repaired={d.get('repaired', 0)} still empty={d.get('still_empty', 0)} "
                f"confirmed empty={d.get('confirmed_empty', 0)} partial={d.get('partial', 0)} "
                f"errors={d.get('errors', 0)}", highlight=False)
        report(res, t0, as_json, "gaps repair")

    app.add_typer(gaps_app, name="gaps")

    @app.command("coverage")
    @friendly_errors
    def coverage_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
        """Per series: first, last, stored, expected, missing, confirmed empty, coverage %.

        Reads each store once to bring the state DB's series state up to date, then shows
        what ``/coverage`` shows."""
        from candlekeep.jobs.runtime import Runtime
        from candlekeep.queries.encode import plain

        rt = Runtime(common.state(ctx).config())
        try:
            rows, errors = current_coverage(rt)
        finally:
            common.run(rt.aclose())
        for store, error in errors.items():
            console.print(f"[yellow]warning:[/] store {escape(store)} could not be read "
                          f"({escape(error)}); its rows are as last recorded", highlight=False)
        if as_json:
            print_json(plain(rows))
            return
        console.print(coverage_table(rows))


def current_coverage(rt: Runtime) -> tuple[list[CoverageView], dict[str, str]]:
    """Coverage as ``/coverage`` shows it, after one scan per store has brought the state
    DB's series state up to date; with the stores that could not be read."""
    from candlekeep.freshness.check import refresh_series_state
    from candlekeep.queries.coverage import coverage
    from candlekeep.state.reader import reading

    cfg = rt.config
    errors = refresh_series_state(rt, rt.clock.now_ms())
    with reading(cfg.state_url, cfg.data_dir) as reader:
        return coverage(reader, rt.plans()), errors


def coverage_table(rows: Sequence[CoverageView]) -> Table:
    """Coverage rows as a table."""
    table = Table(title="coverage")
    for col, just in (("series", "left"), ("first", "left"), ("last", "left"),
                      ("stored", "right"), ("expected", "right"), ("missing", "right"),
                      ("confirmed empty", "right"), ("coverage %", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    notes = any(r.note for r in rows)
    if notes:
        table.add_column("note")
    for r in rows:
        pct = r.coverage_pct
        color = "green" if pct >= 99.999 else ("yellow" if pct >= 99 else "red")
        name = (f"↳ {r.series} (fallback for {r.fallback_for})" if r.fallback_for
                else str(r.series))
        cells = [escape(name), fmt_ms(r.first_ms), fmt_ms(r.last_ms), f"{r.stored:,}",
                 f"{r.expected:,}", f"{r.missing:,}", f"{r.confirmed_empty:,}",
                 f"[{color}]{pct:.3f}[/]"]
        table.add_row(*cells, *([escape(r.note or "")] if notes else []))
    return table
