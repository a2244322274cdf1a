"""``candlekeep datasets``: what each configured store holds; ``candlekeep check``: whether
each can be reached and written as configured."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from candlekeep.cli import common
from candlekeep.cli.common import console, friendly_errors, print_json
from candlekeep.core.timeutil import fmt_ms

if TYPE_CHECKING:
    from candlekeep.config.models import Config


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
        from candlekeep.jobs.runtime import Runtime

        cfg = common.state(ctx).config()
        names = _chosen(cfg, store, lambda c: not isinstance(c, BufferStoreConfig))
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

    @app.command()
    @friendly_errors
    def check(
        ctx: typer.Context,
        store: list[str] = typer.Option([], "--store", help="Only this store (repeatable)."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Validate the config, then reach every store and check it can be written as
        configured (server, credentials, schema or database, privileges, buffer folder).
        Exit 1 if any cannot."""
        from candlekeep.core.errors import CandlekeepError
        from candlekeep.jobs.runtime import Runtime
        from candlekeep.scheduler.validate import load_jobs

        cfg = common.state(ctx).config()
        load_jobs(cfg)  # job types and params too: the whole file is checked
        names = _chosen(cfg, store, lambda c: True)
        rt = Runtime(cfg)
        results: list[tuple[str, str, str | None]] = []
        try:
            for name in names:
                try:
                    rt.store(name).check(write=True)
                    results.append((name, cfg.stores[name].type, None))
                except CandlekeepError as exc:
                    results.append((name, cfg.stores[name].type, str(exc)))
        finally:
            common.run(rt.aclose())
        if as_json:
            print_json([{"store": n, "type": t, "ok": e is None, "error": e}
                        for n, t, e in results])
        else:
            for n, t, e in results:
                mark = "[green]ok[/]" if e is None else f"[red]{escape(e)}[/]"
                console.print(f"{n} ({t}): {mark}", highlight=False, soft_wrap=True)
        if any(e is not None for _, _, e in results):
            raise typer.Exit(1)


def _chosen(cfg: Config, names: list[str], default: Callable[[Any], bool]) -> list[str]:
    """``names`` if given (each must be a configured store), else every store ``default``
    accepts."""
    from candlekeep.core.errors import ConfigError

    unknown = [n for n in names if n not in cfg.stores]
    if unknown:
        raise ConfigError(cfg.file, "stores",
                          f"unknown store {unknown[0]!r}",
                          f"defined: {', '.join(cfg.stores) or 'none'}")
    return names or [n for n, c in cfg.stores.items() if default(c)]
