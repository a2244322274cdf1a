"""SQL the SQL-standard stores (DuckDB, PostgreSQL) share: Arrow → column types, keyed
tables, ON CONFLICT upserts of the columns a batch carries, filtered ordered reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from candlekeep.core.datasets import Dataset, known
from candlekeep.core.errors import StoreError

Quote = Callable[[str], str]

NEWEST_COLUMNS = ("ts", "date", "updated_at", "ingested_at", "time", "timestamp")
"""Where no dataset says which column is its time, the first of these that holds times."""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_type(t: pa.DataType, *, text: str, blob: str, double: str) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return text
    simple = {
        pa.float64(): double, pa.float32(): "REAL", pa.int64(): "BIGINT",
        pa.int32(): "INTEGER", pa.int16(): "SMALLINT", pa.int8(): "SMALLINT",
        pa.bool_(): "BOOLEAN", pa.date32(): "DATE", pa.binary(): blob,
        pa.large_binary(): blob,
    }
    if t in simple:
        return simple[t]
    if pa.types.is_decimal(t):
        return f"NUMERIC({t.precision}, {t.scale})"
    raise StoreError(f"no SQL column type for Arrow type {t}")


def duckdb_type(field: pa.Field) -> str:
    return _sql_type(field.type, text="VARCHAR", blob="BLOB", double="DOUBLE")


def postgres_type(field: pa.Field) -> str:
    return _sql_type(field.type, text="TEXT", blob="BYTEA", double="DOUBLE PRECISION")


def create_table_sql(dataset: Dataset, quote: Quote, type_of: Callable[[pa.Field], str],
                     qualified: str | None = None) -> str:
    cols = [f"{quote(f.name)} {type_of(f)}{'' if f.nullable else ' NOT NULL'}"
            for f in dataset.schema]
    cols.append(f"PRIMARY KEY ({', '.join(quote(k) for k in dataset.key)})")
    name = qualified or quote(dataset.name)
    return f"CREATE TABLE IF NOT EXISTS {name} (\n    " + ",\n    ".join(cols) + "\n)"


def upsert_sql(dataset: Dataset, columns: Sequence[str], quote: Quote, source: str,
               qualified: str | None = None) -> str:
    """INSERT … SELECT … ON CONFLICT DO UPDATE of exactly ``columns`` (a partial batch never
    nulls what it does not carry)."""
    cols = ", ".join(quote(c) for c in columns)
    keys = ", ".join(quote(k) for k in dataset.key)
    updates = [f"{quote(c)} = excluded.{quote(c)}" for c in columns if c not in dataset.key]
    action = "DO UPDATE SET " + ", ".join(updates) if updates else "DO NOTHING"
    name = qualified or quote(dataset.name)
    return (f"INSERT INTO {name} ({cols}) SELECT {cols} FROM {source} "
            f"ON CONFLICT ({keys}) {action}")


Render = Callable[[pa.Field, Any], str]
"""A value as SQL text for a column: a placeholder (see ``Bound``) or a literal."""


class Bound:
    """Renders values as placeholders and collects them as parameters, in order; an int on a
    timestamp column is epoch milliseconds and becomes ``ts_param(ms)``."""

    def __init__(self, placeholder: str, ts_param: Callable[[int], Any]) -> None:
        self.placeholder = placeholder
        self.ts_param = ts_param
        self.params: list[Any] = []

    def __call__(self, field: pa.Field, value: Any) -> str:
        is_ms = (pa.types.is_timestamp(field.type) and isinstance(value, int)
                 and not isinstance(value, bool))
        self.params.append(self.ts_param(value) if is_ms else value)
        return self.placeholder


def select_sql(
    dataset: Dataset,
    quote: Quote,
    render: Render,
    source: str,
    *,
    where: Any = None,
    column: str | None = None,
    lo: Any = None,
    hi: Any = None,
    limit: int | None = None,
) -> str:
    """The store contract's ``read`` as one SELECT from ``source`` (the table, as the
    dialect names it), values through ``render``."""
    parts: list[str] = []
    for col, value in (where or {}).items():
        field = _field(dataset, col)
        parts.append(f"{quote(col)} IS NULL" if value is None else
                     f"{quote(col)} = {render(field, value)}")
    if column is not None:
        field = _field(dataset, column)
        for bound, op in ((lo, ">="), (hi, "<")):
            if bound is not None:
                parts.append(f"{quote(column)} {op} {render(field, bound)}")
    order = ([column] if column else []) + [k for k in dataset.key if k != column]
    sql = f"SELECT {', '.join(quote(c) for c in dataset.schema.names)} FROM {source}"
    if parts:
        sql += " WHERE " + " AND ".join(parts)
    if order:
        sql += " ORDER BY " + ", ".join(quote(c) for c in order)
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql


def _field(dataset: Dataset, col: str) -> pa.Field:
    if col not in dataset.schema.names:
        raise StoreError(f"dataset {dataset.name} has no column {col!r}")
    return dataset.schema.field(col)


def described(table: str, schema: pa.Schema, key: Sequence[str]) -> Dataset:
    """A table as a Dataset: the registered dataset of that name when the columns match,
    else one built from the catalogue (key columns made non-null, as the engine keeps them)."""
    have = known(table)
    if have is not None and set(have.schema.names) == set(schema.names):
        return have
    fields = [_ms_times(f.with_nullable(False) if f.name in key else f) for f in schema]
    schema = pa.schema(fields)
    time = newest_column(table, schema)
    try:
        return Dataset(table, schema, tuple(key), None, time)
    except ValueError as exc:  # a foreign table named outside candlekeep's rules
        raise StoreError(f"table {table!r} cannot be used as a dataset: {exc}") from None


def _ms_times(field: pa.Field) -> pa.Field:
    """candlekeep's times are milliseconds: engines hand back their own unit (us, ns)."""
    t = field.type
    if pa.types.is_timestamp(t) and t.unit != "ms":
        return field.with_type(pa.timestamp("ms", tz=t.tz))
    return field


def newest_column(table: str, schema: pa.Schema) -> str | None:
    have = known(table)
    if have is not None and have.time in schema.names:
        return have.time
    for name in NEWEST_COLUMNS:
        if name in schema.names:
            t = schema.field(name).type
            if pa.types.is_timestamp(t) or pa.types.is_date(t):
                return name
    return None
