"""ClickHouse SQL for datasets: Arrow ↔ column types, the table layout, literals and reads.

Layout: ``ReplacingMergeTree(<version>)`` ordered by the dataset's key, so a key written twice
becomes one row when its parts merge, the row with the highest version winning (on a tie, and
for datasets without a version column, the row inserted last). Until then both rows exist:
every read that must be exact says ``FINAL``. Tables are partitioned by month of the time
column only when that column is part of the key: ReplacingMergeTree never merges across
partitions, so a key must always land in the same one.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.core.datasets import Dataset
from candlekeep.core.errors import StoreError
from candlekeep.stores import sql
from candlekeep.stores.prepare import SERIES_COLUMNS

_UNITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}
_PRECISION_UNIT = ["s", "ms", "ms", "ms", "us", "us", "us", "ns", "ns", "ns"]
_INTS = {f"{p}Int{b}": getattr(pa, f"{p.lower()}int{b}")()
         for p in ("", "U") for b in (8, 16, 32, 64)}
_SIMPLE: dict[str, pa.DataType] = {
    **_INTS, "Float32": pa.float32(), "Float64": pa.float64(), "Bool": pa.bool_(),
    "String": pa.string(), "Date": pa.date32(), "Date32": pa.date32(),
}
_WRAPPER = re.compile(r"^(Nullable|LowCardinality)\((.*)\)$")
_DATETIME64 = re.compile(r"^DateTime64\((\d)(?:,\s*'[^']*')?\)$")
_DECIMAL = re.compile(r"^Decimal(?:\((\d+),\s*(\d+)\)|(32|64|128|256)\((\d+)\))$")
_REPLACING = re.compile(r"ReplacingMergeTree\((.*?)\)\s*(?:PARTITION|PRIMARY|ORDER|SAMPLE|TTL|"
                        r"SETTINGS|COMMENT|$)")


def ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def qualified(database: str, table: str) -> str:
    return f"{ident(database)}.{ident(table)}"


# --------------------------------------------------------------------------- types


def column_type(dataset: Dataset, field: pa.Field) -> str:
    """The ClickHouse type of one dataset column. Series columns (source, symbol, timeframe)
    hold few distinct values: LowCardinality stores them as dictionary codes and lets scans
    and GROUP BYs work on those."""
    t = field.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) \
            or pa.types.is_large_binary(t):
        base = "String"
    elif pa.types.is_timestamp(t):
        base = f"DateTime64({_UNITS[t.unit]}, 'UTC')"
    elif pa.types.is_date(t):
        base = "Date32"
    elif pa.types.is_decimal(t):
        base = f"Decimal({t.precision}, {t.scale})"
    else:
        names = {v: k for k, v in _SIMPLE.items() if k not in ("String", "Date", "Date32")}
        if t not in names:
            raise StoreError(f"dataset {dataset.name}: column {field.name}: no ClickHouse type "
                             f"for Arrow type {t}")
        base = names[t]
    if field.nullable:
        base = f"Nullable({base})"
    if field.name in SERIES_COLUMNS and base.startswith(("String", "Nullable(String")):
        base = f"LowCardinality({base})"
    return base


def arrow_field(name: str, ch_type: str) -> pa.Field | None:
    """The Arrow field the read path returns for a ClickHouse column type; None for a type
    this module does not map (the caller asks the engine)."""
    nullable = False
    t = ch_type.strip()
    while m := _WRAPPER.match(t):
        nullable = nullable or m.group(1) == "Nullable"
        t = m.group(2).strip()
    arrow: pa.DataType | None = _SIMPLE.get(t)
    if t.startswith("FixedString("):
        arrow = pa.string()
    elif t == "DateTime" or t.startswith("DateTime("):
        arrow = pa.timestamp("s", tz="UTC")
    elif m := _DATETIME64.match(t):
        arrow = pa.timestamp(_PRECISION_UNIT[int(m.group(1))], tz="UTC")
    elif m := _DECIMAL.match(t):
        precision = int(m.group(1) or {"32": 9, "64": 18, "128": 38, "256": 76}[m.group(3)])
        scale = int(m.group(2) or m.group(4))
        arrow = pa.decimal128(precision, scale) if precision <= 38 else \
            pa.decimal256(precision, scale)
    return None if arrow is None else pa.field(name, arrow, nullable=nullable)


def check_version(dataset: Dataset) -> None:
    """ReplacingMergeTree orders versions by an unsigned integer, a date or a time."""
    if dataset.version is None:
        return
    field = dataset.schema.field(dataset.version)
    t = field.type
    if field.nullable or not (pa.types.is_unsigned_integer(t) or pa.types.is_timestamp(t)
                              or pa.types.is_date(t)):
        raise StoreError(
            f"dataset {dataset.name}: ClickHouse keeps the row with the highest version, which "
            f"must be a non-null unsigned integer, date or timestamp; version column "
            f"{dataset.version} is {t}{' (nullable)' if field.nullable else ''}")


def create_table_sql(database: str, dataset: Dataset) -> str:
    check_version(dataset)
    cols = ",\n    ".join(f"{ident(f.name)} {column_type(dataset, f)}" for f in dataset.schema)
    engine = "ReplacingMergeTree" + (f"({ident(dataset.version)})" if dataset.version else "")
    partition = ""
    if dataset.time is not None and dataset.time in dataset.key:
        partition = f"\nPARTITION BY toYYYYMM({ident(dataset.time)})"
    order = ", ".join(ident(k) for k in dataset.key)
    order = f"({order})" if len(dataset.key) > 1 else order
    comment = (f"candlekeep dataset {dataset.name}: one row per key ({', '.join(dataset.key)}) "
               "once parts merge; read with FINAL for exact results before that")
    return (f"CREATE TABLE IF NOT EXISTS {qualified(database, dataset.name)} (\n    {cols}\n)\n"
            f"ENGINE = {engine}{partition}\nORDER BY {order}\nCOMMENT {lit(comment)}")


# --------------------------------------------------------------------------- literals


def lit(value: Any) -> str:
    """A SQL literal. Values are inlined so that ClickHouse sees constants it can match
    against the primary key and partition bounds."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else
                                                         ("inf" if value > 0 else "-inf"))
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        scale = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        return f"toDecimal256({lit(str(value))}, {scale})"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return f"toDateTime64({lit(value.isoformat(sep=' '))}, 6, 'UTC')"
    if isinstance(value, dt.date):
        return f"toDate32({lit(value.isoformat())})"
    if isinstance(value, bytes):
        return f"unhex({lit(value.hex())})"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise StoreError(f"cannot write {type(value).__name__} value {value!r} into SQL")


def _literals(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """SQL literals for a whole column, built by Arrow (one string per row, no Python loop).
    Times are UTC text (``key_sets`` has ClickHouse read them as UTC)."""
    t = column.type
    if pa.types.is_timestamp(t):
        utc = column.cast(pa.timestamp(t.unit, tz="UTC"))
        text = pc.strftime(utc, format="%Y-%m-%d %H:%M:%S")  # with the unit's fraction
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_date(t) \
            or pa.types.is_decimal(t):  # a decimal as text converts exactly, not via Float64
        text = column.cast(pa.string())
    elif pa.types.is_integer(t) or pa.types.is_boolean(t):
        return column.cast(pa.string())
    else:
        raise StoreError(f"cannot look up stored rows by a key column of type {t}")
    escaped = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), "'", "\\'")
    return pc.binary_join_element_wise("'", escaped, "'", "")


def key_sets(table: pa.Table, key: Sequence[str], types: Sequence[str], max_bytes: int
             ) -> list[str]:
    """``table``'s keys as sets for ``(k1, k2) IN <set>``, in pieces of at most about
    ``max_bytes`` of literals; ``types``: the key columns' ClickHouse types. An IN set reads
    a time's text in the column's timezone: UTC text is exact for this store's own columns
    (``DateTime64(<the unit's digits>, 'UTC')``, the common case, kept as plain literals),
    and for any other time column would name another instant, or none (a local hour happens
    twice when clocks go back), or not parse (DateTime takes no fraction). Those sets are one
    CAST of the literals to the key's types in UTC, which the IN set converts to the
    columns' instants (one conversion for the whole set, where a function call per key would
    be evaluated key by key)."""
    pieces = _key_tuples(table, key, max_bytes)
    units = [table.schema.field(k).type for k in key]
    if all(not pa.types.is_timestamp(u) or t == f"DateTime64({_UNITS[u.unit]}, 'UTC')"
           for u, t in zip(units, types, strict=True)):
        return [f"({piece})" for piece in pieces]
    element = [_in_utc(t) for t in types]
    array = element[0] if len(element) == 1 else f"Tuple({', '.join(element)})"
    return [f"CAST([{piece}] AS Array({array}))" for piece in pieces]


def _in_utc(ch_type: str) -> str:
    """A column type without its wrappers (Nullable, LowCardinality: they cost the CAST
    time and change no value), and for DateTime and DateTime64 in UTC."""
    t = ch_type.strip()
    while m := _WRAPPER.match(t):
        t = m.group(2).strip()
    if m := _DATETIME64.match(t):
        return f"DateTime64({m.group(1)}, 'UTC')"
    if t == "DateTime" or t.startswith("DateTime("):
        return "DateTime('UTC')"
    return t


def _key_tuples(table: pa.Table, key: Sequence[str], max_bytes: int) -> list[str]:
    """``table``'s keys as SQL tuples ``(k1, k2), (…)``, in pieces of at most about
    ``max_bytes`` (ClickHouse parses a bounded amount of query text)."""
    parts: list[Any] = ["("]
    for i, name in enumerate(key):
        parts += [",", _literals(table.column(name))] if i else [_literals(table.column(name))]
    rows = pc.binary_join_element_wise(*parts, "),", "").combine_chunks()
    offset_buffer, data = rows.buffers()[1:3]
    assert offset_buffer is not None and data is not None
    offsets = np.frombuffer(offset_buffer, np.int32)[rows.offset:rows.offset + len(rows) + 1]
    text = data.to_pybytes()
    cuts = [0]
    while cuts[-1] < len(rows):
        limit = offsets[cuts[-1]] + max_bytes
        cuts.append(max(cuts[-1] + 1, int(np.searchsorted(offsets, limit, side="right")) - 1))
    return [text[offsets[a]:offsets[b] - 1].decode() for a, b in itertools.pairwise(cuts)]


def ms_lit(ms: int) -> str:
    return f"fromUnixTimestamp64Milli(toInt64({int(ms)}), 'UTC')"


def value_sql(field: pa.Field, value: Any) -> str:
    """A filter value for ``field``: epoch milliseconds on timestamp columns, else ``lit``."""
    if pa.types.is_timestamp(field.type) and isinstance(value, int) \
            and not isinstance(value, bool):
        return ms_lit(value)
    return lit(value)


# --------------------------------------------------------------------------- reads


def select_sql(database: str, dataset: Dataset, *, final: bool = True,
               **query: Any) -> str:
    """The store contract's ``read`` as one SELECT (``FINAL`` unless the engine has none);
    values inlined as literals."""
    source = f"{qualified(database, dataset.name)}{' FINAL' if final else ''}"
    return sql.select_sql(dataset, ident, value_sql, source, **query)


def to_schema(table: pa.Table, schema: pa.Schema, source: str) -> pa.Table:
    """A query result in ``schema``. ClickHouse's Arrow output marks nullability per column
    and gives DateTime (seconds) as uint32. A table written by others may hold finer times
    than the schema's: they are truncated, as the other stores read them (an overflow is still
    an error). A value the schema cannot hold is a StoreError naming ``source``."""
    columns = []
    for field in schema:
        col = table.column(field.name)
        try:
            if pa.types.is_timestamp(field.type):
                if pa.types.is_integer(col.type):
                    col = col.cast(pa.int64()).cast(pa.timestamp("s", tz=field.type.tz))
                col = pc.cast(col, options=pc.CastOptions(field.type, allow_time_truncate=True))
            else:
                col = col.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise StoreError(f"{source}: column {field.name}: cannot read {col.type} as "
                             f"{field.type}: {exc}") from None
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


# --------------------------------------------------------------------------- catalogue


def sorting_key(expr: str, columns: list[str]) -> tuple[str, ...]:
    """The sorting key as column names; empty when any part is an expression (a table this
    store cannot write idempotently)."""
    expr = expr.strip()
    if expr.startswith("(") and expr.endswith(")"):  # ORDER BY (id) reads back as '(id)'
        expr = expr[1:-1]
    names = tuple(p.strip().strip("`") for p in expr.split(",") if p.strip())
    return names if all(n in columns for n in names) else ()


def replacing_version(engine_full: str, columns: list[str]) -> str | None:
    """The version column of a (Shared/Replicated) ReplacingMergeTree, from ``engine_full``;
    quoted arguments are the replication path and replica name."""
    m = _REPLACING.search(engine_full)
    if m is None:
        return None
    args = [a.strip().strip("`") for a in m.group(1).split(",")]
    names = [a for a in args if a and not a.startswith("'")]
    return names[0] if names and names[0] in columns else None
