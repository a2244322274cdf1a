"""``candlekeep datasets``: what each configured store holds."""

from __future__ import annotations

import typer
from rich.table import Table

from candlekeep.cli import common
from candlekeep.cli.common import console, friendly_errors, print_json
from candlekeep.core.timeutil import fmt_ms


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def datasets(
        ctx: typer.Context,
        store: list[str] = typer.Option([], "--store", help="Only this store (repeatable)."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Tables per store with row counts (estimates on big tables) and newest times.

        A buffer store is listed with its pending files by `candlekeep buffer status`; its
        data is listed under its targets."""
        from candlekeep.config.store_types import BufferStoreConfig
        from candlekeep.core.errors import ConfigError
        from candlekeep.jobs.runtime import Runtime

        cfg = common.state(ctx).config()
        names = store or [n for n, s in cfg.stores.items()
                          if not isinstance(s, BufferStoreConfig)]
        unknown = [n for n in names if n not in cfg.stores]
        if unknown:
            raise ConfigError(str(cfg.config_path or "candlekeep.yaml"), "stores",
                              f"unknown store {unknown[0]!r}",
                              f"defined: {', '.join(cfg.stores) or 'none'}")
        rt = Runtime(cfg)
        try:
            rows = [(name, s) for name in names for s in rt.store(name).stats()]
        finally:
            common.run(rt.aclose())
        if as_json:
            print_json([{"store": name, "dataset": s.name, "rows": s.rows,
                         "rows_exact": s.exact, "newest_ms": s.newest_ms,
                         "newest": None if s.newest_ms is None else fmt_ms(s.newest_ms)}
                        for name, s in rows])
            return
        table = Table("store", "dataset", "rows", "newest (UTC)")
        for name, s in rows:
            count = f"{s.rows:,}" if s.exact else f"~{s.rows:,}"
            table.add_row(name, s.name, count, "-" if s.newest_ms is None else fmt_ms(s.newest_ms))
        console.print(table)
        if not rows:
            console.print("no datasets stored yet", highlight=False)
