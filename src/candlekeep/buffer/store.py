"""A write-ahead buffer in front of database stores (``type: buffer``).

A job's write lands as one durable Parquet file and returns: the job never waits on a slow
or unreachable database, and what it was told is stored survives a crash. The ``flush`` job
(buffer/flush.py) then upserts the files into every target. Reads go to the first target,
so a job that asks what is stored (ingest's latest candle) sees what has been flushed.

Targets are opened on first use, not with the buffer: a target that is down must not stop
jobs from writing to the buffer.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from candlekeep.buffer.files import BufferFolder
from candlekeep.config.store_types import BufferStoreConfig
from candlekeep.core.datasets import Dataset
from candlekeep.core.series import SeriesKey
from candlekeep.stores.base import DatasetStats, Filter, SeriesSpan, Store
from candlekeep.stores.prepare import prepare

if TYPE_CHECKING:
    from candlekeep.state.db import StateDB
    from candlekeep.stores.registry import StoreEnv


class BufferStore(Store):
    def __init__(self, name: str, path: str | Path, targets: list[str],
                 env: StoreEnv) -> None:
        self.name = name
        self.folder = BufferFolder(name, Path(path))
        self.target_names = list(targets)
        self._env = env

    @classmethod
    def from_config(cls, name: str, cfg: BufferStoreConfig, env: StoreEnv) -> BufferStore:
        return cls(name, cfg.path, cfg.targets, env)

    def __repr__(self) -> str:
        return (f"BufferStore(name={self.name!r}, path={str(self.folder.path)!r}, "
                f"targets={self.target_names!r})")

    def target(self, name: str) -> Store:
        return self._env.store(name)

    @property
    def ack_key(self) -> str:
        """Whose acknowledgements in the state DB are this folder's: the store name and the
        folder's identity, since other hosts may share the state DB and the name."""
        return f"{self.name}@{self.folder.identity()}"

    @property
    def state(self) -> StateDB:
        return self._env.state

    def now_ms(self) -> int:
        return self._env.clock.now_ms()

    @property
    def _reads(self) -> Store:
        return self.target(self.target_names[0])

    # ---- writes: one durable file per batch

    def upsert(self, dataset: Dataset, batch: pa.Table) -> int:
        """Validated and de-duplicated here, so that a bad batch fails its job now rather
        than a flush later; returns once the file is durable."""
        if batch.num_rows == 0:
            dataset.conform(batch)  # a wrong column is an error even in an empty batch
            return 0
        table = prepare(dataset, batch)
        self.folder.write(dataset, table)
        return int(table.num_rows)

    def check(self, table: str | None = None, *, write: bool = False) -> None:
        if write:
            self.folder.check_writable()
        else:
            self._reads.check(table)

    # ---- reads: the first target

    def read(self, dataset: Dataset, *, where: Filter | None = None, column: str | None = None,
             lo: Any = None, hi: Any = None, limit: int | None = None) -> pa.Table:
        return self._reads.read(dataset, where=where, column=column, lo=lo, hi=hi, limit=limit)

    def describe(self, table: str) -> Dataset | None:
        return self._reads.describe(table)

    def stats(self, tables: Collection[str] | None = None) -> list[DatasetStats]:
        return self._reads.stats(tables)

    def spans(self, source: str | None = None,
              series: SeriesKey | None = None) -> list[SeriesSpan]:
        return self._reads.spans(source, series)

    def find_gaps(self, series: SeriesKey | None = None, start_ms: int | None = None,
                  end_ms: int | None = None) -> pa.Table:
        return self._reads.find_gaps(series, start_ms, end_ms)

    def read_candles(self, series: SeriesKey, start_ms: int | None = None,
                     end_ms: int | None = None) -> pa.Table:
        return self._reads.read_candles(series, start_ms, end_ms)

    def close(self) -> None:
        """Targets are the runtime's stores, closed by it; only the name lock is ours."""
        self.folder.close()
