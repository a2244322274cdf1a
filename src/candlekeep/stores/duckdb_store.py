"""Candles in one DuckDB file.

Layout: one ``candles`` table without a primary key. DuckDB's ART index makes a keyed upsert
several times slower than a plain append, so uniqueness of ``(source, symbol, timeframe, ts)``
is kept by the write path instead: every batch is de-duplicated, and inside one transaction
the stored rows it replaces are deleted (only looked for inside the batch's per-series time
ranges) before it is appended. Anything that writes the table behind the store's back must
keep that invariant (and the timeframe grid) itself.

Connections live for one operation, not for the life of the store: DuckDB lets one process at a
time write a file, and a daemon holding it forever would lock the CLI out. Another process's
operation is waited out (retry with backoff, ``lock_timeout_s``). Opening a DuckDB instance
costs ~15-25 ms (a one-candle upsert: ~50 ms opened per call, ~10 ms on an open instance), so a
store may keep it for an idle period (``keep_alive_s``, off by default: while kept, the file
stays locked for other processes). A ``session()`` holds the instance for a block of calls
(a scan's few reads) and releases it when the block ends.

Gap finding never moves candles to Python. A first pass aggregates each series in buckets of
``2**_BUCKET_BITS`` grid steps (count, min, max and the first two power sums of the in-bucket
index); a bucket whose missing steps form one run, or are two single candles, is solved exactly
from those numbers. Only buckets holding a more complex pattern are re-read, row by row, with a
window function, through filters DuckDB can answer from its zone maps.
"""

from __future__ import annotations

import atexit
import random
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.config.store_types import DuckDBStoreConfig
from candlekeep.core.datasets import CANDLES, Dataset
from candlekeep.core.errors import StoreBusyError, StoreError
from candlekeep.core.schema import CANDLE_KEY, CANDLE_SCHEMA, GAP_SCHEMA, TS_TYPE
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from candlekeep.core.timeutil import ms_to_datetime
from candlekeep.stores.base import DatasetStats, Filter, SeriesSpan, Store
from candlekeep.stores.prepare import PreparedCandles, prepare, prepare_candles
from candlekeep.stores.sql import (
    Bound,
    create_table_sql,
    described,
    duckdb_type,
    newest_column,
    quote_ident,
    select_sql,
    upsert_sql,
)

if TYPE_CHECKING:
    from candlekeep.stores.registry import StoreEnv

TABLE = "candles"

# TIMESTAMPTZ, not TIMESTAMP_MS: a candle's ts is an instant, so the column says so to anyone
# querying the file; it is what DuckDB maps a tz-aware Arrow timestamp to (ms -> us is a
# multiplication, us -> ms on the way back is exact for values that came in as ms), and it
# compares directly with make_timestamptz(...) literals, which DuckDB pushes into its scans.
_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    source       VARCHAR     NOT NULL,
    symbol       VARCHAR     NOT NULL,
    timeframe    VARCHAR     NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    open         DOUBLE      NOT NULL,
    high         DOUBLE      NOT NULL,
    low          DOUBLE      NOT NULL,
    close        DOUBLE      NOT NULL,
    volume       DOUBLE      NOT NULL,
    quote_volume DOUBLE,
    trades       BIGINT,
    ingested_at  TIMESTAMPTZ NOT NULL
)
"""
_TABLE_COMMENT = (
    "candlekeep candles: key (source, symbol, timeframe, ts) is kept unique by candlekeep's "
    "upsert, not by a constraint; ts sits on the timeframe grid (UTC)."
)
_COLUMNS = ", ".join(CANDLE_SCHEMA.names)

# 256 steps per bucket balances the number of groups (the cost of the first pass) against
# buckets holding several separate gaps (which need the second pass); the in-bucket power sums
# and the solver's products stay below 2**33, exact in BIGINT.
_BUCKET_BITS = 8
_BUCKET = 1 << _BUCKET_BITS
# Up to this many unresolved buckets are re-read one by one (each a zone-map-pruned scan);
# beyond it one semi-join pass per (source, timeframe) is cheaper.
_MAX_TARGETED_BUCKETS = 32

_MAX_RETRY_DELAY_S = 0.1
_LOCK_MARKERS = ("could not set lock", "conflicting lock", "different configuration")


# --------------------------------------------------------------------------- connections


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _LOCK_MARKERS)


class _Database:
    """One DuckDB instance per file per process, shared by every store on that file.

    DuckDB refuses a second instance on one file in one process with another configuration
    (read-only vs read-write), so the mode is managed here: reads open read-only (other
    processes may read at the same time) unless a read-write instance is already open, and a
    writer waits for this process's read-only users to finish, then reopens read-write.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._read_only = False
        self._active = 0
        self._writers_waiting = 0
        self._generation = 0
        self._pins = 0
        self._timer: threading.Timer | None = None
        self.has_table = False

    @contextmanager
    def cursor(
        self, *, write: bool, timeout_s: float, keep_alive_s: float
    ) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A cursor for one operation; None when reading a file that does not exist yet."""
        if not write and self._conn is None and not self.path.exists():
            yield None
            return
        cur = self._acquire(write, timeout_s)
        try:
            yield cur
        finally:
            self._release(cur, keep_alive_s)

    def _acquire(self, write: bool, timeout_s: float) -> duckdb.DuckDBPyConnection:
        with self._cond:
            while True:
                conn = self._conn
                if conn is None:
                    # a reader opens read-write too while a writer waits, so it serves both
                    read_only = not write and self._writers_waiting == 0
                    self._open_locked(read_only=read_only, timeout_s=timeout_s)
                    continue
                if not self._read_only or (not write and self._writers_waiting == 0):
                    self._active += 1
                    self._cancel_timer()
                    return conn.cursor()
                if write and self._active == 0:
                    self._close_locked()  # an idle read-only instance: reopen read-write
                    continue
                self._wait(write)

    def _wait(self, write: bool) -> None:
        """Until the read-only users of this process are done (writer), or until the waiting
        writer has its read-write instance (reader)."""
        if not write:
            self._cond.wait()
            return
        self._writers_waiting += 1
        try:
            self._cond.wait()
        finally:
            self._writers_waiting -= 1

    def _open_locked(self, *, read_only: bool, timeout_s: float) -> None:
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect_with_retry(self.path, read_only=read_only, timeout_s=timeout_s)
        try:
            conn.execute("SET GLOBAL TimeZone = 'UTC'")
            if read_only:
                self.has_table = _table_exists(conn)
            else:
                _create_schema(conn)
                self.has_table = True
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._read_only = read_only
        self._generation += 1
        self._cond.notify_all()

    def _release(self, cur: duckdb.DuckDBPyConnection, keep_alive_s: float) -> None:
        with suppress(duckdb.Error):
            cur.close()
        with self._cond:
            self._active -= 1
            self._idle_locked(keep_alive_s)
            self._cond.notify_all()

    @contextmanager
    def pinned(self, keep_alive_s: float) -> Iterator[None]:
        """The instance the block's operations open stays open until the block ends (a
        session), then goes as after any operation. A writer of this process still gets its
        turn: it reopens an idle read-only instance read-write, and that one stays."""
        with self._cond:
            self._pins += 1
        try:
            yield
        finally:
            with self._cond:
                self._pins -= 1
                self._idle_locked(keep_alive_s)
                self._cond.notify_all()

    def _idle_locked(self, keep_alive_s: float) -> None:
        """After an operation or a session: close the unused instance, or keep it for
        ``keep_alive_s``."""
        if self._active or self._pins or self._conn is None:
            return
        if keep_alive_s <= 0 or (self._read_only and self._writers_waiting):
            self._close_locked()
        else:
            self._schedule_close(keep_alive_s)

    def _schedule_close(self, delay_s: float) -> None:
        self._cancel_timer()
        timer = threading.Timer(delay_s, self._close_if_idle, args=(self._generation,))
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_if_idle(self, generation: int) -> None:
        with self._cond:
            if self._generation == generation and self._active == 0 and self._pins == 0:
                self._close_locked()
                self._cond.notify_all()

    def _close_locked(self) -> None:
        self._cancel_timer()
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(duckdb.Error):
                conn.close()
            self._cond.notify_all()

    def close_idle(self) -> None:
        """Drop a kept-alive instance now (store.close(), interpreter exit)."""
        with self._cond:
            if self._active == 0:
                self._close_locked()
                self._cond.notify_all()


_DATABASES: dict[Path, _Database] = {}
_DATABASES_LOCK = threading.Lock()


def _database(path: Path) -> _Database:
    key = path.resolve()
    with _DATABASES_LOCK:
        db = _DATABASES.get(key)
        if db is None:
            db = _DATABASES[key] = _Database(key)
        return db


@atexit.register
def _close_all() -> None:
    for db in list(_DATABASES.values()):
        db.close_idle()


def _connect_with_retry(
    path: Path, *, read_only: bool, timeout_s: float
) -> duckdb.DuckDBPyConnection:
    """Another process may hold the file for the length of one operation: wait that out,
    with capped exponential backoff, but not forever."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            remaining = deadline - time.monotonic()
            if not _is_lock_conflict(exc) or remaining <= 0:
                raise (
                    _lock_error(path, timeout_s, exc)
                    if _is_lock_conflict(exc)
                    else StoreError(f"cannot open DuckDB file {path}: {exc}")
                ) from exc
            # jitter keeps several waiting processes from retrying in lockstep; the cap keeps
            # a waiter polling often enough to catch the gap between another's operations
            time.sleep(min(delay * random.uniform(0.5, 1.0), remaining))
            delay = min(delay * 2, _MAX_RETRY_DELAY_S)


def _lock_error(path: Path, timeout_s: float, exc: duckdb.Error) -> StoreBusyError:
    return StoreBusyError(
        f"DuckDB file {path} is in use by another process (DuckDB allows one writer per "
        f"file); gave up after {timeout_s:g}s. Retry when the other command has finished. "
        f"({exc})"
    )


def _table_exists(conn: duckdb.DuckDBPyConnection, table: str = TABLE) -> bool:
    rows = conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?",
        [table],
    ).fetchall()
    return bool(rows[0][0])


def _create_schema(conn: duckdb.DuckDBPyConnection) -> None:
    if _table_exists(conn):
        return
    conn.execute("BEGIN TRANSACTION")
    conn.execute(_DDL)
    conn.execute(f"COMMENT ON TABLE {TABLE} IS {_lit(_TABLE_COMMENT)}")
    conn.execute("COMMIT")


# --------------------------------------------------------------------------- SQL literals


def _lit(value: str) -> str:
    """A SQL string literal. Values are inlined rather than bound so that DuckDB sees
    constants and can push the filters into its scans (zone maps)."""
    return "'" + value.replace("'", "''") + "'"


def _ts_lit(ms: int) -> str:
    return f"make_timestamptz({int(ms) * 1000}::BIGINT)"


def _series_filter(series: SeriesKey) -> str:
    return (
        f"source = {_lit(series.source)} AND symbol = {_lit(series.symbol)} "
        f"AND timeframe = {_lit(series.timeframe)}"
    )


def _range_filter(start_ms: int | None, end_ms: int | None) -> list[str]:
    parts = []
    if start_ms is not None:
        parts.append(f"ts >= {_ts_lit(start_ms)}")
    if end_ms is not None:
        parts.append(f"ts < {_ts_lit(end_ms)}")
    return parts


# --------------------------------------------------------------------------- the store


class DuckDBStore(Store):
    """Candles in a DuckDB file; see the module docstring for the layout and its invariants."""

    def __init__(
        self,
        name: str,
        path: str | Path,
        *,
        lock_timeout_s: float = 10.0,
        keep_alive_s: float = 0.0,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self.keep_alive_s = keep_alive_s
        self._db = _database(self.path)

    @classmethod
    def from_config(cls, name: str, cfg: DuckDBStoreConfig, env: StoreEnv) -> DuckDBStore:
        return cls(name, cfg.path)

    def __repr__(self) -> str:
        return f"DuckDBStore(name={self.name!r}, path={str(self.path)!r})"

    @contextmanager
    def _cursor(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection | None]:
        try:
            with self._db.cursor(
                write=write, timeout_s=self.lock_timeout_s, keep_alive_s=self.keep_alive_s
            ) as cur:
                yield cur
        except (duckdb.Error, OSError) as exc:  # OSError: the folder cannot be made
            raise StoreError(f"store {self.name} ({self.path}): {exc}") from exc

    @contextmanager
    def session(self) -> Iterator[None]:
        """The calls of the block share one opened instance (one open, not one per call);
        it is released when the block ends, so other processes get the file back."""
        with self._db.pinned(self.keep_alive_s):
            yield

    @contextmanager
    def _reader(self) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A cursor, or None when there is nothing to read yet (no file, no table)."""
        with self._cursor(write=False) as cur:
            yield cur if cur is not None and self._db.has_table else None

    # ---- writes

    def upsert(self, dataset: Dataset, batch: pa.Table) -> int:
        if batch.num_rows == 0:
            dataset.conform(batch)  # a wrong column is an error even in an empty batch
            return 0
        if dataset.name == TABLE:
            return self.upsert_candles(batch)
        table = prepare(dataset, batch)
        with self._db.write_lock, self._cursor(write=True) as cur:
            assert cur is not None
            _upsert_keyed(cur, dataset, table)
        return int(table.num_rows)

    def upsert_candles(self, batch: pa.Table) -> int:
        if batch.num_rows == 0:
            return 0
        if CANDLES.is_partial(batch):
            return self._upsert_partial_candles(prepare(CANDLES, batch))
        prepared = prepare_candles(batch)
        with self._db.write_lock, self._cursor(write=True) as cur:
            assert cur is not None
            _write(cur, prepared)
        return int(prepared.table.num_rows)

    def _upsert_partial_candles(self, table: pa.Table) -> int:
        """Columns the batch lacks are taken from the stored rows, then the whole rows go
        through the normal replace-then-append write."""
        with self._db.write_lock, self._cursor(write=True) as cur:
            assert cur is not None
            cur.register("__ck_partial", table)
            try:
                picks = ", ".join(
                    f"b.{c}" if c in table.column_names else f"s.{c}" for c in CANDLE_SCHEMA.names)
                on = " AND ".join(f"s.{k} = b.{k}" for k in CANDLE_KEY)
                full = cur.sql(f"SELECT {picks} FROM __ck_partial b "
                               f"LEFT JOIN {TABLE} s ON {on}").to_arrow_table()
            finally:
                cur.unregister("__ck_partial")
            prepared = prepare_candles(_to_schema(full, CANDLE_SCHEMA))
            _write(cur, prepared)
        return int(prepared.table.num_rows)

    # ---- datasets

    def read(self, dataset: Dataset, *, where: Filter | None = None, column: str | None = None,
             lo: Any = None, hi: Any = None, limit: int | None = None) -> pa.Table:
        bound = Bound("?", ms_to_datetime)
        sql = select_sql(dataset, quote_ident, bound, quote_ident(dataset.name), where=where,
                         column=column, lo=lo, hi=hi, limit=limit)
        params = bound.params
        with self._cursor(write=False) as cur:
            if cur is None or not _table_exists(cur, dataset.name):
                return dataset.schema.empty_table()
            table = cur.sql(sql, params=params).to_arrow_table()
        return _to_schema(table, dataset.schema)

    def describe(self, table: str) -> Dataset | None:
        with self._cursor(write=False) as cur:
            if cur is None or not _table_exists(cur, table):
                return None
            schema = _schema_of(cur, table)
            key_rows = cur.execute(
                "SELECT constraint_column_names FROM duckdb_constraints() WHERE schema_name = "
                "'main' AND table_name = ? AND constraint_type = 'PRIMARY KEY'", [table]
            ).fetchall()
        key = tuple(key_rows[0][0]) if key_rows else ()
        return described(table, schema, key)

    def stats(self, tables: Collection[str] | None = None) -> list[DatasetStats]:
        out = []
        with self._cursor(write=False) as cur:
            if cur is None:
                return []
            names = [r[0] for r in cur.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
                "ORDER BY table_name").fetchall() if tables is None or r[0] in tables]
            for name in names:
                schema = _schema_of(cur, name)
                time_col = newest_column(name, schema)
                newest = f"epoch_ms(max({quote_ident(time_col)}))" if time_col else "NULL"
                (rows, last), = cur.execute(
                    f"SELECT count(*), {newest} FROM {quote_ident(name)}").fetchall()
                out.append(DatasetStats(name, int(rows), True,
                                        None if last is None else int(last)))
        return out

    # ---- reads

    def spans(self, source: str | None = None, series: SeriesKey | None = None) -> list[SeriesSpan]:
        where = []
        if series is not None:
            where.append(_series_filter(series))
        if source is not None:
            where.append(f"source = {_lit(source)}")
        sql = (
            "SELECT source, symbol, timeframe, epoch_ms(min(ts)), epoch_ms(max(ts)), count(*) "
            f"FROM {TABLE} {_where(where)} GROUP BY ALL ORDER BY ALL"
        )
        with self._reader() as cur:
            rows = [] if cur is None else cur.execute(sql).fetchall()
        return [
            SeriesSpan(SeriesKey(src, sym, tf), int(first), int(last), int(count))
            for src, sym, tf, first, last, count in rows
        ]

    def read_candles(  # the table has no key index: one series, zone-map-pruned, is faster
        self, series: SeriesKey, start_ms: int | None = None, end_ms: int | None = None
    ) -> pa.Table:
        where = [_series_filter(series), *_range_filter(start_ms, end_ms)]
        sql = f"SELECT {_COLUMNS} FROM {TABLE} {_where(where)} ORDER BY ts"
        with self._reader() as cur:
            if cur is None:
                return CANDLE_SCHEMA.empty_table()
            table = cur.sql(sql).to_arrow_table()
        return _to_schema(table, CANDLE_SCHEMA)

    def find_gaps(
        self,
        series: SeriesKey | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> pa.Table:
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            return GAP_SCHEMA.empty_table()
        with self._reader() as cur:
            if cur is None:
                return GAP_SCHEMA.empty_table()
            return _find_gaps(cur, series, start_ms, end_ms)

    def close(self) -> None:
        self._db.close_idle()


def _schema_of(cur: duckdb.DuckDBPyConnection, table: str) -> pa.Schema:
    return cur.sql(f"SELECT * FROM {quote_ident(table)} LIMIT 0").to_arrow_table().schema


def _upsert_keyed(cur: duckdb.DuckDBPyConnection, dataset: Dataset, table: pa.Table) -> None:
    """Datasets other than candles carry a primary key: ON CONFLICT updates exactly the
    columns the batch carries."""
    if not _table_exists(cur, dataset.name):
        cur.execute(create_table_sql(dataset, quote_ident, duckdb_type))
    cur.register("__ck_rows", table)
    try:
        cur.execute(upsert_sql(dataset, table.column_names, quote_ident, "__ck_rows"))
    finally:
        cur.unregister("__ck_rows")


def _where(parts: Sequence[str]) -> str:
    return "WHERE " + " AND ".join(parts) if parts else ""


def _to_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """DuckDB hands back TIMESTAMPTZ as us and every column as nullable; for what candlekeep
    wrote the values are exact, so a cast to the declared schema restores it. A table written
    by others may hold sub-millisecond times: they are truncated to candlekeep's ms, as the
    other stores do, rather than failing the read."""
    table = table.select(schema.names)
    try:
        return table.cast(schema)
    except pa.ArrowInvalid:
        columns = [col.cast(f.type, safe=not pa.types.is_timestamp(f.type))
                   for col, f in zip(table.columns, schema, strict=True)]
        return pa.Table.from_arrays(columns, schema=schema)


# --------------------------------------------------------------------------- upsert


def _write(cur: duckdb.DuckDBPyConnection, prepared: PreparedCandles) -> None:
    """Replace-then-append in one transaction: a crash leaves the old or the new state.

    Stored rows can only collide with the batch inside each series' [lo, hi]; the cheap
    existence check (joined with the few range rows, scan pruned to the batch's overall time
    window) lets the common case, new candles after the stored ones, skip the delete.
    """
    cur.register("__ck_batch", prepared.table)
    cur.register("__ck_ranges", prepared.ranges)
    try:
        cur.execute("BEGIN TRANSACTION")
        try:
            _delete_replaced(cur, prepared.ranges)
            _append(cur)
            cur.execute("COMMIT")
        except BaseException:
            with suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            raise
    finally:
        cur.unregister("__ck_batch")
        cur.unregister("__ck_ranges")


def _delete_replaced(cur: duckdb.DuckDBPyConnection, ranges: pa.Table) -> None:
    if _overlaps(cur, ranges):
        keys = ", ".join(CANDLE_KEY)
        cur.execute(
            f"DELETE FROM {TABLE} c WHERE {_window(ranges)} "
            f"AND ({keys}) IN (SELECT {keys} FROM __ck_batch)"
        )


def _append(cur: duckdb.DuckDBPyConnection) -> None:
    cur.execute(f"INSERT INTO {TABLE} ({_COLUMNS}) SELECT {_COLUMNS} FROM __ck_batch")


def _window(ranges: pa.Table) -> str:
    lo = pc.min(ranges.column("lo")).cast(pa.int64()).as_py()
    hi = pc.max(ranges.column("hi")).cast(pa.int64()).as_py()
    return f"c.ts >= {_ts_lit(lo)} AND c.ts <= {_ts_lit(hi)}"


def _overlaps(cur: duckdb.DuckDBPyConnection, ranges: pa.Table) -> bool:
    """Whether any stored row of a batch series lies inside that series' batch range."""
    rows = cur.execute(
        f"SELECT 1 FROM {TABLE} c SEMI JOIN __ck_ranges r "
        "ON c.source = r.source AND c.symbol = r.symbol AND c.timeframe = r.timeframe "
        f"AND c.ts BETWEEN r.lo AND r.hi WHERE {_window(ranges)} LIMIT 1"
    ).fetchall()  # fetchall: DuckDB refuses new work while a result is unfinished
    return bool(rows)


# --------------------------------------------------------------------------- gaps


@dataclass(frozen=True, slots=True)
class _Pair:
    """One (source, timeframe): inside it the grid is a constant, so the step is a literal in
    SQL instead of a per-row lookup, and only ``symbol`` remains a string group key. SQL rows
    carry the pair's position in the list instead of its strings and constants, which keeps
    the rows the window sorts narrow."""

    source: str
    tf: Timeframe

    def index(self, ts_expr: str) -> str:
        """The grid index of a timestamp expression."""
        return f"(epoch_us({ts_expr}) - {self.tf.offset_ms * 1000}) // {self.tf.ms * 1000}"

    def where(self, symbol: str | None, extra: Sequence[str] = ()) -> str:
        parts = [f"source = {_lit(self.source)}", f"timeframe = {_lit(self.tf.name)}"]
        if symbol is not None:
            parts.append(f"symbol = {_lit(symbol)}")
        return _where([*parts, *extra])

    def clip(self, start_ms: int | None, end_ms: int | None) -> tuple[int | None, int | None]:
        """The first and last open time on this grid inside [start_ms, end_ms)."""
        lo = None if start_ms is None else self.tf.ceil(start_ms)
        hi = None if end_ms is None else self.tf.ceil(end_ms) - self.tf.ms
        return lo, hi


def _pairs(cur: duckdb.DuckDBPyConnection, series: SeriesKey | None) -> list[_Pair]:
    """The (source, timeframe) combinations to scan.

    min/max of a column that holds one value costs next to nothing (constant-compressed
    segments), and one source with one timeframe is the common case; otherwise DISTINCT over
    one dictionary-encoded column is a fraction of DISTINCT over two, so sources and
    timeframes are listed apart and combined. A combination that does not exist costs one
    filtered, usually zone-map-pruned, scan.
    """
    if series is not None:
        if series.timeframe not in TIMEFRAMES:
            return []
        return [_Pair(series.source, parse_timeframe(series.timeframe))]
    (row,) = cur.execute(
        f"SELECT min(source), max(source), min(timeframe), max(timeframe) FROM {TABLE}"
    ).fetchall()
    if row[0] is None:
        return []
    sources = [row[0]] if row[0] == row[1] else _distinct(cur, "source")
    names = [row[2]] if row[2] == row[3] else _distinct(cur, "timeframe")
    tfs = [parse_timeframe(n) for n in names if n in TIMEFRAMES]
    return [_Pair(s, tf) for s in sources for tf in tfs]


def _distinct(cur: duckdb.DuckDBPyConnection, column: str) -> list[str]:
    rows = cur.execute(f"SELECT DISTINCT {column} FROM {TABLE} ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def _bucket_sql(
    no: int, pair: _Pair, symbol: str | None, start_ms: int | None, end_ms: int | None
) -> str:
    """Per (symbol, bucket of 2**k steps): count, min/max index, in-bucket power sums."""
    mask = _BUCKET - 1
    rows = (
        f"SELECT symbol, {pair.index('ts')} AS i FROM {TABLE} "
        f"{pair.where(symbol, _range_filter(start_ms, end_ms))}"
    )
    return (
        f"SELECT {no} AS pair, symbol, count(*) AS n, min(i) AS lo, max(i) AS hi, "
        f"sum(i & {mask})::BIGINT AS s1, sum((i & {mask}) * (i & {mask}))::BIGINT AS s2 "
        f"FROM ({rows}) GROUP BY symbol, i >> {_BUCKET_BITS}"
    )


def _neighbour_sql(
    no: int, pair: _Pair, symbol: str | None, start_ms: int | None, end_ms: int | None
) -> list[str]:
    """The nearest stored candle on each side of the clip window, as one-row buckets, so a
    gap that crosses the window's edge is found (and then clipped)."""
    sides: list[tuple[str, str]] = []
    if start_ms is not None:
        sides.append(("max", f"ts < {_ts_lit(start_ms)}"))
    if end_ms is not None:
        sides.append(("min", f"ts >= {_ts_lit(end_ms)}"))
    return [
        f"SELECT {no} AS pair, symbol, 1 AS n, i AS lo, i AS hi, 0::BIGINT AS s1, "
        f"0::BIGINT AS s2 FROM (SELECT symbol, {pair.index(f'{agg}(ts)')} AS i FROM {TABLE} "
        f"{pair.where(symbol, [outside])} GROUP BY symbol)"
        for agg, outside in sides
    ]


# The solver, over bucket rows. With r the in-bucket index, a bucket's present rows span
# [lo, hi]; m = (hi - lo + 1) - n steps in between are missing, and from the power sums we know
# M1 = sum of missing r, M2 = sum of missing r^2. For m distinct integers,
# m*M2 - M1^2 = sum over pairs of squared differences, which is smallest, m^2(m^2-1)/12,
# exactly when they are consecutive: then they are one run starting at (M1 - m(m-1)/2)/m.
# Two missing, not adjacent: x1, x2 = (M1 -+ d)/2 with d^2 = 2*M2 - M1^2. Anything else
# (or m < 0, impossible for valid data) is "unresolved" and re-read row by row. Gaps between
# buckets come from the previous bucket's max, by a window over the (narrow) bucket rows.
_SOLVE_SQL = """
WITH b AS ({buckets}),
w AS (
    SELECT pair, symbol, lo, hi,
        lag(hi) OVER (PARTITION BY pair, symbol ORDER BY lo) AS prev_hi,
        (hi - lo + 1) - n AS m,
        lo & {mask} AS rl,
        hi & {mask} AS rh,
        s1, s2
    FROM b
),
x AS (
    SELECT pair, symbol, lo, hi, prev_hi, m,
        lo - rl AS base,
        (rl + rh) * (hi - lo + 1) // 2 - s1 AS m1,
        (rh * (rh + 1) * (2 * rh + 1) - (rl - 1) * rl * (2 * rl - 1)) // 6 - s2 AS m2
    FROM w
),
y AS (
    SELECT *,
        m > 0 AND m * m2 - m1 * m1 = m * m * (m * m - 1) // 12 AS one_run,
        m = 2 AND (m1 + d) % 2 = 0 AND d * d = 2 * m2 - m1 * m1 AS two_single
    FROM (
        SELECT *, CAST(round(sqrt(greatest(2 * m2 - m1 * m1, 0))) AS BIGINT) AS d FROM x
    )
)
SELECT pair, symbol, prev_hi + 1 AS g0, lo - 1 AS g1, FALSE AS unresolved
FROM y WHERE lo > prev_hi + 1
UNION ALL
SELECT pair, symbol, base + (m1 - m * (m - 1) // 2) // m AS g0,
       base + (m1 - m * (m - 1) // 2) // m + m - 1 AS g1, FALSE
FROM y WHERE one_run
UNION ALL
SELECT pair, symbol, base + (m1 + k * d) // 2 AS g0, base + (m1 + k * d) // 2 AS g1, FALSE
FROM y, (VALUES (-1), (1)) AS s(k) WHERE two_single AND NOT one_run
UNION ALL
SELECT pair, symbol, lo AS g0, hi AS g1, TRUE
FROM y WHERE m < 0 OR (m > 0 AND NOT one_run AND NOT two_single)
"""


def _find_gaps(
    cur: duckdb.DuckDBPyConnection,
    series: SeriesKey | None,
    start_ms: int | None,
    end_ms: int | None,
) -> pa.Table:
    pairs = _pairs(cur, series)
    if not pairs:
        return GAP_SCHEMA.empty_table()
    symbol = series.symbol if series is not None else None
    parts: list[str] = []
    for no, pair in enumerate(pairs):
        parts.append(_bucket_sql(no, pair, symbol, start_ms, end_ms))
        parts.extend(_neighbour_sql(no, pair, symbol, start_ms, end_ms))
    sql = _SOLVE_SQL.format(buckets="\nUNION ALL\n".join(parts), mask=_BUCKET - 1)
    found = cur.sql(sql).to_arrow_table()
    unresolved = found.filter(found.column("unresolved"))
    tables = [found.filter(pc.invert(found.column("unresolved")))]
    if unresolved.num_rows:
        tables.append(_resolve(cur, unresolved, pairs, symbol, start_ms, end_ms))
    return _gap_table(pa.concat_tables(tables), pairs, start_ms, end_ms)


def _resolve(
    cur: duckdb.DuckDBPyConnection,
    unresolved: pa.Table,
    pairs: Sequence[_Pair],
    symbol: str | None,
    start_ms: int | None,
    end_ms: int | None,
) -> pa.Table:
    """Exact gaps inside buckets the solver could not settle, by a window over their rows:
    a few buckets are read one by one through zone-map-pruned filters; many, in one pass per
    pair that keeps only the rows of those buckets."""
    if unresolved.num_rows <= _MAX_TARGETED_BUCKETS:
        rows = unresolved.select(["pair", "symbol", "g0", "g1"]).to_pylist()
        sql = "\nUNION ALL\n".join(
            _targeted_sql(r["pair"], pairs[r["pair"]], r["symbol"], r["g0"], r["g1"]) for r in rows
        )
        return cur.sql(sql).to_arrow_table()
    cur.register("__ck_unresolved", unresolved)
    try:
        numbers = sorted(set(unresolved.column("pair").to_pylist()))
        sql = "\nUNION ALL\n".join(
            _semi_join_sql(no, pairs[no], symbol, start_ms, end_ms) for no in numbers
        )
        return cur.sql(sql).to_arrow_table()
    finally:
        cur.unregister("__ck_unresolved")


_LAG_GAPS = (
    "SELECT * FROM (SELECT {no} AS pair, symbol, prev + 1 AS g0, i - 1 AS g1, "
    "FALSE AS unresolved FROM ("
    "SELECT symbol, i, lag(i) OVER (PARTITION BY symbol{part} ORDER BY i) AS prev "
    "FROM ({rows})) WHERE i > prev + 1)"
)


def _targeted_sql(no: int, pair: _Pair, symbol: str, lo: int, hi: int) -> str:
    lo_ms = lo * pair.tf.ms + pair.tf.offset_ms
    hi_ms = hi * pair.tf.ms + pair.tf.offset_ms
    window = [f"ts >= {_ts_lit(lo_ms)}", f"ts <= {_ts_lit(hi_ms)}"]
    rows = f"SELECT symbol, {pair.index('ts')} AS i FROM {TABLE} {pair.where(symbol, window)}"
    return _LAG_GAPS.format(no=no, part="", rows=rows)


def _semi_join_sql(
    no: int, pair: _Pair, symbol: str | None, start_ms: int | None, end_ms: int | None
) -> str:
    rows = (
        f"SELECT r.symbol, r.i FROM (SELECT symbol, {pair.index('ts')} AS i FROM {TABLE} "
        f"{pair.where(symbol, _range_filter(start_ms, end_ms))}) r "
        f"SEMI JOIN (SELECT symbol, g0 >> {_BUCKET_BITS} AS b FROM __ck_unresolved "
        f"WHERE pair = {no}) u ON r.symbol = u.symbol AND r.i >> {_BUCKET_BITS} = u.b"
    )
    return _LAG_GAPS.format(no=no, part=f", i >> {_BUCKET_BITS}", rows=rows)


def _gap_table(
    found: pa.Table, pairs: Sequence[_Pair], start_ms: int | None, end_ms: int | None
) -> pa.Table:
    """Grid indices to open times, clipped to the window, ordered, as GAP_SCHEMA."""
    if found.num_rows == 0:
        return GAP_SCHEMA.empty_table()
    pair = found.column("pair").cast(pa.int32())

    def per_pair(values: Sequence[object], type_: pa.DataType) -> pa.ChunkedArray:
        return pa.array(values, type_).take(pair)

    step = per_pair([p.tf.ms for p in pairs], pa.int64())
    off = per_pair([p.tf.offset_ms for p in pairs], pa.int64())
    clips = [p.clip(start_ms, end_ms) for p in pairs]
    start = pc.add(pc.multiply(found.column("g0"), step), off)
    end = pc.add(pc.multiply(found.column("g1"), step), off)
    start = pc.max_element_wise(start, per_pair([c[0] for c in clips], pa.int64()))
    end = pc.min_element_wise(end, per_pair([c[1] for c in clips], pa.int64()))
    table = pa.table(
        {
            "source": per_pair([p.source for p in pairs], pa.string()),
            "symbol": found.column("symbol"),
            "timeframe": per_pair([p.tf.name for p in pairs], pa.string()),
            "gap_start": start.cast(TS_TYPE),
            "gap_end": end.cast(TS_TYPE),
        }
    ).filter(pc.less_equal(start, end))
    order = [(name, "ascending") for name in ("source", "symbol", "timeframe", "gap_start")]
    return table.sort_by(order).cast(GAP_SCHEMA)
