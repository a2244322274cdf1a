"""Datasets in a ClickHouse database through clickhouse-connect: a server, ClickHouse Cloud,
or the embedded chdb engine (``chdb:///path``), all on the same client code path.

Writes: a batch is prepared like everywhere else (de-duplicated, candles checked against
their grid) and inserted from Arrow. The table (``ch_sql``: ReplacingMergeTree by the
dataset's version, ordered by its key) turns two rows of one key into one when their parts
merge, so an upsert is a plain insert. A batch that lacks some columns would insert rows with
those columns empty, and a merge replaces whole rows: the stored rows of its keys are read
first and their values fill the missing columns. A table of another engine (a plain
MergeTree keeps every row inserted) is read, never written.

Reads are exact before merges. Row reads use ``FINAL``: on 10M candles (bench/ch_gaps.py)
one series reads 2.5-5x faster than through an argMax GROUP BY, the whole table 1.3x, and
only FINAL resolves equal versions by insert order. Spans and gaps need neither: they reduce
each series to the set of its grid indices (``ch_gaps``), at about the cost of a plain
GROUP BY count. ``stats`` rows come from the active parts: exact only where every partition
is down to one part; the newest time is a ``max`` that the partition min/max index answers.

``optimize_after_flush`` makes ``flushed`` run ``OPTIMIZE TABLE … FINAL`` on the tables a
flush wrote, skipping partitions that are already one merged part.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError

from candlekeep.core.datasets import CANDLES, Dataset
from candlekeep.core.errors import StoreError
from candlekeep.core.schema import GAP_SCHEMA
from candlekeep.core.series import SeriesKey
from candlekeep.stores import ch_gaps
from candlekeep.stores.base import DatasetStats, Filter, SeriesSpan, Store
from candlekeep.stores.ch_conn import (
    ILLEGAL_FINAL,
    READONLY,
    SYNTAX_ERROR,
    UNKNOWN_DATABASE,
    UNKNOWN_TABLE,
    parse_url,
)
from candlekeep.stores.ch_sql import (
    arrow_field,
    column_type,
    create_table_sql,
    ident,
    key_sets,
    lit,
    qualified,
    replacing_version,
    select_sql,
    sorting_key,
    to_schema,
)
from candlekeep.stores.pool import Pool
from candlekeep.stores.prepare import prepare
from candlekeep.stores.sql import described, newest_column

if TYPE_CHECKING:
    from candlekeep.config.store_types import ClickHouseStoreConfig
    from candlekeep.stores.registry import StoreEnv

# Inserts: a backfill may span more months (partitions) than the default limit of 100;
# identical blocks are not dropped as retries (replicated tables, ClickHouse Cloud), since a
# batch written again after another one must win again; each part is de-duplicated inside.
_INSERT_SETTINGS = {"max_partitions_per_insert_block": 0, "insert_deduplicate": 0,
                    "optimize_on_insert": 1}
_OPTIMIZE_SETTINGS = {"optimize_skip_merged_partitions": 1}
_KEY_SQL_BYTES = 100_000  # key literals per lookup of stored rows (max_query_size: 256 KiB)
_ABSENT = (UNKNOWN_TABLE, UNKNOWN_DATABASE)
_REPLACING = "ReplacingMergeTree"  # also Replicated… and Shared… (ClickHouse Cloud)


class _Absent(Exception):
    """The table (or the database) does not exist: reads see nothing."""


class ClickHouseStore(Store):
    """See the module docstring; the URL's password never leaves ``parse_url``'s target."""

    def __init__(self, name: str, url: str, *, database: str | None = None,
                 optimize_after_flush: bool = False) -> None:
        self.name = name
        self.optimize_after_flush = optimize_after_flush
        self._target = parse_url(name, url, database)
        self._pool: Pool[Client] = Pool(self._target.open, Client.close, size=8)
        self._ready: dict[str, dict[str, str]] = {}  # tables known to exist: column types
        self._ready_lock = threading.Lock()
        # a partial write reads stored rows, then inserts: one at a time in this process
        self._partial_lock = threading.Lock()

    @classmethod
    def from_config(cls, name: str, cfg: ClickHouseStoreConfig, env: StoreEnv
                    ) -> ClickHouseStore:
        return cls(name, cfg.url.get_secret_value(), database=cfg.database,
                   optimize_after_flush=cfg.optimize_after_flush)

    @property
    def database(self) -> str:
        return self._target.database

    def __repr__(self) -> str:
        return (f"ClickHouseStore(name={self.name!r}, url={self._target.redacted!r}, "
                f"database={self.database!r})")

    # ---- plumbing

    def _table(self, name: str) -> str:
        return qualified(self.database, name)

    def _source(self, name: str) -> str:
        return f"store {self.name}: table {self.database}.{name}"

    @contextmanager
    def _client(self, doing: str = "") -> Iterator[Client]:
        try:
            with self._pool.connection() as client:
                yield client
        except ClickHouseError as exc:
            raise self._target.error(exc, doing) from None

    def _arrow(self, sql: str, doing: str = "", *, instead: dict[int, str] | None = None
               ) -> pa.Table:
        """The query's result; _Absent when its table or database does not exist.
        ``instead`` maps an error code to the query to run when the first one fails so."""
        with self._client(doing) as client:
            try:
                try:
                    return client.query_arrow(sql)
                except DatabaseError as exc:
                    if exc.code not in (instead or {}):
                        raise
                    return client.query_arrow((instead or {})[exc.code])
            except DatabaseError as exc:
                if exc.code in _ABSENT:
                    raise _Absent from None
                raise

    def _rows(self, sql: str) -> list[Sequence[Any]]:
        with self._client() as client:
            return list(client.query(sql).result_rows)

    # ---- writes

    def upsert(self, dataset: Dataset, batch: pa.Table) -> int:
        if batch.num_rows == 0:
            dataset.conform(batch)  # a wrong column is an error even in an empty batch
            return 0
        table = prepare(dataset, batch)
        if dataset.is_partial(table):
            with self._partial_lock:
                with self._client(f"writing {dataset.name}") as client:  # refuse a table that
                    types = self._ensure_table(client, dataset)  # never replaces, before looking
                self._insert(dataset, self._complete(dataset, table, types))
        else:
            self._insert(dataset, table)
        return int(table.num_rows)

    def _insert(self, dataset: Dataset, table: pa.Table) -> None:
        with self._client(f"writing {dataset.name}") as client:
            self._ensure_table(client, dataset)
            try:
                client.insert_arrow(dataset.name, table, database=self.database,
                                    settings=_INSERT_SETTINGS)
            except DatabaseError as exc:
                if exc.code not in _ABSENT:
                    raise
                self._ready.pop(dataset.name, None)  # dropped behind this store's back
                self._ensure_table(client, dataset)
                client.insert_arrow(dataset.name, table, database=self.database,
                                    settings=_INSERT_SETTINGS)

    def _ensure_table(self, client: Client, dataset: Dataset) -> dict[str, str]:
        """The table's column types, after creating the database and the table unless they
        exist (looked up first: IF NOT EXISTS still needs the CREATE privilege, which a
        writer may lack). An existing table must replace rows by key. The answer is kept
        with the table's name: one look-up per table and process."""
        types = self._ready.get(dataset.name)
        if types is not None:
            return types
        with self._ready_lock:
            types = self._ready.get(dataset.name)
            if types is not None:
                return types
            (has_db, engine, _, columns), = client.query(
                self._exists_sql(dataset.name)).result_rows
            if not has_db:
                client.command(f"CREATE DATABASE IF NOT EXISTS {ident(self.database)}")
            if not engine:
                client.command(create_table_sql(self.database, dataset))
                columns = [(f.name, column_type(dataset, f)) for f in dataset.schema]
            elif not engine.endswith(_REPLACING):
                raise self._never_replaces(dataset.name, engine, ", ".join(dataset.key),
                                           dataset.version)
            types = self._ready[dataset.name] = dict(columns)
            return types

    def _exists_sql(self, table: str) -> str:
        """Whether the database exists, and the table's engine and sorting key ('' if none)
        and its columns' (name, type)."""
        db = lit(self.database)
        tables = f"FROM system.tables WHERE database = {db} AND name = {lit(table)}"
        return (f"SELECT (SELECT count() FROM system.databases WHERE name = {db}), "
                f"(SELECT any(engine) {tables}), (SELECT any(sorting_key) {tables}), "
                f"(SELECT groupArray((name, type)) FROM system.columns WHERE database = {db} "
                f"AND table = {lit(table)})")

    def _never_replaces(self, table: str, engine: str, order: str, version: str | None
                        ) -> StoreError:
        """Inserting into a table that is no ReplacingMergeTree would keep both rows of a key
        written twice; reads of it are fine (its sorting key is a key to read by). ``order``:
        the key as system.tables spells a sorting key (``a, b``)."""
        order = f"({order})" if "," in order else order or "<key columns>"
        return StoreError(
            f"store {self.name}: table {self.database}.{table} has engine {engine}, which "
            "keeps every row written: writing a key again would add a second row instead of "
            f"replacing it. Recreate it as ReplacingMergeTree{f'({version})' if version else ''}"
            f" ORDER BY {order}, or write to another table")

    def _complete(self, dataset: Dataset, table: pa.Table, types: dict[str, str]
                  ) -> pa.Table:
        """Full rows for a partial batch: the columns it lacks come from the stored rows of
        its keys (new keys get nulls; a non-nullable column without a stored value is an
        error). ``types``: the table's column types (a key column it lacks gets the type
        this store would give it, and the look-up names the column missing)."""
        missing = [c for c in dataset.schema.names if c not in table.column_names]
        wanted = pa.schema([dataset.schema.field(c) for c in (*dataset.key, *missing)])
        cols = ", ".join(ident(c) for c in wanted.names)
        keys = ", ".join(ident(k) for k in dataset.key)
        stored = []
        key_types = [types.get(k) or column_type(dataset, dataset.schema.field(k))
                     for k in dataset.key]
        for key_set in key_sets(table, dataset.key, key_types, _KEY_SQL_BYTES):
            sql = f"SELECT {cols} FROM {self._table(dataset.name)} FINAL WHERE ({keys}) IN " \
                  f"{key_set}"
            try:
                stored.append(to_schema(self._arrow(sql, f"reading {dataset.name}"), wanted,
                                        self._source(dataset.name)))
            except _Absent:
                break
        found = pa.concat_tables(stored) if stored else wanted.empty_table()
        full = table.join(found, keys=list(dataset.key), join_type="left outer",
                          use_threads=False)
        lacking = [c for c in missing if not dataset.schema.field(c).nullable
                   and full.column(c).null_count]
        if lacking:
            n = max(full.column(c).null_count for c in lacking)
            raise StoreError(
                f"store {self.name}: dataset {dataset.name}: {n} row(s) of a batch without "
                f"column(s) {', '.join(lacking)} have no stored row to take them from; write "
                "new keys with every non-null column")
        return full.select(dataset.schema.names).cast(dataset.schema)

    def flushed(self, datasets: Sequence[Dataset]) -> None:
        if not self.optimize_after_flush:
            return
        for name in sorted({d.name for d in datasets}):
            with self._client(f"optimizing {name}") as client:
                try:
                    client.command(f"OPTIMIZE TABLE {self._table(name)} FINAL",
                                   settings=_OPTIMIZE_SETTINGS)
                except DatabaseError as exc:
                    if exc.code not in _ABSENT:
                        raise

    # ---- datasets

    def read(self, dataset: Dataset, *, where: Filter | None = None, column: str | None = None,
             lo: Any = None, hi: Any = None, limit: int | None = None) -> pa.Table:
        args: dict[str, Any] = {"where": where, "column": column, "lo": lo, "hi": hi,
                                "limit": limit}
        try:
            # a table that is not Replacing* has no FINAL, and no twins to resolve
            plain = select_sql(self.database, dataset, final=False, **args)
            table = self._arrow(select_sql(self.database, dataset, **args),
                                f"reading {dataset.name}", instead={ILLEGAL_FINAL: plain})
        except _Absent:
            return dataset.schema.empty_table()
        return to_schema(table, dataset.schema, self._source(dataset.name))

    def describe(self, table: str) -> Dataset | None:
        db = lit(self.database)
        found = self._rows(f"SELECT engine_full, sorting_key FROM system.tables WHERE "
                           f"database = {db} AND name = {lit(table)}")
        if not found:
            return None
        (engine_full, key_expr), = found
        columns = self._rows(f"SELECT name, type FROM system.columns WHERE database = {db} "
                             f"AND table = {lit(table)} ORDER BY position")
        fields = [arrow_field(n, t) for n, t in columns]
        if any(f is None for f in fields):  # types read_path maps as the engine does
            engine = self._arrow(f"SELECT * FROM {self._table(table)} LIMIT 0").schema
            fields = [f or engine.field(n) for f, (n, _) in zip(fields, columns, strict=True)]
        schema = pa.schema(fields)
        try:
            dataset = described(table, schema, sorting_key(key_expr, schema.names))
            if dataset.version is None:
                dataset = dataclasses.replace(
                    dataset, version=replacing_version(engine_full, schema.names))
        except ValueError as exc:
            raise StoreError(f"store {self.name}: table {table}: {exc}") from None
        return dataset

    def stats(self, tables: Collection[str] | None = None) -> list[DatasetStats]:
        db = lit(self.database)
        only = "" if tables is None else (
            f" AND name IN ({', '.join(lit(t) for t in tables) or 'NULL'})")
        found = self._rows(f"SELECT name, engine, total_rows FROM system.tables WHERE "
                           f"database = {db} AND has_own_data{only} ORDER BY name")
        parts = {t: (int(rows), int(most)) for t, rows, most in self._rows(
            "SELECT table, sum(rows), max(n) FROM (SELECT table, partition_id, sum(rows) AS "
            f"rows, count() AS n FROM system.parts WHERE database = {db} AND active "
            "GROUP BY table, partition_id) GROUP BY table")}
        newest = self._newest([t for t, _, _ in found if parts.get(t, (0, 0))[0]])
        out = []
        for name, engine, total in found:
            rows, most = parts.get(name, (int(total or 0), 1))
            exact = "Replacing" not in engine or most <= 1
            out.append(DatasetStats(name, rows, exact, newest.get(name)))
        return out

    def _newest(self, tables: list[str]) -> dict[str, int | None]:
        """The newest value of each table's time column, in one query. Where the time column
        is the partition column, ``max`` is answered from the parts' min/max index."""
        if not tables:
            return {}
        db = lit(self.database)
        names = ", ".join(lit(t) for t in tables)
        schemas: dict[str, list[pa.Field]] = {}
        for table, name, type_ in self._rows(
                f"SELECT table, name, type FROM system.columns WHERE database = {db} AND "
                f"table IN ({names}) ORDER BY table, position"):
            field = arrow_field(name, type_)
            if field is not None:
                schemas.setdefault(table, []).append(field)
        parts = []
        for table, fields in schemas.items():
            col = newest_column(table, pa.schema(fields))
            if col is not None:
                parts.append(f"SELECT {lit(table)} AS t, toUnixTimestamp64Milli(toDateTime64("
                             f"max({ident(col)}), 3, 'UTC')) AS ms FROM {self._table(table)}")
        if not parts:
            return {}
        found = self._arrow(" UNION ALL ".join(parts)).to_pydict()
        return dict(zip(found["t"], found["ms"], strict=True))

    def check(self, table: str | None = None, *, write: bool = False) -> None:
        """Reachability and credentials (opening a client), then the database, the table and
        the privileges the work needs. The embedded engine (chdb) has no users: every
        privilege check passes there."""
        with self._client("checking access") as client:
            (has_db, engine, order, _), = client.query(
                self._exists_sql(table or "")).result_rows
            has_table = bool(engine)
            if write and not has_db:
                self._require(client, "CREATE DATABASE", f"{ident(self.database)}.*")
            if table is None:
                return
            on = self._table(table)
            if not has_table and not write:
                also = "" if has_db else (f" (nor does database {self.database}: check "
                                          f"{self._target.key} or 'database:')")
                raise StoreError(f"store {self.name} ({self._target.redacted}): table "
                                 f"{self.database}.{table} does not exist{also}")
            if write and has_table and not engine.endswith(_REPLACING):
                raise self._never_replaces(table, engine, order, "<version column>")
            needed = ["SELECT"] if has_table else []
            if write:
                needed += ["INSERT"] if has_table else ["CREATE TABLE", "INSERT"]
                needed += ["OPTIMIZE"] if self.optimize_after_flush else []
            for privilege in needed:
                self._require(client, privilege, on, probe=has_table)

    def _require(self, client: Client, privilege: str, on: str, *, probe: bool = False) -> None:
        """StoreError unless the user holds ``privilege`` ON ``on`` (CHECK GRANT; a server
        too old for it is probed with statements that touch nothing, where one exists)."""
        try:
            (granted,), = client.query(f"CHECK GRANT {privilege} ON {on}").result_rows
        except DatabaseError as exc:
            if exc.code != SYNTAX_ERROR:
                raise
            probes = {"SELECT": f"SELECT * FROM {on} LIMIT 0",
                      "INSERT": f"INSERT INTO {on} SELECT * FROM {on} WHERE 0"}
            if probe and privilege in probes:
                client.command(probes[privilege])  # ACCESS_DENIED becomes a StoreError
            return
        if not granted:
            user = client.query("SELECT currentUser()").result_rows[0][0]
            raise StoreError(f"store {self.name} ({self._target.redacted}): user {user!r} may "
                             f"not {privilege} on {on}; ask an administrator to run: GRANT "
                             f"{privilege} ON {on} TO {ident(user)}")

    # ---- candles

    def _run_candles(self, sql: str) -> pa.Table:
        """A spans or gaps query; a user in readonly mode may not set the in-order
        aggregation they ask for, and gets the same answer without it (slower)."""
        plain = sql.replace(ch_gaps.IN_ORDER, "")
        return self._arrow(sql, "reading candles", instead={READONLY: plain})

    def spans(self, source: str | None = None, series: SeriesKey | None = None
              ) -> list[SeriesSpan]:
        try:
            found = self._run_candles(ch_gaps.spans_sql(self._table(CANDLES.name), series,
                                                        source))
        except _Absent:
            return []
        cols = found.to_pydict()
        return [SeriesSpan(SeriesKey(src, sym, tf), int(first), int(last), int(count))
                for src, sym, tf, first, last, count in zip(
                    cols["source"], cols["symbol"], cols["timeframe"], cols["first"],
                    cols["last"], cols["count"], strict=True)]

    def find_gaps(self, series: SeriesKey | None = None, start_ms: int | None = None,
                  end_ms: int | None = None) -> pa.Table:
        try:
            return ch_gaps.find_gaps(self._run_candles, self._table(CANDLES.name), series,
                                     start_ms, end_ms)
        except _Absent:
            return GAP_SCHEMA.empty_table()

    def close(self) -> None:
        self._pool.close()

