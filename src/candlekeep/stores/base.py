"""The contract every store fulfils. Stores are synchronous; jobs call them off the loop.

Every behaviour here is pinned by tests/stores/test_contract.py, which runs against every
store type: a new backend is done when that suite passes on it.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from candlekeep.core.datasets import CANDLES, Dataset
from candlekeep.core.errors import StoreError
from candlekeep.core.schema import CANDLE_SCHEMA
from candlekeep.core.series import SeriesKey


@dataclass(frozen=True, slots=True)
class SeriesSpan:
    series: SeriesKey
    first_ms: int
    last_ms: int
    count: int


@dataclass(frozen=True, slots=True)
class DatasetStats:
    """One table a store holds. ``rows`` is the engine's estimate where counting would scan
    a big table (``exact`` says which); ``newest_ms`` is the newest value of its time column."""

    name: str
    rows: int
    exact: bool
    newest_ms: int | None


Filter = Mapping[str, Any]
"""Column → value equality filters (``{"source": "binance", "symbol": "BTC/USDT"}``)."""


class Store(abc.ABC):
    """Idempotent storage of datasets. Writing a key twice leaves one row holding the later
    values; a batch that does not carry a column leaves that column as stored. (ClickHouse
    keeps the row with the higher version column instead; writers only ever raise it, e.g.
    candles' ``ingested_at``, where the two rules agree.)

    Time bounds (``lo``/``hi``) on a timestamp column are epoch milliseconds; on other
    columns, plain Python values of the column's type.
    """

    name: str

    # ---- datasets

    @abc.abstractmethod
    def upsert(self, dataset: Dataset, batch: pa.Table) -> int:
        """Write ``batch`` (some or all of ``dataset``'s columns, key columns always);
        returns rows written after de-duplicating the batch on the key (last row wins).
        Creates the dataset's table on first write."""

    @abc.abstractmethod
    def read(
        self,
        dataset: Dataset,
        *,
        where: Filter | None = None,
        column: str | None = None,
        lo: Any = None,
        hi: Any = None,
        limit: int | None = None,
    ) -> pa.Table:
        """Rows matching ``where`` with ``lo <= column < hi`` (either bound optional), ordered
        by ``column`` then the key (or by the key), at most ``limit``; in ``dataset``'s schema.
        Exact: never shows two versions of one key. An absent table reads as empty."""

    @abc.abstractmethod
    def describe(self, table: str) -> Dataset | None:
        """The dataset stored under ``table`` as this store knows it (schema, key, version,
        time), or None when there is no such table. Tables written by others are described
        from the engine's catalogue (primary key, sorting key)."""

    @abc.abstractmethod
    def stats(self, tables: Collection[str] | None = None) -> list[DatasetStats]:
        """Every table of this store (or those of ``tables`` it has) with rows and newest
        time, ordered by name."""

    def check(self, table: str | None = None, *, write: bool = False) -> None:
        """Raise StoreError naming what is missing (reachability, a table, a privilege) and
        the fix, before a job starts copying. A table to read must exist; a table to write
        may not exist yet (it is created on first write). The default checks reachability
        and existence; stores with privileges check those too."""
        if table is None:
            self.stats()
        elif self.describe(table) is None and not write:
            raise StoreError(f"store {self.name}: no table {table!r} to read "
                             "(check the table name, or that something has written it)")

    def flushed(self, datasets: Sequence[Dataset]) -> None:  # noqa: B027 - optional hook
        """A buffer flush has written its batches of ``datasets`` here: a store that compacts
        after writes (ClickHouse's ``optimize_after_flush``) does it now."""

    # ---- candles

    def upsert_candles(self, batch: pa.Table) -> int:
        return self.upsert(CANDLES, batch)

    @abc.abstractmethod
    def spans(
        self, source: str | None = None, series: SeriesKey | None = None
    ) -> list[SeriesSpan]:
        """First, last and count per stored series (all, one source's, or one)."""

    def span(self, series: SeriesKey) -> SeriesSpan | None:
        found = self.spans(series=series)
        return found[0] if found else None

    def latest(self, series: SeriesKey) -> int | None:
        s = self.span(series)
        return s.last_ms if s else None

    @abc.abstractmethod
    def find_gaps(
        self,
        series: SeriesKey | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> pa.Table:
        """Missing ranges (GAP_SCHEMA, inclusive candle open times) inside each series' stored
        span, optionally clipped to ``[start_ms, end_ms)``. Runs in the database."""

    def read_candles(
        self, series: SeriesKey, start_ms: int | None = None, end_ms: int | None = None
    ) -> pa.Table:
        """Candles of one series in ``[start_ms, end_ms)``, ordered by ts (CANDLE_SCHEMA)."""
        table = self.read(CANDLES, where=series._asdict(), column="ts", lo=start_ms, hi=end_ms)
        return table.select(CANDLE_SCHEMA.names).cast(CANDLE_SCHEMA)

    @contextmanager
    def session(self) -> Iterator[None]:
        """Several calls made as one visit: a store that opens its database per call (DuckDB)
        keeps it open for the block and releases it at the end, so a job reading a few
        datasets pays the open once. The default does nothing (the other stores keep a
        connection pool)."""
        yield

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
