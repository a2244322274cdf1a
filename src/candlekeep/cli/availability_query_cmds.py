"""``candlekeep availability snapshot | timeline | range | new-listings | delistings |
summary``: the availability dataset read through ``availability.queries``.

The ``availability`` sub-app belongs to the tracker's commands (``availability_cmds``, which
also has ``update``); this module adds the read-only commands to it. Typer builds the click
group only when the CLI runs, so it does not matter whether the sub-app is added to the
root before or after these commands are added to it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from candlekeep.cli import common
from candlekeep.cli.common import console, friendly_errors, print_json
from candlekeep.core.errors import CandlekeepError
from candlekeep.core.timeutil import fmt_ms

if TYPE_CHECKING:
    from candlekeep.stores.base import Store

DEFAULT_MARKET = "futures/um"  # availability.queries.DEFAULT_MARKET, without importing Arrow
_STYLE = {"available": "green", "missing": "yellow", "error": "red", "unprobed": "dim"}


def register(app: typer.Typer) -> None:
    """Add the query commands to the ``availability`` sub-app, once the tracker's command
    module (which owns it) is there."""
    try:
        from candlekeep.cli.availability_cmds import availability_app
    except ModuleNotFoundError as exc:
        if exc.name != "candlekeep.cli.availability_cmds":
            raise
        return
    add_commands(availability_app)


def _date(value: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not a date: {value!r}; use YYYY-MM-DD (e.g. 2024-03-01)",
                                 param_hint=what) from None


@contextlib.contextmanager
def _store(ctx: typer.Context, name: str | None) -> Iterator[Store]:
    """The store to read: ``--store`` or the config's default (its first store)."""
    from candlekeep.jobs.runtime import Runtime

    cfg = common.state(ctx).config()
    chosen = name or cfg.default_store
    if chosen is None:
        raise CandlekeepError("no store is configured: add one under stores: in the config "
                              "(availability rows live in a store)")
    rt = Runtime(cfg)
    try:
        yield rt.store(chosen)
    finally:
        common.run(rt.aclose())


def _styled(status: str) -> str:
    style = _STYLE.get(status)
    return f"[{style}]{escape(status)}[/]" if style else escape(status)


def _counts_line(c: Any) -> str:
    return (f"[green]{c.available:,} available[/], [yellow]{c.missing:,} missing[/], "
            f"[red]{c.error:,} error[/]")


def _out(as_json: bool, view: Any, text: Callable[[], None]) -> None:
    if as_json:
        from candlekeep.queries.encode import plain

        print_json(plain(view))
    else:
        text()


MARKET = typer.Option(DEFAULT_MARKET, "--market", help="Archive market folder: futures/um, "
                      "futures/cm, spot.")
STORE = typer.Option(None, "--store", help="Store holding the availability dataset "
                     "(default: the config's first store).")
JSON = typer.Option(False, "--json", help="Machine-readable output.")


def add_commands(sub: typer.Typer) -> None:
    """The query commands, on the ``availability`` sub-app (or a test's)."""

    @sub.command()
    @friendly_errors
    def snapshot(
        ctx: typer.Context,
        date: str = typer.Argument(..., help="Date (YYYY-MM-DD)."),
        status: str | None = typer.Option(None, "--status", help="List only symbols with "
                                          "this status: available, missing or error."),
        market: str = MARKET, store: str | None = STORE, as_json: bool = JSON,
    ) -> None:
        """Every probed symbol on DATE and its status, with counts per status."""
        from candlekeep.availability import queries as q

        day = _date(date, "DATE")
        if status is not None and status not in ("available", "missing", "error"):
            raise typer.BadParameter("use available, missing or error", param_hint="--status")
        with _store(ctx, store) as st:
            view = q.snapshot(st, day, market)
        if status is not None:
            view = q.Snapshot(view.market, view.date, view.counts,
                              [s for s in view.symbols if s.status == status])

        def text() -> None:
            console.print(f"{escape(market)} {day}: {_counts_line(view.counts)} "
                          f"({view.counts.total:,} symbols probed)", highlight=False)
            if not view.counts.total:
                console.print("no symbol was probed on that date")
                return
            table = Table("symbol", "status", "size", "last modified (UTC)", "error")
            for s in view.symbols:
                table.add_row(escape(s.symbol), _styled(s.status),
                              f"{s.size:,}" if s.size is not None else "-",
                              fmt_ms(s.last_modified_ms), escape(s.error or ""))
            console.print(table)

        _out(as_json, view, text)

    @sub.command()
    @friendly_errors
    def timeline(
        ctx: typer.Context,
        symbol: str = typer.Argument(..., help="Exchange id, e.g. BTCUSDT."),
        market: str = MARKET, store: str | None = STORE, as_json: bool = JSON,
    ) -> None:
        """One symbol's dates as runs of consecutive dates with one status."""
        from candlekeep.availability import queries as q

        with _store(ctx, store) as st:
            view = q.timeline(st, symbol, market)

        def text() -> None:
            console.print(
                f"{escape(symbol)} in {escape(market)}: first available "
                f"{view.first_available or '-'}, last available {view.last_available or '-'}; "
                f"{_counts_line(view.counts)}", highlight=False)
            table = Table("status", "from", "to", "days")
            for r in view.runs:
                table.add_row(_styled(r.status), str(r.first), str(r.last), f"{r.days:,}")
            console.print(table)

        _out(as_json, view, text)

    @sub.command("range")
    @friendly_errors
    def range_(
        ctx: typer.Context,
        start: str = typer.Argument(..., metavar="FROM", help="First date (YYYY-MM-DD)."),
        end: str = typer.Argument(..., metavar="TO", help="Last date, included."),
        market: str = MARKET, store: str | None = STORE, as_json: bool = JSON,
    ) -> None:
        """Per date from FROM to TO: how many symbols are available, missing, in error."""
        from candlekeep.availability import queries as q

        lo, hi = _date(start, "FROM"), _date(end, "TO")
        if hi < lo:
            raise typer.BadParameter(f"{hi} is before FROM {lo}", param_hint="TO")
        with _store(ctx, store) as st:
            view = q.date_range(st, lo, hi, market)

        def text() -> None:
            table = Table("date", "available", "missing", "error", "total")
            for d in view.days:
                table.add_row(str(d.date), f"{d.available:,}", f"{d.missing:,}",
                              f"{d.error:,}", f"{d.total:,}" if d.total else "[dim]unprobed[/]")
            console.print(table)
            console.print(f"{escape(market)} {lo}..{hi}: {_counts_line(view.totals)}",
                          highlight=False)

        _out(as_json, view, text)

    @sub.command("new-listings")
    @friendly_errors
    def new_listings(
        ctx: typer.Context,
        date: str = typer.Argument(..., help="Date (YYYY-MM-DD)."),
        days: int = typer.Option(1, "--days", help="The N days ending on DATE."),
        market: str = MARKET, store: str | None = STORE, as_json: bool = JSON,
    ) -> None:
        """Symbols whose first available file is on DATE (or in the --days ending on it)."""
        from candlekeep.availability import queries as q

        day = _date(date, "DATE")
        if days < 1:
            raise typer.BadParameter("must be at least 1", param_hint="--days")
        with _store(ctx, store) as st:
            view = q.new_listings(st, day, days, market)

        def text() -> None:
            span = str(day) if days == 1 else f"{view.start}..{view.end}"
            console.print(f"{len(view.symbols)} new listing(s) in {escape(market)} on {span}",
                          highlight=False)
            if view.symbols:
                table = Table("symbol", "first available")
                for s in view.symbols:
                    table.add_row(escape(s.symbol), str(s.first_available))
                console.print(table)

        _out(as_json, view, text)

    @sub.command()
    @friendly_errors
    def delistings(
        ctx: typer.Context,
        buffer: int = typer.Option(3, "--buffer", help="Publication buffer in days: files "
                                   "this close to the newest probed date may be late."),
        market: str = MARKET, store: str | None = STORE, as_json: bool = JSON,
    ) -> None:
        """Symbols whose last available file is older than the newest probed date minus the
        publication buffer."""
        from candlekeep.availability import queries as q

        if buffer < 0:
            raise typer.BadParameter("must be 0 or more", param_hint="--buffer")
        with _store(ctx, store) as st:
            view = q.delistings(st, market, buffer)

        def text() -> None:
            console.print(f"{len(view.symbols)} symbol(s) in {escape(market)} with no file "
                          f"since before {view.settled} (newest probed date "
                          f"{view.newest_probed}, buffer {buffer} days)", highlight=False)
            if view.symbols:
                table = Table("symbol", "first available", "last available", "days since")
                for s in view.symbols:
                    table.add_row(escape(s.symbol), str(s.first_available),
                                  str(s.last_available), f"{s.days_since:,}")
                console.print(table)

        _out(as_json, view, text)

    @sub.command()
    @friendly_errors
    def summary(
        ctx: typer.Context,
        market: str | None = typer.Option(None, "--market", help="Only this market "
                                          "(default: every market stored)."),
        buffer: int = typer.Option(3, "--buffer", help="Publication buffer in days."),
        store: str | None = STORE, as_json: bool = JSON,
    ) -> None:
        """Dates and symbols covered, what is available on the newest settled date, totals
        per status, outstanding errors and the newest probe, per market."""
        from candlekeep.availability import queries as q

        if buffer < 0:
            raise typer.BadParameter("must be 0 or more", param_hint="--buffer")
        with _store(ctx, store) as st:
            view = q.summary(st, market, buffer)

        def text() -> None:
            for m in view.markets:
                table = Table(title=f"availability: {m.market} (store {view.store})",
                              show_header=False)
                table.add_column("what")
                table.add_column("value")
                table.add_row("dates", f"{m.first_date} .. {m.last_date} ({m.dates:,} probed)")
                table.add_row("symbols", f"{m.symbols:,} seen, {m.symbols_ever_available:,} "
                              "ever available")
                table.add_row("available now", f"{m.available_on_settled_date:,} on "
                              f"{m.settled_date} (newest date outside the {view.buffer_days}"
                              "-day buffer)")
                table.add_row("symbol-dates", _counts_line(m.counts))
                table.add_row("errors outstanding", f"{m.errors_outstanding:,}")
                table.add_row("newest probe (UTC)", fmt_ms(m.newest_probe_ms))
                console.print(table)
                for e in m.recent_errors[:5]:
                    console.print(f"  [red]error[/] {e.date} {escape(e.symbol)}: "
                                  f"{escape(e.error or '')}", highlight=False)

        _out(as_json, view, text)
