"""``candlekeep regime``: the universe's regime now, from stored candles. Shown, not
recorded, unless ``--record`` (then it runs the ``regime`` job: a ``regimes`` row and
``<artifacts>/regime/<universe>/<UTC time>/regime.json`` with the universe's latest.json,
recorded like any run)."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from candlekeep.cli import common
from candlekeep.cli.common import console, friendly_errors, print_json


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def regime(
        ctx: typer.Context,
        universe: str | None = typer.Option(
            None, "--universe", "-u", help="Universe (default: the only one configured)."),
        timeframe: str = typer.Option("1h", "--timeframe", help="Candles to read (<= 1d)."),
        record: bool = typer.Option(False, "--record",
                                    help="Record it (regimes row, regime.json) as a run."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """The market regime (calm, normal, volatile) of a universe from stored candles:
        BTC's volatility, the share above its 20-period MA, breadth; each one's vote
        (strict: a value exactly at a threshold votes normal)."""
        from candlekeep.jobs.regime import RegimeParams, regime_now
        from candlekeep.jobs.runtime import Runtime

        params = {"universe": universe, "timeframe": timeframe}
        if record:
            from candlekeep.cli.data_cmds import run_job

            result = common.run(run_job(ctx, "regime", params, show_progress=False))
            if not result.ok:
                from candlekeep.cli.data_cmds import report

                report(result, time.monotonic(), as_json, "regime")
            found = result.details
        else:
            rt = Runtime(common.state(ctx).config())
            try:
                p = RegimeParams.model_validate({k: v for k, v in params.items() if v})
                try:
                    found = regime_now(rt, p, int(time.time() * 1000)).to_json()
                except ValueError as exc:
                    console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
                    raise typer.Exit(1) from None
            finally:
                common.run(rt.aclose())
        if as_json:
            print_json(found)
            return
        _show(found)


def _show(found: dict[str, Any]) -> None:
    console.print(f"universe [bold]{escape(found['universe'])}[/] as of {found['as_of']} "
                  f"({found['timeframe']}): [bold]{found['regime']}[/], confidence "
                  f"{found['confidence']:.2f}, next refresh {found['next_refresh']}",
                  highlight=False)
    table = Table()
    for col, just in (("indicator", "left"), ("value", "right"), ("vote", "left"),
                      ("counted", "right"), ("missing because", "left")):
        table.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    for name, ind in found["indicators"].items():
        value = "-" if ind["value"] is None else f"{ind['value']:.4f}"
        table.add_row(name, value, ind["vote"] or "-", str(ind["counted"]),
                      escape(ind["reason"] or ""))
    console.print(table)
    weights = found["weights"]
    console.print("weights: " + ", ".join(f"{k} {v:.2f}" for k, v in weights.items()),
                  highlight=False)
    for sym, why in found["excluded"].items():
        console.print(f"excluded {escape(sym)}: {escape(why)}", highlight=False)
