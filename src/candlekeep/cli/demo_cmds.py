"""``candlekeep demo``: the whole pipeline against the simulated exchange, offline."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from candlekeep.cli.common import console, friendly_errors, print_json, run
from candlekeep.cli.data_cmds import coverage_table, current_coverage
from candlekeep.core.clock import SystemClock
from candlekeep.core.timeframes import DAY_MS

if TYPE_CHECKING:
    from candlekeep.jobs.base import JobResult
    from candlekeep.sim.archive import ArchiveSpec

DEMO_SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
NEW_LISTING = "CKEEP/USDT"
"""A symbol listed during the demo window: backfill starts at its listing, no gap before."""
DEMO_TIMEFRAMES = ("1m", "5m", "1h")


def write_demo_config(folder: Path, base_url: str, start_ms: int) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "candlekeep.yaml"
    cfg: dict[str, Any] = {
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        # bulk: backfill takes past days from the sim's copy of Binance's archive.
        "sources": {"simbinance": {"type": "ccxt", "exchange": "binance",
                                   "market_type": "spot", "base_url": base_url,
                                   "bulk": {"base_url": base_url}}},
        "series": [{"source": "simbinance", "symbols": [*DEMO_SYMBOLS, NEW_LISTING],
                    "timeframes": list(DEMO_TIMEFRAMES), "start": start_ms, "store": "main"}],
        "jobs": [
            {"name": "ingest.fast", "type": "ingest", "schedule": "*/5 * * * *"},
            {"name": "gaps.scan", "type": "gaps_scan", "schedule": "7 * * * *"},
            {"name": "repair.nightly", "type": "gaps_repair", "schedule": "0 2 * * *",
             "params": {"max_gaps": 100}},
            {"name": "freshness", "type": "freshness", "schedule": "*/5 * * * *"},
        ],
        "api": {"listen": "127.0.0.1:8765"},
    }
    cfg.update(_kept_sections(path))
    header = ("# Written by 'candlekeep demo'; the sim server's port changes every run.\n"
              "# Edits to 'stores' and 'state' are kept by the next demo run (point the demo\n"
              "# at PostgreSQL: stores: {main: {type: postgresql, dsn: postgresql://...}}).\n"
              "# Try: candlekeep --config candlekeep-demo/candlekeep.yaml coverage\n")
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False))
    return path


def _kept_sections(path: Path) -> dict[str, Any]:
    """The user's ``stores`` (store ``main`` must stay) and ``state`` from an earlier run's
    config: one edit points the demo at another store or state DB."""
    import yaml

    if not path.exists():
        return {}
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return {}
    kept = {k: old[k] for k in ("stores", "state") if old.get(k)}
    if "main" not in kept.get("stores", {"main": None}):
        del kept["stores"]
    return kept


def demo_archive(start_ms: int) -> ArchiveSpec:
    """The sim's archive with what the real one does now and then: a day not published yet
    (backfill takes it through REST) and a file whose CHECKSUM disagrees (fetched once more,
    then replaced, with a warning naming it). A day's files appear a day after it ends, so
    yesterday and today come through REST, where the late candles are that repair fills."""
    from candlekeep.sim.archive import ArchiveFault, ArchiveSpec, FaultKind
    from candlekeep.sources.binance_archive.paths import ArchiveFile, Market, Period, ms_day

    def stem(symbol_id: str, interval: str) -> str:
        f = ArchiveFile(Market.SPOT, symbol_id, interval, Period.DAILY, ms_day(start_ms))
        return f.path.removesuffix(".zip")

    return ArchiveSpec(daily_delay_ms=DAY_MS,
                       faults=(ArchiveFault(FaultKind.MISSING, stem("ETHUSDT", "1m")),
                               ArchiveFault(FaultKind.BAD_CHECKSUM, stem("SOLUSDT", "5m"))))


async def _pipeline(cfg_path: Path, show_progress: bool) -> dict[str, Any]:
    from candlekeep.cli.progress import progress_for
    from candlekeep.config import load_config
    from candlekeep.jobs.runner import build_params
    from candlekeep.jobs.runtime import Runtime
    from candlekeep.scheduler.manual import run_adhoc

    rt = Runtime(load_config(cfg_path))
    steps: dict[str, JobResult] = {}
    try:
        plan: tuple[tuple[str, str, dict[str, Any]], ...] = (
            ("backfill", "backfill", {}),
            ("ingest", "ingest", {}),
            ("gaps scan", "gaps_scan", {}),
            ("repair #1", "gaps_repair", {}),
            ("repair #2", "gaps_repair", {}),
            ("freshness", "freshness", {}),
        )
        for step, job, params in plan:
            t0 = time.monotonic()
            with progress_for(console, show_progress and step == "backfill") as prog:
                steps[step] = await run_adhoc(rt, job, build_params(job, params),
                                              progress=prog)
            steps[step].details["elapsed_s"] = round(time.monotonic() - t0, 2)
        cov, _ = current_coverage(rt)
        gap_status = Counter(g.status for g in rt.state.list_gaps())
    finally:
        await rt.aclose()
    return {"steps": steps, "coverage": cov, "gaps": dict(gap_status)}


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def demo(
        folder: Path = typer.Option(Path("candlekeep-demo"), "--dir",
                                    help="Where the demo config and data go."),
        days: float = typer.Option(3.0, "--days", min=0.1, max=60,
                                   help="History to backfill on the first run."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Backfill, ingest, scan and repair against the built-in simulated exchange."""
        from candlekeep.queries.encode import plain
        from candlekeep.sim.exchange import SimExchange, TransientSpec
        from candlekeep.sim.server import run_in_thread

        t0 = time.monotonic()
        now = SystemClock().now_ms()
        start = (now - int(days * DAY_MS)) // DAY_MS * DAY_MS
        symbols: dict[str, int | str | None] = {s: None for s in DEMO_SYMBOLS}
        symbols[NEW_LISTING] = start + int(days * DAY_MS) // 2 // 60_000 * 60_000
        # Late data every day and series: repair always has something to fill.
        exchange = SimExchange(seed=7, symbols=symbols,
                               transient=TransientSpec(probability=1.0))
        with run_in_thread(exchange, archive=demo_archive(start)) as base_url:
            cfg_path = write_demo_config(folder, base_url, start)
            out = run(_pipeline(cfg_path, not as_json))
        elapsed = time.monotonic() - t0
        steps: dict[str, JobResult] = out["steps"]
        requests = sum(r.requests for r in steps.values())
        rows = sum(r.rows_written for r in steps.values())
        ok = all(r.ok for r in steps.values())
        if as_json:
            print_json({
                "ok": ok, "config": str(cfg_path), "elapsed_s": round(elapsed, 2),
                "requests": requests, "rows_written": rows, "gaps": out["gaps"],
                "steps": {k: {"rows_written": v.rows_written, "requests": v.requests,
                              "errors": v.errors, "warnings": v.warnings,
                              "details": v.details}
                          for k, v in steps.items()},
                "coverage": plain(out["coverage"]),
            })
        else:
            _print_summary(steps, out, requests, rows, elapsed, cfg_path)
        if not ok:
            raise typer.Exit(1)


def _archive_note(details: dict[str, Any]) -> str:
    a = details.get("archive")
    if not a:
        return ""
    replaced = a.get("missing", 0) + a.get("rejected", 0) + a.get("unavailable", 0)
    return (f", {a.get('rows', 0):,} candles from {a.get('files', 0)} archive files"
            + (f" ({replaced} replaced)" if replaced else ""))


def _print_summary(steps: dict[str, JobResult], out: dict[str, Any], requests: int, rows: int,
                   elapsed: float, cfg_path: Path) -> None:
    table = Table(title="demo steps")
    for col in ("step", "rows written", "requests", "seconds", "result"):
        table.add_column(col, justify="left" if col in ("step", "result") else "right")
    for name, r in steps.items():
        d = r.details
        note = {
            "gaps scan": f"{d.get('gaps', 0)} gaps, {d.get('missing_candles', 0)} candles "
                         "missing",
            "repair #1": f"repaired {d.get('repaired', 0)}, empty {d.get('still_empty', 0)}",
            "repair #2": f"repaired {d.get('repaired', 0)}, confirmed empty "
                         f"{d.get('confirmed_empty', 0)}",
            "freshness": f"{d.get('ok', 0)} fresh, {d.get('stale', 0)} stale, "
                         f"{d.get('missing', 0)} missing",
        }.get(name, f"{d.get('series', 0)} series" + _archive_note(d))
        status = "[green]ok[/]" if r.ok else f"[red]{'; '.join(r.errors)[:80]}[/]"
        table.add_row(name, f"{r.rows_written:,}", f"{r.requests:,}",
                      f"{d.get('elapsed_s', 0):.1f}", f"{status} {note}")
    console.print(table)
    for w in steps["backfill"].warnings:
        console.print(f"[yellow]backfill warning:[/] {escape(w)}", highlight=False)
    console.print(coverage_table(out["coverage"]))
    gaps = out["gaps"]
    console.print(
        "gaps by status: " + (", ".join(f"{k}={v}" for k, v in sorted(gaps.items())) or "none"),
        highlight=False)
    console.print(f"[bold]{len(out['coverage'])} series, {rows:,} candles written, "
                  f"{requests:,} requests, {elapsed:.1f}s[/]  config: {cfg_path}",
                  highlight=False)
    console.print(f"watch it: candlekeep --config {cfg_path} serve, then open "
                  "http://127.0.0.1:8765/", highlight=False)
