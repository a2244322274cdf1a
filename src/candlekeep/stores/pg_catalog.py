"""What a PostgreSQL schema holds, read from the catalogue: column types, keys, table sizes,
the newest time value and the store user's privileges."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa

from candlekeep.core.datasets import Dataset
from candlekeep.core.errors import StoreError
from candlekeep.stores.base import DatasetStats
from candlekeep.stores.sql import described, newest_column, quote_ident

Connection = psycopg.Connection[Any]

EXACT_BELOW = 100_000
"""Tables the planner puts below this many rows are counted; bigger ones report its estimate
(``pg_class.reltuples`` scaled to the table's current size, partitions and hypertable chunks
included) instead of scanning."""

_ARROW: dict[str, pa.DataType] = {
    "float8": pa.float64(), "float4": pa.float32(), "int8": pa.int64(), "int4": pa.int32(),
    "int2": pa.int16(), "bool": pa.bool_(), "date": pa.date32(), "bytea": pa.binary(),
    "timestamptz": pa.timestamp("ms", tz="UTC"), "timestamp": pa.timestamp("ms"),
}

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, NULL), t.typname, a.atttypmod, a.attnotnull
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_PRIMARY_KEY = """
SELECT a.attname FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = to_regclass(%s) AND i.indisprimary
ORDER BY k.ord
"""

_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
"""

_PRIVILEGES = """
SELECT current_user, current_database(),
       has_database_privilege(current_database(), 'CREATE'),
       has_database_privilege(current_database(), 'TEMPORARY'),
       n.oid IS NOT NULL,
       n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'USAGE'),
       n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'CREATE'),
       r.oid IS NOT NULL,
       ARRAY(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE']) AS p
             WHERE r.oid IS NOT NULL AND has_table_privilege(r.oid, p))
FROM (SELECT %s::name AS nspname, %s::name AS relname) AS x
LEFT JOIN pg_namespace n ON n.nspname = x.nspname
LEFT JOIN pg_class r ON r.relnamespace = n.oid AND r.relname = x.relname
"""


@dataclass(frozen=True, slots=True)
class Privileges:
    user: str
    database: str
    db_create: bool
    temp: bool
    schema_exists: bool
    schema_usage: bool
    schema_create: bool
    table_exists: bool
    table_privileges: tuple[str, ...]


def epoch_ms(expr: str) -> str:
    """SQL: a timestamp expression as epoch milliseconds (bigint)."""
    return f"(date_part('epoch', {expr}) * 1000)::bigint"


class Catalog:
    def __init__(self, schema: str) -> None:
        self.schema = schema

    def qualified(self, table: str) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(table)}"

    def schema_exists(self, conn: Connection) -> bool:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                           [self.schema]).fetchone()
        return row is not None

    def column_types(self, conn: Connection, table: str) -> dict[str, str]:
        """Column → SQL type of ``table`` without its modifier; empty when there is no such
        table. Staged values are cast to these, so that the assignment to the column applies
        its length or precision and raises (``varchar(5)``), where a cast to the modified
        type would silently cut a key down to another key."""
        rows = conn.execute(_COLUMNS, [self.qualified(table)]).fetchall()
        return {name: sql_type for name, sql_type, *_ in rows}

    def describe(self, conn: Connection, table: str) -> Dataset | None:
        rows = conn.execute(_COLUMNS, [self.qualified(table)]).fetchall()
        if not rows:
            return None
        schema = pa.schema([pa.field(name, _arrow_type(typname, typmod), not notnull)
                            for name, _, typname, typmod, notnull in rows])
        key = [r[0] for r in conn.execute(_PRIMARY_KEY, [self.qualified(table)]).fetchall()]
        return described(table, schema, key)

    def distinct_prefixes(self, conn: Connection, table: str,
                          cols: Sequence[str]) -> list[tuple[Any, ...]]:
        """Distinct values of a leading part of the primary key."""
        names = ", ".join(quote_ident(c) for c in cols)
        sql = f"{self._skip_scan(table, cols)} SELECT {names} FROM s"
        return [tuple(r) for r in conn.execute(sql).fetchall()]

    def _skip_scan(self, table: str, cols: Sequence[str]) -> str:
        """A CTE ``s`` of the distinct values of ``cols`` (a leading part of the primary key),
        one index probe per value (a loose index scan) instead of reading every row."""
        names = ", ".join(quote_ident(c) for c in cols)
        inner = ", ".join(f"n.{quote_ident(c)}" for c in cols)
        prev = ", ".join(f"s.{quote_ident(c)}" for c in cols)
        after = (f"ROW({names}) > ROW({prev})" if len(cols) > 1 else f"{names} > {prev}")
        qualified = self.qualified(table)
        return (f"WITH RECURSIVE s AS ((SELECT {names} FROM {qualified} ORDER BY {names} "
                f"LIMIT 1) UNION ALL SELECT {inner} FROM s CROSS JOIN LATERAL (SELECT {names} "
                f"FROM {qualified} WHERE {after} ORDER BY {names} LIMIT 1) n)")

    def stats(self, conn: Connection,
              tables: Collection[str] | None = None) -> list[DatasetStats]:
        names = [r[0] for r in conn.execute(_TABLES, [self.schema]).fetchall()
                 if tables is None or r[0] in tables]
        out = []
        for name in names:
            try:
                dataset = self.describe(conn, name)
            except StoreError:  # a name candlekeep cannot use as a dataset: counted only
                dataset = None
                if not self.column_types(conn, name):
                    continue
            else:
                if dataset is None:  # dropped meanwhile
                    continue
            rows, exact = self._rows(conn, name)
            newest = None if dataset is None else self._newest(conn, dataset)
            out.append(DatasetStats(name, rows, exact, newest))
        return out

    def _rows(self, conn: Connection, table: str) -> tuple[int, bool]:
        (plan,) = conn.execute(
            f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {self.qualified(table)}").fetchone() or ("[]",)
        parsed = json.loads(plan) if isinstance(plan, str) else plan
        estimate = int(parsed[0]["Plan"]["Plan Rows"])
        if estimate >= EXACT_BELOW:
            return estimate, False
        (count,) = conn.execute(f"SELECT count(*) FROM {self.qualified(table)}").fetchone() \
            or (0,)
        return int(count), True

    def _newest(self, conn: Connection, dataset: Dataset) -> int | None:
        """The newest time value. Where the time column follows a leading part of the key
        (candles: source, symbol, timeframe, then ts), the newest of each series is one
        probe of the key's index, so the table is never scanned."""
        col = newest_column(dataset.name, dataset.schema)
        if col is None:
            return None
        value = (epoch_ms("max(x)") if pa.types.is_timestamp(dataset.schema.field(col).type)
                 else "(max(x) - DATE '1970-01-01')::bigint * 86400000")
        value = f"CASE WHEN isfinite(max(x)) THEN {value} END"  # 'infinity' is no time
        table = self.qualified(dataset.name)
        x = quote_ident(col)
        prefix = dataset.key[:dataset.key.index(col)] if col in dataset.key else ()
        if not prefix:
            sql = f"SELECT {value} FROM (SELECT {x} AS x FROM {table}) q"
        else:
            match = " AND ".join(f"t.{quote_ident(c)} = s.{quote_ident(c)}" for c in prefix)
            sql = (f"{self._skip_scan(dataset.name, prefix)} SELECT {value} FROM s CROSS JOIN "
                   f"LATERAL (SELECT t.{x} AS x FROM {table} t WHERE {match} ORDER BY t.{x} "
                   "DESC LIMIT 1) q")
        row = conn.execute(sql).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def privileges(self, conn: Connection, table: str | None) -> Privileges:
        row = conn.execute(_PRIVILEGES, [self.schema, table]).fetchone()
        assert row is not None
        user, db, db_create, temp, exists, usage, create, table_exists, privs = row
        return Privileges(user, db, bool(db_create), bool(temp), bool(exists), bool(usage),
                          bool(create), bool(table_exists), tuple(privs))


def _arrow_type(typname: str, typmod: int) -> pa.DataType:
    if typname in _ARROW:
        return _ARROW[typname]
    if typname == "numeric" and typmod >= 4:
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        if precision <= 38:
            return pa.decimal128(precision, scale)
    return pa.string()  # text, varchar, uuid, json, ...: read as their text form
