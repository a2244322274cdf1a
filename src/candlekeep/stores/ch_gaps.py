"""Candle spans and gaps in ClickHouse, exact before merges and without FINAL.

A table that has not merged yet may hold a candle twice (once per part), so anything that
counts rows must count each open time once. Both queries here reduce a series to the *set* of
its grid indices, where a duplicate changes nothing:

- spans: ``groupBitmap`` of the grid index per series (a roaring bitmap: its cardinality is the
  distinct count), aggregated in sorting-key order, which is also what makes it cheap.
- gaps: per series and bucket of 256 grid steps, ``groupBitOr`` of ``1 << (index % 256)``
  into a UInt256: the bucket's exact occupancy. Missing steps inside a bucket and between
  consecutive buckets are read off these bitmaps with numpy, one row per bucket (1/256 of the
  candles), so candles never leave the database.

Grouping by three LowCardinality strings is what makes a plain ``GROUP BY source, symbol,
timeframe`` slow, so the gap scan first lists the series (an in-order aggregation, nearly
free) and groups by one integer per series, computed with ``transform`` on the dictionaries.
Grid indices assume open times after 1970-01-05 (the first Monday: the weekly grid's origin).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from candlekeep.core.schema import GAP_SCHEMA, TS_TYPE
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from candlekeep.stores.ch_sql import lit, ms_lit

Run = Callable[[str], pa.Table]
"""Runs one query and returns its Arrow result."""

_BITS = 256
# The series columns lead the sorting key: grouped in that order, rows stream through the
# aggregation instead of hashing three strings (listing 10M candles' series: 20 ms, not 500).
IN_ORDER = " SETTINGS optimize_aggregation_in_order = 1"
# Series lists longer than this many bytes of symbol literals are scanned in several queries:
# ClickHouse parses at most max_query_size (256 KiB by default) of a query, and a scan names
# each symbol up to four times (the numbering in three branches, an IN filter).
_MAX_LITERALS = 40_000
_GRIDS = [parse_timeframe(name) for name in TIMEFRAMES]


def _array(values: Sequence[object]) -> str:
    return "[" + ", ".join(lit(v) for v in values) + "]"


def grid_index_sql(ts: str, type_name: str) -> str:
    """A candle's index on its timeframe's grid; an unknown timeframe counts milliseconds."""
    names = _array([g.name for g in _GRIDS])
    steps = _array([g.ms for g in _GRIDS])
    offsets = _array([g.offset_ms for g in _GRIDS])
    return (f"to{type_name}(intDiv(toUnixTimestamp64Milli({ts}) - transform(timeframe, {names}, "
            f"{offsets}, 0), transform(timeframe, {names}, {steps}, 1)))")


def series_filter(series: SeriesKey | None, source: str | None = None) -> list[str]:
    parts = []
    if series is not None:
        parts += [f"source = {lit(series.source)}", f"symbol = {lit(series.symbol)}",
                  f"timeframe = {lit(series.timeframe)}"]
    if source is not None:
        parts.append(f"source = {lit(source)}")
    return parts


def where(parts: Sequence[str]) -> str:
    return " WHERE " + " AND ".join(parts) if parts else ""


def spans_sql(table: str, series: SeriesKey | None, source: str | None) -> str:
    return (
        "SELECT source, symbol, timeframe, toUnixTimestamp64Milli(min(ts)) AS first, "
        f"toUnixTimestamp64Milli(max(ts)) AS last, groupBitmap({grid_index_sql('ts', 'UInt64')}) "
        f"AS count FROM {table}{where(series_filter(series, source))} "
        f"GROUP BY source, symbol, timeframe ORDER BY source, symbol, timeframe{IN_ORDER}"
    )


# --------------------------------------------------------------------------- gaps


def find_gaps(
    run: Run, table: str, series: SeriesKey | None, start_ms: int | None, end_ms: int | None
) -> pa.Table:
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        return GAP_SCHEMA.empty_table()
    chunks = _chunks(_series(run, table, series))
    found = [_scan(run, table, chunk, len(chunks) > 1, start_ms, end_ms) for chunk in chunks]
    return _gap_table(found, start_ms, end_ms)


def _series(run: Run, table: str, series: SeriesKey | None) -> list[SeriesKey]:
    """The stored series on a known grid (off-grid data cannot get in through the store)."""
    rows = run(f"SELECT source, symbol, timeframe FROM {table}{where(series_filter(series))} "
               f"GROUP BY source, symbol, timeframe{IN_ORDER}").to_pydict()
    return sorted(SeriesKey(*r) for r in zip(rows["source"], rows["symbol"], rows["timeframe"],
                                              strict=True) if r[2] in TIMEFRAMES)


def _chunks(listed: list[SeriesKey]) -> list[list[SeriesKey]]:
    chunks: list[list[SeriesKey]] = [[]]
    size = 0
    for key in listed:  # sorted: one symbol's series stay together
        size += len(key.symbol) + 4
        if size > _MAX_LITERALS and chunks[-1] and chunks[-1][-1].symbol != key.symbol:
            chunks.append([])
            size = len(key.symbol) + 4
        chunks[-1].append(key)
    return chunks if listed else []


@dataclass(frozen=True, slots=True)
class _Numbering:
    """One integer per series: each of source, symbol and timeframe numbered by its position
    in the listing, combined in mixed radix. A value missing from the listing (a series
    written after it) gets the number one past the end, so its rows fall outside every
    listed series instead of onto one."""

    series: list[SeriesKey]
    sources: list[str]
    symbols: list[str]
    timeframes: list[str]

    @classmethod
    def of(cls, series: list[SeriesKey]) -> _Numbering:
        return cls(series, sorted({s.source for s in series}), sorted({s.symbol for s in series}),
                   sorted({s.timeframe for s in series}))

    def _number(self, source: int, symbol: int, tf: int) -> int:
        return (source * (len(self.symbols) + 1) + symbol) * (len(self.timeframes) + 1) + tf

    def codes(self) -> np.ndarray:
        src = {v: i for i, v in enumerate(self.sources)}
        sym = {v: i for i, v in enumerate(self.symbols)}
        tfs = {v: i for i, v in enumerate(self.timeframes)}
        return np.array([self._number(src[s.source], sym[s.symbol], tfs[s.timeframe])
                         for s in self.series], np.int64)

    def sql(self) -> str:
        def pos(column: str, values: list[str]) -> str:
            return (f"transform({column}, {_array(values)}, range({len(values)}), "
                    f"{len(values)})")
        return (f"toUInt32((({pos('source', self.sources)}) * {len(self.symbols) + 1} + "
                f"{pos('symbol', self.symbols)}) * {len(self.timeframes) + 1} + "
                f"{pos('timeframe', self.timeframes)})")


def _scan(
    run: Run,
    table: str,
    series: list[SeriesKey],
    filter_symbols: bool,
    start_ms: int | None,
    end_ms: int | None,
) -> tuple[_Numbering, pa.Table]:
    """Bucket bitmaps of ``series`` inside the window, plus the nearest stored candle on each
    side of it (so a gap crossing the window's edge is found, then clipped)."""
    numbering = _Numbering.of(series)
    filters = [f"timeframe IN ({', '.join(lit(t) for t in numbering.timeframes)})"]
    if len(numbering.sources) == 1:
        filters.append(f"source = {lit(numbering.sources[0])}")
    if len(series) == 1 or filter_symbols:
        filters.append(f"symbol IN ({', '.join(lit(s) for s in numbering.symbols)})")
    key, index = numbering.sql(), grid_index_sql
    window = []
    if start_ms is not None:
        window.append(f"ts >= {ms_lit(start_ms)}")
    if end_ms is not None:
        window.append(f"ts < {ms_lit(end_ms)}")
    branches = [f"SELECT {key} AS k, {index('ts', 'UInt32')} AS i FROM {table}"
                f"{where(filters + window)}"]
    for agg, outside, bound in (("max", "<", start_ms), ("min", ">=", end_ms)):
        if bound is not None:
            branches.append(
                f"SELECT {key} AS k, {index(f'{agg}(ts)', 'UInt32')} AS i FROM {table}"
                f"{where([*filters, f'ts {outside} {ms_lit(bound)}'])} "
                "GROUP BY source, symbol, timeframe")
    sql = (f"SELECT k, intDiv(i, {_BITS}) AS b, groupBitOr(bitShiftLeft(toUInt256(1), "
           f"i % {_BITS})) AS m FROM ({' UNION ALL '.join(branches)}) GROUP BY k, b "
           f"ORDER BY k, b{IN_ORDER}")
    return numbering, run(sql)


@dataclass(frozen=True, slots=True)
class _Runs:
    """Missing grid indices as runs [g0, g1] of series positions ``at``."""

    at: np.ndarray
    g0: np.ndarray
    g1: np.ndarray


def _decode(numbering: _Numbering, found: pa.Table) -> _Runs:
    """Runs of missing steps inside each bucket and between consecutive buckets of a series."""
    if found.num_rows == 0:
        none = np.zeros(0, np.int64)
        return _Runs(none, none, none)
    codes = numbering.codes()
    order = np.argsort(codes)
    k = found.column("k").to_numpy().astype(np.int64)
    pos = np.minimum(np.searchsorted(codes[order], k), len(codes) - 1)
    listed = codes[order][pos] == k
    at = order[pos][listed]
    base = found.column("b").to_numpy().astype(np.int64)[listed] * _BITS
    m = found.column("m").combine_chunks()
    bits = np.frombuffer(m.buffers()[1], np.uint8)[m.offset * 32:(m.offset + len(m)) * 32]
    bits = bits.reshape(len(m), 32)[listed]

    lo = np.zeros(len(at), np.int64)
    hi = np.full(len(at), _BITS - 1, np.int64)
    rows = np.flatnonzero(~(bits == 0xFF).all(axis=1))
    inner = _Runs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    if rows.size:
        present = np.unpackbits(bits[rows], axis=1, bitorder="little").astype(bool)
        lo[rows] = present.argmax(axis=1)
        hi[rows] = _BITS - 1 - present[:, ::-1].argmax(axis=1)
        # a missing step right after a present one starts a run, one right before ends it;
        # runs before the bucket's first or after its last present step are not inside it
        sr, sc = np.nonzero(present[:, :-1] & ~present[:, 1:])
        er, ec = np.nonzero(~present[:, :-1] & present[:, 1:])
        sc = sc + 1
        keep_s = sc < hi[rows][sr]
        keep_e = ec > lo[rows][er]
        sr, sc, er, ec = sr[keep_s], sc[keep_s], er[keep_e], ec[keep_e]
        inner = _Runs(at[rows][sr], base[rows][sr] + sc, base[rows][er] + ec)
    first, last = base + lo, base + hi
    between = np.flatnonzero((at[1:] == at[:-1]) & (first[1:] > last[:-1] + 1))
    return _Runs(np.concatenate([inner.at, at[between + 1]]),
                 np.concatenate([inner.g0, last[between] + 1]),
                 np.concatenate([inner.g1, first[between + 1] - 1]))


def _gap_table(
    found: list[tuple[_Numbering, pa.Table]], start_ms: int | None, end_ms: int | None
) -> pa.Table:
    """Grid indices to open times, clipped to the window, ordered, as GAP_SCHEMA."""
    tables = []
    for numbering, result in found:
        runs = _decode(numbering, result)
        if not runs.at.size:
            continue
        grids = [parse_timeframe(s.timeframe) for s in numbering.series]
        step = np.array([g.ms for g in grids], np.int64)[runs.at]
        off = np.array([g.offset_ms for g in grids], np.int64)[runs.at]
        lo_clip, hi_clip = _clips(grids, start_ms, end_ms)
        g0 = np.maximum(runs.g0 * step + off, lo_clip[runs.at])
        g1 = np.minimum(runs.g1 * step + off, hi_clip[runs.at])
        keep = g0 <= g1
        at = pa.array(runs.at[keep])
        tables.append(pa.table({
            "source": pa.array([s.source for s in numbering.series]).take(at),
            "symbol": pa.array([s.symbol for s in numbering.series]).take(at),
            "timeframe": pa.array([s.timeframe for s in numbering.series]).take(at),
            "gap_start": pa.array(g0[keep]).cast(TS_TYPE),
            "gap_end": pa.array(g1[keep]).cast(TS_TYPE),
        }))
    if not tables:
        return GAP_SCHEMA.empty_table()
    order = [(name, "ascending") for name in ("source", "symbol", "timeframe", "gap_start")]
    return pa.concat_tables(tables).sort_by(order).cast(GAP_SCHEMA)


def _clips(
    grids: list[Timeframe], start_ms: int | None, end_ms: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per series, the first and last open time on its grid inside [start_ms, end_ms)."""
    none = np.iinfo(np.int64)
    lo = [none.min if start_ms is None else g.ceil(start_ms) for g in grids]
    hi = [none.max if end_ms is None else g.ceil(end_ms) - g.ms for g in grids]
    return np.array(lo, np.int64), np.array(hi, np.int64)

