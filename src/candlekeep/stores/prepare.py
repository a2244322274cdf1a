"""Batch preparation every store shares: de-duplication on the key (the last row wins),
the timeframe-grid check for candles, and each series' time range in a batch.

Backends differ in how they write; what a batch means does not, so they all take it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.core.datasets import CANDLES, Dataset
from candlekeep.core.errors import StoreError
from candlekeep.core.schema import conform
from candlekeep.core.timeframes import Timeframe, parse_timeframe

SERIES_COLUMNS: tuple[str, ...] = ("source", "symbol", "timeframe")

# Batches with more runs of rows than this (and short runs) go straight to the hashing de-dup.
_MAX_RUNS_CHECKED = 10_000


def prepare(dataset: Dataset, batch: pa.Table) -> pa.Table:
    """``batch`` conformed to ``dataset`` and without duplicate keys (the last row wins);
    candles are also checked against their timeframe grid."""
    if dataset == CANDLES and not dataset.is_partial(batch):
        return prepare_candles(batch).table
    table = dataset.conform(batch).combine_chunks()
    if dataset.name == CANDLES.name:  # a partial candle batch: it still carries the key
        table, runs = _dedup_keep_last(table)
        _check_grid(table, runs)
        return table
    return dedup_keep_last(table, dataset.key)


def dedup_keep_last(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Rows of ``table`` with unique ``key``, the last of each key kept, in table order."""
    if table.num_rows < 2:
        return table
    idx = pa.array(np.arange(table.num_rows, dtype=np.int64))
    keyed = table.select(list(key)).append_column("__ck_row", idx)
    last = keyed.group_by(list(key), use_threads=False).aggregate([("__ck_row", "max")])
    if last.num_rows == table.num_rows:
        return table
    keep = pc.sort_indices(last.column("__ck_row_max"))
    return table.take(last.column("__ck_row_max").take(keep))



@dataclass(frozen=True, slots=True)
class PreparedCandles:
    """A batch ready to write: unique keys, on-grid, and each series' ts range."""

    table: pa.Table
    ranges: pa.Table  # source, symbol, timeframe, lo, hi (timestamps)


def prepare_candles(batch: pa.Table) -> PreparedCandles:
    CANDLES.conform(batch.slice(0, 0))  # names an unknown or missing key column
    table = conform(batch).combine_chunks()
    runs = _clean_runs(table)
    if runs is None:
        table, runs = _dedup_keep_last(table)
    _check_grid(table, runs)
    return PreparedCandles(table, _ranges(table, runs))


@dataclass(frozen=True, slots=True)
class _Runs:
    """Runs of rows, each one series in ascending ts, taken in ``order`` (None: table order)
    at positions [starts[i], ends[i]]."""

    starts: np.ndarray
    ends: np.ndarray
    order: np.ndarray | None = None

    def rows(self, positions: np.ndarray) -> np.ndarray:
        return positions if self.order is None else self.order[positions]


def _clean_runs(table: pa.Table) -> _Runs | None:
    """The batch's series runs if it cannot hold a duplicate key, else None.

    A source hands over one series, ascending, and a buffer flush concatenates such pieces:
    if ts strictly increases inside every run of one series, and runs of the same series do
    not overlap in time, keys are unique. Proving that is a few vectorised comparisons and a
    look at the (few) runs, instead of hashing every key.
    """
    n = table.num_rows
    if n == 0:
        return _Runs(np.zeros(0, np.int64), np.zeros(0, np.int64))
    same = _same_series_as_previous(table)
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    if bool(np.any(same & (ts[1:] <= ts[:-1]))):
        return None
    starts = np.concatenate(([0], np.flatnonzero(~same) + 1)).astype(np.int64)
    ends = np.concatenate((starts[1:] - 1, [n - 1])).astype(np.int64)
    if len(starts) > _MAX_RUNS_CHECKED and len(starts) * 8 > n:
        return None  # rows interleave series: hashing every key is the cheaper proof
    runs = _Runs(starts, ends)
    return runs if _runs_disjoint(table, runs, ts) else None


def _runs_disjoint(table: pa.Table, runs: _Runs, ts: np.ndarray) -> bool:
    """Whether no two runs of one series overlap in time."""
    heads = table.select(list(SERIES_COLUMNS)).take(pa.array(runs.starts))
    if heads.group_by(list(SERIES_COLUMNS)).aggregate([]).num_rows == len(runs.starts):
        return True  # each series in one run
    codes = _series_codes(heads)
    first, last = ts[runs.starts], ts[runs.ends]
    order = np.lexsort((first, codes))
    same = codes[order][1:] == codes[order][:-1]
    return not bool(np.any(same & (first[order][1:] <= last[order][:-1])))


def _same_series_as_previous(table: pa.Table) -> np.ndarray:
    same: pa.Array | None = None
    for name in SERIES_COLUMNS:
        col = table.column(name)
        eq = pc.equal(col[1:], col[:-1])
        same = eq if same is None else pc.and_(same, eq)
    assert same is not None
    return np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)


def _series_codes(table: pa.Table) -> np.ndarray:
    """One int64 per row identifying its series (dense codes, not comparable across tables)."""
    codes = np.zeros(table.num_rows, np.int64)
    for name in SERIES_COLUMNS:
        enc = pc.dictionary_encode(table.column(name)).combine_chunks()
        size = len(enc.dictionary)
        if codes.size and int(codes.max()) >= (1 << 62) // max(size, 1):
            codes = np.unique(codes, return_inverse=True)[1].astype(np.int64)  # re-densify
        codes = codes * size + enc.indices.to_numpy().astype(np.int64)
    return codes


def _dedup_keep_last(table: pa.Table) -> tuple[pa.Table, _Runs]:
    """The batch without duplicate keys (the last row of each key wins), and its runs.

    A stable sort on (series, ts) keeps equal keys in arrival order, so the last of each
    group is the latest write. Without duplicates the rows stay as they came and only the
    sort order describes the runs; with them, the kept rows are taken series by series.
    """
    codes = _series_codes(table)
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    order = np.lexsort((ts, codes))
    c_sorted, t_sorted = codes[order], ts[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (c_sorted[1:] != c_sorted[:-1]) | (t_sorted[1:] != t_sorted[:-1])
    if bool(last.all()):
        return table, _runs_of(c_sorted, order)
    keep = order[last]
    return table.take(pa.array(keep)), _runs_of(c_sorted[last], None)


def _runs_of(sorted_codes: np.ndarray, order: np.ndarray | None) -> _Runs:
    starts = np.flatnonzero(np.concatenate(([True], sorted_codes[1:] != sorted_codes[:-1])))
    ends = np.concatenate((starts[1:] - 1, [len(sorted_codes) - 1]))
    return _Runs(starts.astype(np.int64), ends.astype(np.int64), order)


def _check_grid(table: pa.Table, runs: _Runs) -> None:
    """Reject unknown timeframes and off-grid open times: the gap finder's arithmetic relies
    on every stored ts sitting on its timeframe's grid."""
    if table.num_rows == 0:
        return
    tf_names = table.column("timeframe").take(pa.array(runs.rows(runs.starts))).to_pylist()
    grids: list[Timeframe] = []
    for name in tf_names:
        try:
            grids.append(parse_timeframe(name))
        except ValueError as exc:
            raise StoreError(f"cannot store candles: {exc}") from None
    lengths = runs.ends - runs.starts + 1
    steps = np.repeat(np.array([g.ms for g in grids], np.int64), lengths)
    offsets = np.repeat(np.array([g.offset_ms for g in grids], np.int64), lengths)
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    if runs.order is not None:
        ts = ts[runs.order]
    bad = np.flatnonzero((ts - offsets) % steps)
    if len(bad):
        row = table.slice(int(runs.rows(bad[:1])[0]), 1).to_pylist()[0]
        raise StoreError(
            f"cannot store candles: {len(bad)} open time(s) off the {row['timeframe']} grid, "
            f"first {row['source']}:{row['symbol']} ts={row['ts']}"
        )


def _ranges(table: pa.Table, runs: _Runs) -> pa.Table:
    heads = table.select(list(SERIES_COLUMNS)).take(pa.array(runs.rows(runs.starts)))
    ts = table.column("ts")
    return heads.append_column("lo", ts.take(pa.array(runs.rows(runs.starts)))).append_column(
        "hi", ts.take(pa.array(runs.rows(runs.ends)))
    )
