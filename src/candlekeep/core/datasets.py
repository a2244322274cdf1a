"""Datasets: what a store holds, described as data.

A dataset is a name (its table), an Arrow schema, a natural key and optionally a version
column and a time column. Stores create a dataset's table on first write and upsert by key,
so candles, account snapshots, fills, availability and scan outputs all go through one write
path, one buffer and one sync job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

from candlekeep.core.errors import StoreError
from candlekeep.core.schema import CANDLE_KEY, CANDLE_SCHEMA

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class Dataset:
    """An empty ``key`` only describes a foreign table that has none; it cannot be written.
    ``version`` orders two writes of one key where the store cannot (ClickHouse keeps the
    row with the highest version); ``time`` is the column that says how new a row is: the
    newest-timestamp listing, monthly partitions and the sync cursor use it."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    version: str | None = None
    time: str | None = None

    def __post_init__(self) -> None:
        names = set(self.schema.names)
        if not _NAME.match(self.name):
            raise ValueError(f"dataset name {self.name!r}: use lower-case letters, digits, _")
        for col in self.schema.names:
            if not _NAME.match(col):
                raise ValueError(f"dataset {self.name}: column {col!r}: use [a-z0-9_]")
        missing = [c for c in (*self.key, self.version, self.time) if c and c not in names]
        if missing:
            raise ValueError(f"dataset {self.name}: key/version/time {missing} not in schema")
        nullable = [c for c in self.key if self.schema.field(c).nullable]
        if nullable:
            raise ValueError(f"dataset {self.name}: key columns {nullable} must be non-null")

    @property
    def value_columns(self) -> list[str]:
        return [n for n in self.schema.names if n not in self.key]

    def conform(self, batch: pa.Table) -> pa.Table:
        """``batch`` as this dataset's types, in schema order, keeping only the columns it
        carries (a partial batch updates those and leaves the others as stored).

        Raises StoreError for an unknown column or a missing key column."""
        if not self.key:
            raise StoreError(f"table {self.name} has no key (primary or sorting key), so "
                             "writes cannot be idempotent; give it one")
        unknown = [c for c in batch.column_names if c not in self.schema.names]
        if unknown:
            raise StoreError(f"dataset {self.name}: unknown column(s) {', '.join(unknown)}; "
                             f"its columns: {', '.join(self.schema.names)}")
        missing = [c for c in self.key if c not in batch.column_names]
        if missing:
            raise StoreError(f"dataset {self.name}: batch lacks key column(s) "
                             f"{', '.join(missing)}")
        present = [f for f in self.schema if f.name in batch.column_names]
        schema = pa.schema(present)
        if batch.schema.equals(schema):
            return batch
        try:
            return batch.select(schema.names).cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError, ValueError) as exc:
            raise StoreError(f"dataset {self.name}: batch does not fit its schema: {exc}") from None

    def is_partial(self, batch: pa.Table) -> bool:
        return bool(batch.num_columns < len(self.schema))


CANDLES = Dataset("candles", CANDLE_SCHEMA, CANDLE_KEY, version="ingested_at", time="ts")

_KNOWN: dict[str, Dataset] = {CANDLES.name: CANDLES}


def register(dataset: Dataset) -> Dataset:
    """Make a dataset known by name (modules that define datasets call this at import)."""
    have = _KNOWN.get(dataset.name)
    if have is not None and have != dataset:
        raise ValueError(f"dataset {dataset.name!r} is already registered with another shape")
    _KNOWN[dataset.name] = dataset
    return dataset


def known(name: str) -> Dataset | None:
    return _KNOWN.get(name)

