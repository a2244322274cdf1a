"""``candlekeep providers``: each source's latest recorded health (``provider_health``, as
``GET /providers`` answers), or a check now with ``--probe`` (the ``providers_health`` job
through the run path, shown but not recorded: a fresh process's closed breakers and zero
counters must not overwrite the daemon's verdict)."""

from __future__ import annotations

import time

import typer
from rich.markup import escape
from rich.table import Table

from candlekeep.cli import common
from candlekeep.cli.common import console, err_console, friendly_errors, print_json
from candlekeep.core.timeutil import fmt_duration

_STYLE = {"up": "green", "degraded": "yellow", "down": "red"}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def providers(
        ctx: typer.Context,
        probe: bool = typer.Option(False, "--probe", help="Check every source now from "
                                   "this process (one light request each) and show it; "
                                   "the recorded verdicts are left as they are."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Per source: status (up, degraded, down), circuit, latency p50/p95, error and 429
        rates, rate budget use, as the last providers_health check recorded them.

        Exits 1 when a provider is degraded or down, so it can gate a check.
        """
        from candlekeep.queries.encode import plain
        from candlekeep.queries.providers import providers as read_providers
        from candlekeep.queries.providers import view_of
        from candlekeep.state.reader import reading

        cfg = common.state(ctx).config()
        if probe:
            from candlekeep.cli.data_cmds import run_job

            result = common.run(run_job(ctx, "providers_health", {"record": False},
                                        show_progress=False))
            for e in result.errors:
                err_console.print(f"[red]error:[/] {escape(e)}", highlight=False)
            views = [view_of(d, result.details["node"], int(time.time() * 1000))
                     for d in result.details.get("found", [])]
        else:
            with reading(cfg.state_url, cfg.data_dir) as reader:
                views = read_providers(reader)
        if as_json:
            print_json(plain(views))
        else:
            now = int(time.time() * 1000)
            table = Table(title="providers, checked now (not recorded)" if probe
                          else "providers")
            for col in ("source", "type", "status", "score", "circuit", "p50", "p95",
                        "errors", "429s", "budget", "checked", "why"):
                table.add_column(col, overflow="fold")
            for v in views:
                budget = (f"{v.budget_used}/{v.budget}" if v.budget is not None else "-")
                if v.budget_advertised is not None and v.budget != v.budget_advertised:
                    budget += f" (cut from {v.budget_advertised})"
                table.add_row(
                    escape(v.source), v.type, f"[{_STYLE[v.status]}]{v.status}[/]",
                    f"{v.score:.2f}", str(v.circuit), _seconds(v.latency_p50_s),
                    _seconds(v.latency_p95_s),
                    f"{_share(v.error_rate)} of {v.calls}", _share(v.rate_limited_rate),
                    budget, f"{fmt_duration(max(0, now - v.checked_at))} ago by {v.node}",
                    escape("; ".join(v.reasons)))
            console.print(table)
            if not views:
                console.print("no provider checked yet: run candlekeep providers --probe, "
                              "or schedule a providers_health job")
        if any(v.unwell for v in views):
            raise typer.Exit(1)
