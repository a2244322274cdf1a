"""Copying tables between two stores for the ``sync`` job, through the Store contract only
(check, describe, read, upsert; stats for a progress bar), so any two store types pair up.

Where a run starts. Each copy (source table → target table, by a cursor column) keeps a
position in the state DB's checkpoints: a cursor value, as epoch ms, days since 1970 or an
integer. A run reads from that value inclusive (``>=``, never ``>``): a row that arrives after
a run, carrying the value the run ended at, would be skipped for ever by a strict bound. The
rows read again at that boundary are compared with the target's and only new or changed ones
are written: the target's keyed upsert makes rewriting them harmless, but not free (a date
cursor would rewrite a whole day on every run, and ClickHouse keeps each rewrite until merged).

How a run pages. Pages of at most ``batch_rows`` come in cursor order. Of a full page, the
rows before its last cursor value are written and the next page starts at that value. A full
page whose rows all share one value cannot be split by the contract's bounds, so every row at
that value is read at once (memory grows with the largest such group, not with the table) and
the next page starts past it. After the first page, pages are read as windows
(``lo <= cursor < hi``) as wide as the previous page's rows were spread: ordering everything
past ``lo`` to keep its first rows sorts the rest of the table for every page (a cost that
grows with the table: bench/table_sync.py), a window sorts about one page. An empty
window is followed by a read to the end, which finds the next rows or the end of the table.
The position is saved after every written page: a run that fails resumes where its last
durable page ended. Rows whose cursor is NULL are never copied.

A missing target table is created by the first write, from the source's description (types,
key, version column). A target table that is missing while a position is stored (dropped, or
renamed in the config) is copied from the start.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.core.datasets import Dataset
from candlekeep.core.errors import ConfigError, StoreError
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeutil import ms_to_datetime
from candlekeep.jobs.base import JobContext, JobResult, NullProgress

if TYPE_CHECKING:
    from candlekeep.jobs.runtime import Runtime
    from candlekeep.jobs.table_sync import SyncParams, SyncTable
    from candlekeep.stores.base import Store

CHECKPOINT_JOB = "sync"
"""The checkpoints' job column for every copy; the copy itself is named in the series
columns (source store and table with the cursor, target store and table, position kind), so
renaming a job keeps its positions and changing what it copies starts afresh."""

CURSOR_COLUMNS = ("ingested_at", "updated_at", "ts", "date")
"""Inferred cursor: the first of these the table has (else its dataset's time column)."""

_EPOCH = date(1970, 1, 1)
_DAY_MS = 86_400_000
_TO_MS = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}


@dataclass(frozen=True, slots=True)
class Cursor:
    """A cursor column and its kind of position: epoch ms for a timestamp (what the store
    contract takes as a bound on one), days since 1970 for a date, an integer as it is."""

    column: str
    kind: str  # "ms" | "day" | "int"

    @classmethod
    def of(cls, column: str, type_: pa.DataType) -> Cursor | None:
        if pa.types.is_timestamp(type_):
            return cls(column, "ms")
        if pa.types.is_date(type_):
            return cls(column, "day")
        if pa.types.is_integer(type_):
            return cls(column, "int")
        return None

    def positions(self, values: pa.ChunkedArray) -> np.ndarray:
        """Positions of non-null values, floored: a bound at the position of a microsecond
        timestamp never lies after it."""
        t = values.type
        if pa.types.is_timestamp(t):
            mul, div = _TO_MS[t.unit]
            return np.asarray(values.cast(pa.int64()).to_numpy() * mul // div)
        if pa.types.is_date64(t):
            return np.asarray(values.cast(pa.int64()).to_numpy() // _DAY_MS)
        if pa.types.is_date32(t):
            return np.asarray(values.cast(pa.int32()).to_numpy(), dtype=np.int64)
        return np.asarray(values.cast(pa.int64()).to_numpy())

    def bound(self, position: int | None) -> Any:
        """A position as the contract's ``lo``/``hi`` for this column."""
        if position is None or self.kind != "day":
            return position
        return _EPOCH + timedelta(days=position)

    def show(self, position: int | None) -> str:
        if position is None:
            return "start"
        if self.kind == "ms":
            return ms_to_datetime(position).isoformat(timespec="milliseconds")
        return str(self.bound(position))


@dataclass(frozen=True, slots=True)
class TableCopy:
    """One configured table, checked and resolved before anything is copied."""

    where: str
    """The item's config key, ``jobs[NAME].params.tables[i]``."""
    label: str
    source: Dataset
    target: Dataset
    cursor: Cursor
    checkpoint: SeriesKey
    start: int | None
    """The stored position to read from (inclusive); None: from the first row."""


@dataclass(frozen=True, slots=True)
class Plan:
    source: Store
    target: Store
    copies: list[TableCopy]


def plan(rt: Runtime, job: str, p: SyncParams) -> Plan:
    """Check every table on both sides, then resolve what to copy; nothing is written.

    A missing table, key, cursor or privilege is raised here, naming the item's config key,
    so that one bad table does not leave the others half copied."""
    file = rt.config.file
    base = f"jobs[{job}].params"
    for field, name in (("from", p.from_), ("to", p.to)):
        if name not in rt.config.stores:
            raise ConfigError(file, f"{base}.{field}", f"unknown store {name!r}",
                              f"stores defined: {', '.join(rt.config.stores) or 'none'}")
    src, dst = rt.store(p.from_), rt.store(p.to)
    copies = []
    for i, item in enumerate(p.tables):
        where = f"{base}.tables[{i}]"
        label = f"{p.from_}.{item.name} → {p.to}.{item.target_name}"
        with _named(where, label):
            src.check(item.name, write=False)
            dst.check(item.target_name, write=True)
            found = src.describe(item.name)
            if found is None:
                raise ConfigError(file, f"{where}.name",
                                  f"table {item.name!r} not found in store {p.from_!r}",
                                  "check the name, or create the table in the source first")
            source = _keyed(found, item, file, where, p.from_)
            cursor = _cursor(source, item, file, where, p.from_)
            target = (source if item.target_name == source.name
                      else dataclasses.replace(source, name=item.target_name))
            checkpoint = SeriesKey(f"{p.from_}.{source.name}:{cursor.column}",
                                   f"{p.to}.{target.name}", cursor.kind)
            existing = dst.describe(target.name)
            if existing is not None:
                _fits(existing, target, file, where, p.to)
            start = (rt.state.get_checkpoint(CHECKPOINT_JOB, checkpoint)
                     if existing is not None else None)
        copies.append(TableCopy(where, label, source, target, cursor, checkpoint, start))
    return Plan(src, dst, copies)


@contextmanager
def _named(where: str, label: str) -> Iterator[None]:
    """A store's error, prefixed with the config item it happened for."""
    try:
        yield
    except StoreError as exc:
        raise StoreError(f"{where} ({label}): {exc}") from exc


def _fits(existing: Dataset, target: Dataset, file: str, where: str, store: str) -> None:
    """A target table that already exists must take the rows as they come: the same key (an
    upsert's conflict target) and every source column."""
    if existing.key and tuple(existing.key) != tuple(target.key):
        raise ConfigError(
            file, where, f"table {target.name!r} in store {store!r} is keyed by "
            f"({', '.join(existing.key)}), the source by ({', '.join(target.key)})",
            "set `target:` to another table name, or give both the same key")
    missing = [c for c in target.schema.names if c not in existing.schema.names]
    if missing:
        raise ConfigError(
            file, where, f"table {target.name!r} in store {store!r} lacks column(s) "
            f"{', '.join(missing)} of the source", "add them to the target, or set `target:` "
            "to a new table name (it is created with the source's columns)")


def _columns(ds: Dataset) -> str:
    return f"its columns: {', '.join(ds.schema.names)}"


def _keyed(found: Dataset, item: SyncTable, file: str, where: str, store: str) -> Dataset:
    """The source table with the configured key, if any: a foreign table may have none."""
    if item.key is None:
        if not found.key:
            raise ConfigError(
                file, where, f"table {found.name!r} in store {store!r} has no key (no primary "
                "key or sorting key), so copying it could not be idempotent",
                f"configure `key: [column, ...]` for it ({_columns(found)})")
        return found
    unknown = [k for k in item.key if k not in found.schema.names]
    if unknown:
        raise ConfigError(file, f"{where}.key",
                          f"column(s) {', '.join(unknown)} not in table {found.name!r}",
                          _columns(found))
    schema = pa.schema([f.with_nullable(False) if f.name in item.key else f
                        for f in found.schema])
    return Dataset(found.name, schema, item.key, found.version, found.time)


def _cursor(ds: Dataset, item: SyncTable, file: str, where: str, store: str) -> Cursor:
    if item.cursor is not None:
        if item.cursor not in ds.schema.names:
            raise ConfigError(file, f"{where}.cursor",
                              f"column {item.cursor!r} not in table {ds.name!r}", _columns(ds))
        type_ = ds.schema.field(item.cursor).type
        chosen = Cursor.of(item.cursor, type_)
        if chosen is None:
            raise ConfigError(file, f"{where}.cursor", f"column {item.cursor!r} is {type_}",
                              "a cursor is a timestamp, date or integer column")
        return chosen
    for name in [c for c in (*CURSOR_COLUMNS, ds.time) if c and c in ds.schema.names]:
        inferred = Cursor.of(name, ds.schema.field(name).type)
        if inferred is not None:
            return inferred
    raise ConfigError(
        file, where, f"table {ds.name!r} in store {store!r} has no cursor column (none of "
        f"{', '.join(CURSOR_COLUMNS)} as a timestamp, date or integer)",
        "configure `cursor: COLUMN`, a timestamp, date or integer column whose value grows as "
        f"rows are added or changed ({_columns(ds)})")


# --------------------------------------------------------------------------- the run


async def sync_tables(ctx: JobContext, p: SyncParams) -> JobResult:
    res = JobResult()
    run = await asyncio.to_thread(plan, ctx.runtime, ctx.job_name, p)
    if ctx.dry_run:
        res.details["plan"] = [f"{c.label}: by {c.cursor.column} from "
                               f"{c.cursor.show(c.start)}" for c in run.copies]
        return res
    sizes: dict[str, int] = {}
    if not isinstance(ctx.progress, NullProgress):  # only someone watching pays for counts
        sizes = {s.name: s.rows for s in await asyncio.to_thread(run.source.stats)}
    copied: dict[str, int] = {}
    for c in run.copies:
        if ctx.cancel.is_set():
            res.warnings.append(f"cancelled before {c.label}")
            break
        ctx.progress.start(c.label, sizes.get(c.source.name, 0), c.label)
        with _named(c.where, c.label):
            rows, position = await _copy(ctx, run, c, p.batch_rows, res)
        ctx.progress.finish(c.label)
        copied[c.label] = rows
        res.rows_written += rows
        ctx.log.info("sync from=%s.%s to=%s.%s rows=%d cursor=%s position=%s", p.from_,
                     c.source.name, p.to, c.target.name, rows, c.cursor.column,
                     c.cursor.show(position))
    res.details["tables"] = copied
    return res


async def _copy(ctx: JobContext, run: Plan, c: TableCopy, batch_rows: int,
                res: JobResult) -> tuple[int, int | None]:
    """Copy one table from its stored position; returns rows written and the new position.

    The next page is read while this one is written (its bounds follow from this page
    alone), so the source's time and the target's overlap."""
    col, cursor = c.cursor.column, c.cursor

    def read(lo: int | None, hi: int | None) -> asyncio.Future[pa.Table]:
        return asyncio.ensure_future(asyncio.to_thread(
            run.source.read, c.source, column=col, lo=cursor.bound(lo), hi=cursor.bound(hi),
            limit=batch_rows))

    written, saved = 0, c.start
    lo, hi, span = c.start, None, None  # span: the next window's width; None reads to the end
    held = None if c.start is None else await asyncio.to_thread(_held_at, run.target, c)
    reading = read(lo, hi)
    try:
        while not ctx.cancel.is_set():
            page, page_lo = await reading, lo
            ctx.progress.advance(c.label, page.num_rows)
            full = page.num_rows >= batch_rows
            rows = page.filter(pc.is_valid(page[col])) if page[col].null_count else page
            if rows.num_rows == 0:
                if hi is not None:  # an empty window: the next read looks to the end
                    lo, hi, span = hi, None, None
                    reading = read(lo, hi)
                    continue
                if full:
                    res.warnings.append(f"{c.label}: the first {page.num_rows} rows by {col} "
                                        f"have no {col} (NULL) and were not copied; choose a "
                                        "cursor column without NULLs")
                break
            at = cursor.positions(rows[col])
            first, top = int(at.min()), int(at.max())
            after: int | None
            if not full:  # every row below hi is here (no hi: the end of the table)
                after = hi
                span = None if span is None else _widen(span, rows.num_rows, batch_rows)
            elif first < top:  # the rows at top may go on in the next page
                rows, after, span = rows.filter(pa.array(at < top)), top, top - first
            else:  # one value fills the page: take all of its rows at once
                rows = await asyncio.to_thread(run.source.read, c.source, column=col,
                                               lo=cursor.bound(top), hi=cursor.bound(top + 1))
                after = top + 1
            if after is not None:
                lo, hi = after, None if span is None else after + span
                reading = read(lo, hi)
            if held is not None and page_lo == c.start:
                rows = _new_or_changed(rows, held, c.target.key)
            if rows.num_rows:
                written += await asyncio.to_thread(run.target.upsert, c.target, rows)
            if top != saved:
                await ctx.db.set_checkpoint(CHECKPOINT_JOB, c.checkpoint, top,
                                            ctx.clock.now_ms())
                saved = top
            if after is None:
                break
    finally:  # a read ahead of a failure must not outlive the copy: its store closes next
        if not reading.done():
            with suppress(Exception):
                await reading
    return written, saved


def _widen(span: int, got: int, batch_rows: int) -> int:
    """The next window's width after one that held ``got`` rows of ``batch_rows`` wanted:
    scaled to the density seen, at most 8 times as wide."""
    return min(span * 8, max(span + 1, span * batch_rows // got))


def _held_at(target: Store, c: TableCopy) -> pa.Table | None:
    """The target's rows at the stored position (None when they cannot be compared)."""
    have = target.describe(c.target.name)
    col = c.cursor.column
    if have is None or col not in have.schema.names \
            or Cursor.of(col, have.schema.field(col).type) != c.cursor:
        return None
    assert c.start is not None
    return target.read(have, column=col, lo=c.cursor.bound(c.start),
                       hi=c.cursor.bound(c.start + 1))


def _new_or_changed(rows: pa.Table, held: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """``rows`` less those the target already holds with equal values (NULL equals NULL).
    Where the two sides' columns cannot be compared, every row is kept: writing them again
    is only slower."""
    if not rows.num_rows or not held.num_rows:
        return rows
    names = rows.column_names
    theirs = {n: f"__ck_held_{n}" for n in names}
    index = pa.array(np.arange(rows.num_rows, dtype=np.int64))
    try:
        other = pa.table({theirs[n]: held[n].cast(rows.schema.field(n).type) for n in names})
        joined = rows.append_column("__ck_row", index).join(
            other, keys=list(key), right_keys=[theirs[k] for k in key], join_type="inner")
        same = pa.chunked_array([np.ones(joined.num_rows, dtype=bool)])
        for n in (n for n in names if n not in key):
            a, b = joined[n], joined[theirs[n]]
            equal = pc.or_kleene(pc.equal(a, b), pc.and_(pc.is_null(a), pc.is_null(b)))
            same = pc.and_(same, pc.fill_null(equal, False))
    except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return rows
    unchanged = joined.filter(same)["__ck_row"]
    return rows.filter(pc.invert(pc.is_in(index, value_set=unchanged.combine_chunks())))
