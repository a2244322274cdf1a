"""Sections over a dataset kept in a configured store (positions, trades, tracking error).

``sql_rows`` reads the state DB; a dataset lives in a store, which may be DuckDB,
PostgreSQL or ClickHouse. ``store_rows`` reads it through the Store interface
(``Store.read``: the report's window on the dataset's time column), so one section works on
every engine, with no SQL per engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from candlekeep.core.datasets import Dataset, known
from candlekeep.reports.sections import Cell, Row, RowsFn, SectionError, SectionInput

if TYPE_CHECKING:
    from candlekeep.stores.base import Filter, Store

_TO_MS = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}
"""Per timestamp unit: multiply, then floor-divide, to get epoch ms."""


def store_rows(store: str, dataset: str | Dataset, *, time_column: str | None = None,
               columns: Sequence[str] | None = None, where: Filter | None = None,
               limit: int | None = None, newest_first: bool = False) -> RowsFn:
    """A section's rows from ``dataset`` in the configured store ``store``: the rows whose
    ``time_column`` (default: the dataset's time column) falls in the report's window,
    ``columns`` in that order (default: all), matching ``where`` (column → value).

    Rows come in time order, or newest first; ``limit`` caps the rows read (the window's
    earliest: stores read in time order), the section's own ``limit`` what is shown.
    Timestamps become epoch ms (``Format.TIME`` shows them), decimals floats, other types
    text. ``dataset`` may be a name: a registered dataset, or a table the store describes.
    """
    cols = list(columns or ())

    def rows(inp: SectionInput) -> list[Row]:
        st = inp.runtime.store(store)
        ds = dataset if isinstance(dataset, Dataset) else _find(st, store, dataset)
        col = _time_column(store, ds, time_column)
        unknown = [c for c in cols if c not in ds.schema.names]
        if unknown:
            raise SectionError(f"store {store}, dataset {ds.name}: no column(s) "
                               f"{', '.join(unknown)}; its columns: "
                               f"{', '.join(ds.schema.names)}")
        table = st.read(ds, where=where, column=col, lo=inp.since_ms, hi=inp.now_ms + 1,
                        limit=limit)
        out = _rows(table.select(cols) if cols else table)
        return out[::-1] if newest_first else out

    return rows


def _find(st: Store, store: str, name: str) -> Dataset:
    """The dataset called ``name``: as the store has it, else as registered (a dataset not
    written yet reads as empty); SectionError naming the store's tables otherwise."""
    found = st.describe(name) or known(name)
    if found is None:
        tables = ", ".join(s.name for s in st.stats()) or "none"
        raise SectionError(f"store {store} has no dataset {name!r} (its tables: {tables})")
    return found


def _time_column(store: str, ds: Dataset, given: str | None) -> str:
    col = given or ds.time
    if col is None:
        raise SectionError(f"store {store}, dataset {ds.name}: no time column to read the "
                           "report's window by; pass time_column=")
    if col not in ds.schema.names:
        raise SectionError(f"store {store}, dataset {ds.name}: no column {col!r}; its "
                           f"columns: {', '.join(ds.schema.names)}")
    t = ds.schema.field(col).type
    if not (pa.types.is_timestamp(t) or pa.types.is_integer(t)):
        raise SectionError(f"store {store}, dataset {ds.name}: column {col!r} is {t}; the "
                           "report's window needs a timestamp or an epoch-ms integer column")
    return col


def _rows(table: pa.Table) -> list[Row]:
    cells = [_cells(table.column(i)) for i in range(table.num_columns)]
    return list(zip(*cells, strict=True))


def _cells(column: pa.ChunkedArray) -> list[Cell]:
    t = column.type
    if pa.types.is_timestamp(t):
        mul, div = _TO_MS[t.unit]
        return [None if v is None else v * mul // div
                for v in column.cast(pa.int64()).to_pylist()]
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t) \
            or pa.types.is_large_string(t):
        return list(column.to_pylist())
    if pa.types.is_decimal(t):
        return [None if v is None else float(v) for v in column.to_pylist()]
    if pa.types.is_boolean(t):
        return [None if v is None else str(v).lower() for v in column.to_pylist()]
    return [None if v is None else str(v) for v in column.to_pylist()]
