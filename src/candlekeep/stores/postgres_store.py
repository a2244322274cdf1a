"""Datasets in a PostgreSQL schema, through psycopg 3.

Layout: one table per dataset, PRIMARY KEY on its natural key (candles: source, symbol,
timeframe, ts) and a BRIN index on its time column. The time column is part of the candle
key, so the table can be made a TimescaleDB hypertable as it is; nothing here needs the
extension.

Writing a batch is one transaction: binary COPY (encoded by ``pg_copy``) into a temporary
staging table, then one statement that merges it into the table, touching exactly the
columns the batch carries and skipping rows whose values did not change. On PostgreSQL 15+
that statement is a MERGE: a join, where ``INSERT … ON CONFLICT`` pays a speculative insertion
per row and locks every unchanged row it skips (bench/pg_upsert.py, a million candles: MERGE
1.5x a plain COPY for new rows and 1.2x for the same rows again; ON CONFLICT 2.2x and 2.2x).
MERGE raises where a concurrent transaction inserts one of the batch's keys first; the batch
is then written again with ON CONFLICT, which waits such races out. Older servers always use
ON CONFLICT.

Sessions never wait forever: a connect timeout, lock and statement timeouts, TCP keepalives.
Any of these (and any other libpq option) can be set in the DSN, e.g.
``?connect_timeout=3&options=-c%20statement_timeout%3D30min``; options given there win.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from candlekeep.core.datasets import CANDLES, Dataset
from candlekeep.core.errors import StoreError
from candlekeep.core.schema import GAP_SCHEMA
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeutil import ms_to_datetime
from candlekeep.stores import pg_gaps
from candlekeep.stores.base import DatasetStats, Filter, SeriesSpan, Store
from candlekeep.stores.pg_catalog import Catalog, Privileges, epoch_ms
from candlekeep.stores.pg_copy import copy_chunks, stage_type
from candlekeep.stores.pg_read import copy_out
from candlekeep.stores.pool import Pool, PoolTimeout
from candlekeep.stores.prepare import prepare
from candlekeep.stores.sql import (
    Bound,
    create_table_sql,
    postgres_type,
    quote_ident,
    select_sql,
)

if TYPE_CHECKING:
    from candlekeep.config.store_types import PostgresStoreConfig
    from candlekeep.stores.registry import StoreEnv

Connection = psycopg.Connection[Any]

_STAGE = "ck_stage"
_LOGIN_FAILURES = ("password authentication failed", "authentication failed",
                   "no password supplied", "role \"", "pg_hba.conf",
                   "permission denied for database")
_MERGE_RACES = (pg_errors.UniqueViolation, pg_errors.SerializationFailure)




class PostgresStore(Store):
    """Datasets in one schema of a PostgreSQL database; see the module docstring."""

    def __init__(
        self,
        name: str,
        dsn: str,
        schema: str = "public",
        *,
        pool_size: int = 4,
        connect_timeout_s: float = 5.0,
        lock_timeout_s: float = 60.0,
        statement_timeout_s: float = 600.0,
    ) -> None:
        self.name = name
        self.schema = schema
        try:
            given = conninfo_to_dict(dsn)
        except psycopg.Error:
            raise StoreError(  # libpq's message may quote the DSN, password and all
                f"store {name}: stores.{name}.dsn is not a valid PostgreSQL URL; use "
                "postgresql://user@host:5432/dbname") from None
        self._password = str(given.get("password") or "")
        self._user = str(given.get("user") or "")
        self._server = (f"{given.get('user', '')}@{given.get('host', 'localhost')}:"
                        f"{given.get('port', 5432)}/{given.get('dbname', '')}").lstrip("@")
        options = (f"-c lock_timeout={int(lock_timeout_s * 1000)} "
                   f"-c statement_timeout={int(statement_timeout_s * 1000)} "
                   "-c idle_in_transaction_session_timeout=300000 -c TimeZone=UTC "
                   "-c DateStyle=ISO,YMD -c extra_float_digits=3 -c bytea_output=hex -c jit=off")
        self._conninfo = make_conninfo(
            dsn,
            options=f"{options} {given.get('options', '')}".strip(),
            connect_timeout=given.get("connect_timeout", max(1, round(connect_timeout_s))),
            application_name=given.get("application_name", f"candlekeep:{name}"),
            client_encoding="UTF8", keepalives=1, keepalives_idle=10, keepalives_interval=5,
            keepalives_count=3)
        self._pool: Pool[Connection] = Pool(
            self._connect, Connection.close, size=pool_size, wait_s=statement_timeout_s,
            reusable=_reusable, alive=_alive)
        self._catalog = Catalog(schema)
        self._use_merge: bool | None = None  # decided by the server's version

    @classmethod
    def from_config(cls, name: str, cfg: PostgresStoreConfig, env: StoreEnv) -> PostgresStore:
        return cls(name, cfg.dsn.get_secret_value(), cfg.db_schema)

    def __repr__(self) -> str:
        return f"PostgresStore(name={self.name!r}, server={self._server!r}, schema={self.schema!r})"

    # ---- connections and errors

    def _connect(self) -> Connection:
        try:
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self._connect_error(exc) from None

    def _where(self) -> str:
        return f"store {self.name} (postgresql {self._server}, schema {self.schema})"

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _connect_error(self, exc: psycopg.Error) -> StoreError:
        text = self._scrub(str(exc).strip())
        detail = text.splitlines()[-1] if text else type(exc).__name__
        key = f"stores.{self.name}.dsn"
        if re.search(r"database \".*\" does not exist", text):
            fix = f"fix the database name in {key}, or create it (CREATE DATABASE ...)"
        elif any(marker in text for marker in _LOGIN_FAILURES):
            fix = (f"fix the user in {key}; give the password in PGPASSWORD or ~/.pgpass, "
                   "or ask for the role to be created/granted CONNECT")
        else:
            fix = f"is PostgreSQL running there, and are host and port in {key} right?"
        return StoreError(f"{self._where()}: cannot connect: {detail} ({fix})")

    def _error(self, exc: psycopg.Error) -> StoreError:
        text = self._scrub(str(exc).strip().splitlines()[0] if str(exc).strip()
                           else type(exc).__name__)
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            text += f" (grant it to the store's user {self._user})".replace(" )", ")")
        elif isinstance(exc, pg_errors.QueryCanceled | pg_errors.LockNotAvailable):
            text += (" (a statement or lock timeout: another session may hold a lock; raise "
                     "the timeout with options=-c statement_timeout=... in the DSN)")
        elif isinstance(exc, pg_errors.NotNullViolation):
            text += " (a batch that lacks a NOT NULL column can only update stored rows)"
        return StoreError(f"{self._where()}: {text}")

    @contextmanager
    def _session(self) -> Iterator[Connection]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreError(f"{self._where()}: {exc}") from None
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _q(self, table: str) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(table)}"

    # ---- writes

    def upsert(self, dataset: Dataset, batch: pa.Table) -> int:
        if batch.num_rows == 0:
            dataset.conform(batch)  # a wrong column is an error even in an empty batch
            return 0
        table = prepare(dataset, batch)
        with self._session() as conn:
            if self._use_merge is None:
                self._use_merge = conn.info.server_version >= 150000
            if self._use_merge:
                try:
                    self._write(conn, dataset, table, merge=True)
                    return int(table.num_rows)
                except _MERGE_RACES:
                    pass  # a concurrent writer got there first: ON CONFLICT waits it out
                except pg_errors.FeatureNotSupported:
                    self._use_merge = False  # e.g. an extension's table type
            self._write(conn, dataset, table, merge=False)
        return int(table.num_rows)

    def _write(self, conn: Connection, dataset: Dataset, table: pa.Table, *,
               merge: bool) -> None:
        with conn.transaction():
            types = self._target_types(conn, dataset)
            missing = [c for c in table.column_names if c not in types]
            if missing:
                raise StoreError(
                    f"{self._where()}: table {self._q(dataset.name)} has no column(s) "
                    f"{', '.join(missing)}; add them (ALTER TABLE ... ADD COLUMN) or drop "
                    "them from the batch")
            _stage(conn, table)
            sql = (_merge_sql if merge else _on_conflict_sql)(
                self._q(dataset.name), dataset.key, table.column_names, types)
            conn.execute(sql)

    def _target_types(self, conn: Connection, dataset: Dataset) -> dict[str, str]:
        """The table's column types, creating schema and table on first write."""
        types = self._catalog.column_types(conn, dataset.name)
        if types:
            return types
        # DDL is serialised per schema, so that two first writers do not collide
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                     [f"candlekeep:{self.schema}"])
        if not self._catalog.schema_exists(conn):
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}")
        conn.execute(create_table_sql(dataset, quote_ident, postgres_type,
                                      self._q(dataset.name)))
        time_col = dataset.time
        if time_col is not None and _is_time(dataset.schema.field(time_col).type):
            conn.execute(f"CREATE INDEX IF NOT EXISTS "
                         f"{quote_ident(f'{dataset.name}_{time_col}_brin')} "
                         f"ON {self._q(dataset.name)} USING brin ({quote_ident(time_col)})")
        return self._catalog.column_types(conn, dataset.name)

    # ---- reads

    def read(self, dataset: Dataset, *, where: Filter | None = None, column: str | None = None,
             lo: Any = None, hi: Any = None, limit: int | None = None) -> pa.Table:
        bound = Bound("%s", ms_to_datetime)
        sql = select_sql(dataset, quote_ident, bound, self._q(dataset.name), where=where,
                         column=column, lo=lo, hi=hi, limit=limit)
        params = bound.params
        with self._session() as conn:
            if not self._catalog.column_types(conn, dataset.name):
                return dataset.schema.empty_table()
            try:
                return copy_out(conn, sql, params, dataset.schema)
            except (pa.ArrowInvalid, ValueError) as exc:  # 'infinity', out-of-range values
                raise StoreError(f"{self._where()}: table {dataset.name} holds a value "
                                 f"candlekeep cannot read: {exc}") from None

    def describe(self, table: str) -> Dataset | None:
        with self._session() as conn:
            return self._catalog.describe(conn, table)

    def stats(self, tables: Collection[str] | None = None) -> list[DatasetStats]:
        with self._session() as conn:
            return sorted(self._catalog.stats(conn, tables), key=lambda s: s.name)

    def check(self, table: str | None = None, *, write: bool = False) -> None:
        with self._session() as conn:
            found = self._catalog.privileges(conn, table)
        problems = _problems(found, self.schema, table, write)
        if problems:
            raise StoreError(f"{self._where()}: " + "; ".join(problems))

    # ---- candles

    def spans(self, source: str | None = None,
              series: SeriesKey | None = None) -> list[SeriesSpan]:
        where, params = _series_where(source, series)
        sql = (f"SELECT source, symbol, timeframe, {epoch_ms('min(ts)')}, "
               f"{epoch_ms('max(ts)')}, "
               f"count(*) FROM {self._q(CANDLES.name)}{where} GROUP BY 1, 2, 3")
        with self._session() as conn:
            if not self._catalog.column_types(conn, CANDLES.name):
                return []
            rows = conn.execute(sql, params).fetchall()
        spans = [SeriesSpan(SeriesKey(src, sym, tf), int(first), int(last), int(count))
                 for src, sym, tf, first, last, count in rows]
        return sorted(spans, key=lambda s: s.series)

    def find_gaps(self, series: SeriesKey | None = None, start_ms: int | None = None,
                  end_ms: int | None = None) -> pa.Table:
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            return GAP_SCHEMA.empty_table()
        with self._session() as conn:
            if not self._catalog.column_types(conn, CANDLES.name):
                return GAP_SCHEMA.empty_table()
            listed = [series] if series is not None else [
                SeriesKey(*row) for row in self._catalog.distinct_prefixes(
                    conn, CANDLES.name, ("source", "symbol", "timeframe"))]
            return pg_gaps.find_gaps(conn, self._q(CANDLES.name), listed, start_ms, end_ms,
                                     one=series is not None)

    def close(self) -> None:
        self._pool.close()


def _is_time(t: pa.DataType) -> bool:
    return bool(pa.types.is_timestamp(t) or pa.types.is_date(t))


def _series_where(source: str | None, series: SeriesKey | None) -> tuple[str, list[Any]]:
    if series is not None:
        return (" WHERE source = %s AND symbol = %s AND timeframe = %s", list(series))
    if source is not None:
        return " WHERE source = %s", [source]
    return "", []


def _stage(conn: Connection, table: pa.Table) -> None:
    """The batch, by binary COPY, in a temporary table that the transaction's end drops."""
    cols = ", ".join(f"{quote_ident(f.name)} {stage_type(f.type)}" for f in table.schema)
    conn.execute(f"CREATE TEMP TABLE {_STAGE} ({cols}) ON COMMIT DROP")
    names = ", ".join(quote_ident(c) for c in table.column_names)
    with conn.cursor() as cur, cur.copy(
            f"COPY {_STAGE} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        for piece in copy_chunks(table):
            copy.write(piece)


def _cast(prefix: str, col: str, types: dict[str, str]) -> str:
    """A staged column as the target column's type: a no-op where the types match, and how
    a text-staged value (a decimal, a foreign table's uuid) reaches its real type."""
    return f"{prefix}.{quote_ident(col)}::{types[col]}"


def _merge_sql(target: str, key: Sequence[str], columns: Sequence[str],
               types: dict[str, str]) -> str:
    on = " AND ".join(f"t.{quote_ident(k)} = {_cast('s', k, types)}" for k in key)
    values = [c for c in columns if c not in key]
    insert = (f"WHEN NOT MATCHED THEN INSERT ({', '.join(quote_ident(c) for c in columns)}) "
              f"VALUES ({', '.join(_cast('s', c, types) for c in columns)})")
    if not values:
        return f"MERGE INTO {target} t USING {_STAGE} s ON {on} {insert}"
    stored = ", ".join(f"t.{quote_ident(c)}" for c in values)
    given = ", ".join(_cast("s", c, types) for c in values)
    sets = ", ".join(f"{quote_ident(c)} = {_cast('s', c, types)}" for c in values)
    return (f"MERGE INTO {target} t USING {_STAGE} s ON {on} "
            f"WHEN MATCHED AND ROW({stored}) IS DISTINCT FROM ROW({given}) THEN UPDATE SET "
            f"{sets} {insert}")


def _on_conflict_sql(target: str, key: Sequence[str], columns: Sequence[str],
                     types: dict[str, str]) -> str:
    cols = ", ".join(quote_ident(c) for c in columns)
    picks = ", ".join(_cast("s", c, types) for c in columns)
    keys = ", ".join(quote_ident(k) for k in key)
    values = [c for c in columns if c not in key]
    head = f"INSERT INTO {target} AS t ({cols}) SELECT {picks} FROM {_STAGE} s ON CONFLICT ({keys})"
    if not values:
        return f"{head} DO NOTHING"
    sets = ", ".join(f"{quote_ident(c)} = excluded.{quote_ident(c)}" for c in values)
    stored = ", ".join(f"t.{quote_ident(c)}" for c in values)
    given = ", ".join(f"excluded.{quote_ident(c)}" for c in values)
    return f"{head} DO UPDATE SET {sets} WHERE ROW({stored}) IS DISTINCT FROM ROW({given})"


def _problems(found: Privileges, schema: str, table: str | None, write: bool) -> list[str]:
    """What keeps the store's user from reading (or writing) ``table``, each with its fix."""
    user, db = found.user, found.database
    out: list[str] = []
    if write and not found.temp:
        out.append(f"user {user} may not create temporary tables (batches are staged in "
                   f"one): GRANT TEMPORARY ON DATABASE {db} TO {user}")
    if not found.schema_exists:
        if table is not None and not write:
            out.append(f"table {schema}.{table} does not exist: schema {schema} does not "
                       f"exist in database {db} (the first write creates both)")
        elif write and not found.db_create:
            out.append(f"schema {schema} does not exist and user {user} may not create it: "
                       f"CREATE SCHEMA {schema} AUTHORIZATION {user}, or GRANT CREATE ON "
                       f"DATABASE {db} TO {user}")
        return out
    if not found.schema_usage:
        out.append(f"user {user} may not use schema {schema}: GRANT USAGE ON SCHEMA "
                   f"{schema} TO {user}")
        return out
    if table is None:
        return out
    if not found.table_exists:
        if not write:
            out.append(f"table {schema}.{table} does not exist (nothing has written it yet; "
                       "check the name)")
        elif not found.schema_create:
            out.append(f"table {schema}.{table} does not exist and user {user} may not "
                       f"create it: GRANT CREATE ON SCHEMA {schema} TO {user}")
        return out
    needed = ("SELECT", "INSERT", "UPDATE") if write else ("SELECT",)
    lacking = [p for p in needed if p not in found.table_privileges]
    if lacking:
        out.append(f"user {user} lacks {', '.join(lacking)} on {schema}.{table}: GRANT "
                   f"{', '.join(lacking)} ON {schema}.{table} TO {user}")
    return out


def _reusable(conn: Connection) -> bool:
    """Not broken, and not left inside a transaction."""
    return not (conn.broken or conn.closed
                or conn.info.transaction_status != pq.TransactionStatus.IDLE)


def _alive(conn: Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True
