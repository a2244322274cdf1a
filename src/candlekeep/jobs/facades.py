"""What jobs reach the state DB, stores and sources through: awaitables that do their
blocking work in a thread.

Jobs run on the daemon's event loop, the same loop that dispatches a thousand ticks a
second; a state-DB call or a DuckDB scan made there would stall every other job and the
scheduler with it. Opening a source or a store the first time (importing CCXT, opening a
file) blocks as well, so that happens in a thread too.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from candlekeep.core.datasets import Dataset
    from candlekeep.core.series import SeriesKey
    from candlekeep.jobs.runtime import Runtime
    from candlekeep.sources.base import Source
    from candlekeep.state.db import StateDB
    from candlekeep.state.ops_state import SeriesMark
    from candlekeep.state.rows import GapRow
    from candlekeep.stores.base import DatasetStats, SeriesSpan, Store


class AsyncState:
    """The state-DB calls jobs make (checkpoints and gaps), off the loop."""

    def __init__(self, state: StateDB) -> None:
        self.sync = state

    async def get_checkpoint(self, job: str, series: SeriesKey) -> int | None:
        return await asyncio.to_thread(self.sync.get_checkpoint, job, series)

    async def set_checkpoint(self, job: str, series: SeriesKey, position: int,
                             now_ms: int) -> None:
        await asyncio.to_thread(self.sync.set_checkpoint, job, series, position, now_ms)

    async def clear_checkpoints(self, job: str,
                                series: Iterable[SeriesKey] | None = None) -> None:
        await asyncio.to_thread(self.sync.clear_checkpoints, job,
                                None if series is None else list(series))

    async def list_gaps(self, status: str | Sequence[str] | None = None,
                        series: SeriesKey | None = None,
                        limit: int | None = None) -> list[GapRow]:
        return await asyncio.to_thread(self.sync.list_gaps, status, series, limit)

    async def update_gaps(self, updates: Sequence[tuple[int, dict[str, Any]]]) -> None:
        await asyncio.to_thread(self.sync.update_gaps, updates)


class AsyncStore:
    """One store's calls, off the loop. Every candle upsert also records each written
    series' range in the state DB (``series_state``), which the API and freshness read
    instead of scanning candle tables."""

    def __init__(self, store: Store, state: StateDB, now_ms: Callable[[], int]) -> None:
        self.sync = store
        self.name = store.name
        self.state = state
        self.now_ms = now_ms

    async def upsert_candles(self, batch: pa.Table) -> int:
        return await asyncio.to_thread(self._upsert_candles, batch)

    def _upsert_candles(self, batch: pa.Table) -> int:
        rows = self.sync.upsert_candles(batch)
        if batch.num_rows:
            from candlekeep.state.ops_state import note_written

            note_written(self.state.engine, self.name, series_marks(batch), self.now_ms())
        return rows

    async def upsert(self, dataset: Dataset, batch: pa.Table) -> int:
        return await asyncio.to_thread(self.sync.upsert, dataset, batch)

    async def read(self, dataset: Dataset, **query: Any) -> pa.Table:
        """``Store.read``'s keyword arguments: where, column, lo, hi, limit."""
        return await asyncio.to_thread(functools.partial(self.sync.read, dataset, **query))

    async def stats(self) -> list[DatasetStats]:
        return await asyncio.to_thread(self.sync.stats)

    async def spans(self, source: str | None = None,
                    series: SeriesKey | None = None) -> list[SeriesSpan]:
        return await asyncio.to_thread(self.sync.spans, source, series)

    async def find_gaps(self, series: SeriesKey | None = None, start_ms: int | None = None,
                        end_ms: int | None = None) -> pa.Table:
        return await asyncio.to_thread(self.sync.find_gaps, series, start_ms, end_ms)

    async def read_candles(self, series: SeriesKey, start_ms: int | None = None,
                           end_ms: int | None = None) -> pa.Table:
        return await asyncio.to_thread(self.sync.read_candles, series, start_ms, end_ms)


async def open_store(runtime: Runtime, name: str) -> AsyncStore:
    store = await asyncio.to_thread(runtime.store, name)
    state = await asyncio.to_thread(lambda: runtime.state)
    return AsyncStore(store, state, runtime.clock.now_ms)


def series_marks(batch: pa.Table) -> list[SeriesMark]:
    """Per series in a candle batch: first and last open time, and rows."""
    import pyarrow.compute as pc

    from candlekeep.core.series import SeriesKey
    from candlekeep.state.ops_state import SeriesMark

    ts = pc.cast(batch.column("ts"), "int64")
    keyed = batch.select(["source", "symbol", "timeframe"]).append_column("t", ts)
    agg = keyed.group_by(["source", "symbol", "timeframe"], use_threads=False).aggregate(
        [("t", "min"), ("t", "max"), ("t", "count")]).to_pydict()
    return [SeriesMark(SeriesKey(src, sym, tf), lo, hi, n) for src, sym, tf, lo, hi, n in zip(
        agg["source"], agg["symbol"], agg["timeframe"], agg["t_min"], agg["t_max"],
        agg["t_count"], strict=True)]


async def open_source(runtime: Runtime, name: str) -> Source:
    return await asyncio.to_thread(runtime.source, name)
