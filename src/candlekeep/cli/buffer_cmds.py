"""``candlekeep buffer …``: flush the write-ahead buffers, see what waits in them, and put
quarantined files back.

``flush`` runs the ``flush`` job through the one run path (as the data commands do), so it
is recorded, and it waits for a flush the daemon has under way instead of racing it. The
buffer modules (and pyarrow) are imported when a command runs, not for ``--help``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from candlekeep.cli import common
from candlekeep.cli.common import console, friendly_errors, print_json
from candlekeep.core.timeutil import fmt_duration, fmt_ms

if TYPE_CHECKING:
    from candlekeep.buffer.store import BufferStore
    from candlekeep.config.models import Config

buffer_app = typer.Typer(help="Write-ahead buffers: flush them, see what waits, retry "
                              "quarantined files.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Buffer files a flush could not read.", no_args_is_help=True)

_BUFFER_OPT = typer.Option(None, "--buffer", help="Only this buffer store.")


def _buffer_names(cfg: Config, only: str | None) -> list[str]:
    from candlekeep.config.store_types import BufferStoreConfig
    from candlekeep.core.errors import ConfigError

    names = [n for n, s in cfg.stores.items() if isinstance(s, BufferStoreConfig)]
    file = cfg.file
    if only is not None:
        if only not in names:
            raise ConfigError(file, f"stores.{only}", "not a buffer store",
                              f"buffer stores: {', '.join(names) or 'none'}")
        return [only]
    if not names:
        raise ConfigError(file, "stores", "no buffer store is configured",
                          "add e.g. buf: {type: buffer, path: data/buffer, targets: [main]}")
    return names


@contextmanager
def _buffers(ctx: typer.Context, only: str | None) -> Iterator[list[BufferStore]]:
    """The buffer stores, opened without their targets (nothing here reads a target)."""
    from candlekeep.buffer.store import BufferStore
    from candlekeep.jobs.runtime import Runtime

    cfg = common.state(ctx).config()
    names = _buffer_names(cfg, only)
    rt = Runtime(cfg)
    try:
        stores = [rt.store(n) for n in names]
        yield [s for s in stores if isinstance(s, BufferStore)]
    finally:
        common.run(rt.aclose())


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:,.1f} {unit}"


def register(app: typer.Typer) -> None:
    @buffer_app.command("flush")
    @friendly_errors
    def flush_cmd(
        ctx: typer.Context,
        buffer: str | None = _BUFFER_OPT,
        target: str | None = typer.Option(None, "--target", help="Only this target store."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be flushed."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Write pending files into every target now (what the `flush` job does)."""
        from candlekeep.cli.data_cmds import report, run_job

        t0 = time.monotonic()
        res = common.run(run_job(ctx, "flush", {"buffer": buffer, "target": target},
                                 dry_run=dry_run, show_progress=not as_json))
        if not as_json and not dry_run:
            _print_flush(res.details.get("buffers", {}))
        report(res, t0, as_json, "buffer flush")

    @buffer_app.command("status")
    @friendly_errors
    def status_cmd(
        ctx: typer.Context,
        buffer: str | None = _BUFFER_OPT,
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Pending files, rows, bytes and age per buffer; per target, what it still lacks."""
        from candlekeep.buffer.status import buffer_status

        with _buffers(ctx, buffer) as stores:
            found = [buffer_status(s) for s in stores]
        now = int(time.time() * 1000)
        if as_json:
            print_json([s.as_dict() | {"oldest_age_s": None if s.oldest_ms is None
                                       else round((now - s.oldest_ms) / 1000, 3)}
                        for s in found])
            return
        table = Table("buffer", "pending files", "rows", "size", "oldest", "quarantined",
                      "target lag (files / rows)", title="buffers")
        for s in found:
            lags = ", ".join(f"{lag.target}: {lag.files:,} / {lag.rows:,}" for lag in s.lags)
            age = "-" if s.oldest_ms is None else f"{fmt_duration(now - s.oldest_ms)} ago"
            quarantined = f"[red]{s.quarantined}[/]" if s.quarantined else "0"
            table.add_row(s.name, f"{s.files:,}", f"{s.rows:,}", _size(s.bytes), age,
                          quarantined, lags)
        console.print(table)

    @quarantine_app.command("list")
    @friendly_errors
    def quarantine_list(
        ctx: typer.Context,
        buffer: str | None = _BUFFER_OPT,
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Quarantined files with their rows, size and the reason they were set aside."""
        with _buffers(ctx, buffer) as stores:
            held = [(s.name, q) for s in stores for q in s.folder.quarantined()]
        if as_json:
            print_json([{"buffer": b, "file": q.file.name, "rows": q.file.rows,
                         "bytes": q.bytes, "written_ms": q.file.written_ms,
                         "reason": q.reason} for b, q in held])
            return
        table = Table("buffer", "file", "rows", "size", "written (UTC)", "reason",
                      title=f"quarantined files ({len(held)})")
        for b, q in held:
            table.add_row(b, q.file.name, f"{q.file.rows:,}", _size(q.bytes),
                          fmt_ms(q.file.written_ms), q.reason)
        console.print(table)

    @quarantine_app.command("retry")
    @friendly_errors
    def quarantine_retry(
        ctx: typer.Context,
        files: list[str] = typer.Argument(None, help="File names (default: every one)."),
        buffer: str | None = _BUFFER_OPT,
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Move quarantined files back to pending; the next flush writes them."""
        from candlekeep.buffer.flush import retry
        from candlekeep.core.errors import StoreError

        moved: dict[str, list[str]] = {}
        with _buffers(ctx, buffer) as stores:
            wanted = _by_buffer(stores, files or [])
            found = {n for names in wanted.values() for n in names}
            missing = sorted({Path(f).name for f in files or []} - found)
            if missing:
                raise StoreError(f"not in the quarantine of {buffer or 'any buffer'}: "
                                 f"{', '.join(missing)} (see candlekeep buffer quarantine list)")
            for store in stores:
                if files and not wanted[store.name]:
                    continue
                done = retry(store, wanted[store.name] if files else None)
                moved[store.name] = [f.name for f in done]
        if as_json:
            print_json(moved)
            return
        for name, names in moved.items():
            console.print(f"buffer {name}: {len(names)} file(s) back to pending", highlight=False)
        if any(moved.values()):
            console.print("they are written by the next flush (candlekeep buffer flush)",
                          highlight=False)

    buffer_app.add_typer(quarantine_app, name="quarantine")
    app.add_typer(buffer_app, name="buffer")


def _by_buffer(stores: list[BufferStore], files: list[str]) -> dict[str, list[str]]:
    """The named files grouped by the buffer whose quarantine holds them."""
    names = list(dict.fromkeys(Path(f).name for f in files))  # a name given twice moves once
    out: dict[str, list[str]] = {}
    for store in stores:
        held = {q.file.name for q in store.folder.quarantined()}
        out[store.name] = [n for n in names if n in held]
    return out


def _print_flush(buffers: dict[str, Any]) -> None:
    table = Table("buffer", "target", "files", "rows", "still waiting (files / rows)", "error",
                  title="flush")
    for name, b in buffers.items():
        for target, t in b["targets"].items():
            table.add_row(name, target, f"{t['files']:,}", f"{t['rows']:,}",
                          f"{t['waiting_files']:,} / {t['waiting_rows']:,}",
                          f"[red]{t['error']}[/]" if t["error"] else "")
    if buffers:
        console.print(table)
