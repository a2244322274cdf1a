"""Missing candles, found inside PostgreSQL.

A ``lag()`` window over the primary key's order is the obvious query, but PostgreSQL's window
machinery costs about 0.8 µs a row (3.5-5x a ``GROUP BY`` count of the same table), and so
does the DuckDB store's five-aggregate bucket solver here (each aggregate is a transition call
per row). This solver asks for two: one aggregation, which PostgreSQL runs in parallel workers
like the count, gives per series and bucket of 256 grid steps the number ``n`` of stored
candles and the sum of their in-bucket indices. A bucket then misses ``m = 256 - n`` steps
whose indices sum to ``M1 = 32640 - sum``; if they form one run it starts at
``x = (M1 - m(m-1)/2) / m``. One missing step is exact; a longer run is confirmed by one index
probe that finds no stored candle in it (m missing steps, all inside an m-step run: the run is
all of them). Buckets where that fails (several holes, or a bucket at the edge of a series
or of the window) are re-read through the primary key, at most 256 rows each, with
``lag()``. Buckets with no candle at all come from a window over the (few) bucket rows, with
a full bucket placed on each side of every series' clip range.

The pieces (runs of grid indices) are merged where they touch, clipped to each series' stored
span and the window, and turned into open times here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import pyarrow as pa

from candlekeep.core.schema import GAP_SCHEMA
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from candlekeep.core.timeutil import ms_to_datetime
from candlekeep.stores.pg_catalog import epoch_ms

_BITS = 8
_SIZE = 1 << _BITS
_INDEX_SUM = _SIZE * (_SIZE - 1) // 2  # 0 + 1 + ... + 255

_SPANS = """
SELECT s.source, s.symbol, s.timeframe, {first}, {last}
FROM unnest(%s::text[], %s::text[], %s::text[]) AS s(source, symbol, timeframe)
CROSS JOIN LATERAL (SELECT min(t.ts) AS lo, max(t.ts) AS hi FROM {table} t
    WHERE t.source = s.source AND t.symbol = s.symbol AND t.timeframe = s.timeframe) m
WHERE m.lo IS NOT NULL
"""

_SQL = """
WITH b AS (
    SELECT source, symbol, timeframe, k, count(*) AS n, sum(r) AS s1 FROM (
        SELECT source, symbol, timeframe, i >> {bits} AS k, (i & {mask})::int4 AS r FROM (
            SELECT source, symbol, timeframe, {index} AS i FROM {table} WHERE {where}) y) x
    GROUP BY source, symbol, timeframe, k
),
fenced AS (
    SELECT source, symbol, timeframe, k FROM b
    UNION ALL
    SELECT v.source, v.symbol, v.timeframe, unnest(ARRAY[v.k_lo, v.k_hi])
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[])
        AS v(source, symbol, timeframe, k_lo, k_hi)
),
absent AS (
    SELECT source, symbol, timeframe, (prev + 1) * {size} AS g0, k * {size} - 1 AS g1 FROM (
        SELECT source, symbol, timeframe, k,
            lag(k) OVER (PARTITION BY source, symbol, timeframe ORDER BY k) AS prev
        FROM fenced) q
    WHERE k > prev + 1
),
runs AS (
    SELECT source, symbol, timeframe, k, m, whole,
        k * {size} + x AS g0, k * {size} + x + m - 1 AS g1
    FROM (SELECT *, mod(m1 - m * (m - 1) / 2, m) = 0 AS whole,
                 (m1 - m * (m - 1) / 2) / m AS x
          FROM (SELECT source, symbol, timeframe, k, {size} - n AS m, {index_sum} - s1 AS m1
                FROM b WHERE n < {size}) q) q
),
checked AS (
    SELECT runs.*, CASE WHEN whole AND g0 >= k * {size} AND g1 < (k + 1) * {size} THEN
        m = 1 OR NOT EXISTS (SELECT 1 FROM {table} t WHERE t.source = runs.source
            AND t.symbol = runs.symbol AND t.timeframe = runs.timeframe
            AND t.ts >= {ts_g0} AND t.ts <= {ts_g1})
        ELSE false END AS ok
    FROM runs
)
SELECT source, symbol, timeframe, g0, g1 FROM absent
UNION ALL
SELECT source, symbol, timeframe, g0, g1 FROM checked WHERE ok
UNION ALL
SELECT u.source, u.symbol, u.timeframe, z.prev + 1, z.i - 1
FROM checked u CROSS JOIN LATERAL (
    SELECT i, lag(i) OVER (ORDER BY i) AS prev FROM (
        SELECT {index_t} AS i FROM {table} t
        WHERE t.source = u.source AND t.symbol = u.symbol AND t.timeframe = u.timeframe
          AND t.ts >= {ts_k0} AND t.ts <= {ts_k1}
        UNION ALL SELECT u.k * {size} - 1
        UNION ALL SELECT (u.k + 1) * {size}) r) z
WHERE NOT u.ok AND z.i > z.prev + 1
"""


class _Grid:
    """Step and offset of the timeframes in play, as SQL: literals when there is one, a
    CASE on the timeframe column when there are several."""

    def __init__(self, timeframes: Sequence[Timeframe]) -> None:
        self.timeframes = list(timeframes)

    def _case(self, tf_col: str, attr: str, unit_ms: int = 1) -> str:
        values = [(tf.name, getattr(tf, attr) // unit_ms) for tf in self.timeframes]
        if len({v for _, v in values}) == 1:
            return str(values[0][1])
        whens = " ".join(f"WHEN '{name}' THEN {v}" for name, v in values)
        return f"(CASE {tf_col} {whens} END)"

    def index(self, ts: str, tf_col: str) -> str:
        """The grid index of a timestamptz expression. Grids are whole seconds, so the
        float8 epoch is exact and cheaper per row than EXTRACT's numeric."""
        return (f"((date_part('epoch', {ts})::bigint - "
                f"{self._case(tf_col, 'offset_ms', 1000)}) / {self._case(tf_col, 'ms', 1000)})")

    def ts_of(self, i: str, tf_col: str) -> str:
        """The open time of grid index ``i`` (exact: the product stays below 2**53)."""
        ms = f"(({i}) * {self._case(tf_col, 'ms')} + {self._case(tf_col, 'offset_ms')})"
        return f"('epoch'::timestamptz + {ms} * interval '1 millisecond')"


def find_gaps(conn: psycopg.Connection[Any], table: str, series: Sequence[SeriesKey],
              start_ms: int | None, end_ms: int | None, *, one: bool) -> pa.Table:
    """Gaps of ``series`` (all stored series, or the ``one`` asked for) in ``table``."""
    clips = _clips(conn, table, [s for s in series if s.timeframe in TIMEFRAMES],
                   start_ms, end_ms)
    if not clips:
        return GAP_SCHEMA.empty_table()
    grid = _Grid(sorted({tf for tf, _, _ in clips.values()}, key=lambda t: t.ms))
    params: list[Any] = []
    where: list[str] = []
    if one:
        where.append("source = %s AND symbol = %s AND timeframe = %s")
        params.extend(series[0])
    else:
        where.append("timeframe = ANY(%s)")
        params.append([tf.name for tf in grid.timeframes])
    for bound, op in ((start_ms, ">="), (end_ms, "<")):
        if bound is not None:
            where.append(f"ts {op} %s")
            params.append(ms_to_datetime(bound))
    keys = list(clips)
    params += [[k.source for k in keys], [k.symbol for k in keys], [k.timeframe for k in keys],
               [(clips[k][1] >> _BITS) - 1 for k in keys],
               [(clips[k][2] >> _BITS) + 1 for k in keys]]
    sql = _SQL.format(
        bits=_BITS, mask=_SIZE - 1, size=_SIZE, index_sum=_INDEX_SUM, table=table,
        where=" AND ".join(where), index=grid.index("ts", "timeframe"),
        index_t=grid.index("t.ts", "u.timeframe"),
        ts_g0=grid.ts_of("runs.g0", "runs.timeframe"),
        ts_g1=grid.ts_of("runs.g1", "runs.timeframe"),
        ts_k0=grid.ts_of(f"u.k * {_SIZE}", "u.timeframe"),
        ts_k1=grid.ts_of(f"(u.k + 1) * {_SIZE} - 1", "u.timeframe"))
    pieces = conn.execute(sql, params).fetchall()
    return _gap_table(pieces, clips)


Clip = tuple[Timeframe, int, int]
"""A series' timeframe and the first and last grid index where a gap may lie: its stored
span, cut to the window."""


def _clips(conn: psycopg.Connection[Any], table: str, series: Sequence[SeriesKey],
           start_ms: int | None, end_ms: int | None) -> dict[SeriesKey, Clip]:
    if not series:
        return {}
    sql = _SPANS.format(first=epoch_ms("m.lo"), last=epoch_ms("m.hi"), table=table)
    rows = conn.execute(sql, [[s.source for s in series], [s.symbol for s in series],
                              [s.timeframe for s in series]]).fetchall()
    out: dict[SeriesKey, Clip] = {}
    for source, symbol, tf_name, first, last in rows:
        tf = parse_timeframe(tf_name)
        if start_ms is not None:
            first = max(first, tf.ceil(start_ms))
        if end_ms is not None:
            last = min(last, tf.ceil(end_ms) - tf.ms)
        if first <= last:
            out[SeriesKey(source, symbol, tf_name)] = (
                tf, (first - tf.offset_ms) // tf.ms, (last - tf.offset_ms) // tf.ms)
    return out






def _gap_table(pieces: list[tuple[Any, ...]], clips: dict[SeriesKey, Clip]) -> pa.Table:
    """Pieces merged where they touch, clipped, as open times, ordered, as GAP_SCHEMA."""
    cols: dict[str, list[Any]] = {name: [] for name in GAP_SCHEMA.names}

    def emit(key: SeriesKey, g0: int, g1: int) -> None:
        tf, lo, hi = clips[key]
        g0, g1 = max(g0, lo), min(g1, hi)
        if g0 <= g1:
            for name, value in zip(GAP_SCHEMA.names, (*key, g0 * tf.ms + tf.offset_ms,
                                                     g1 * tf.ms + tf.offset_ms), strict=True):
                cols[name].append(value)

    current: tuple[SeriesKey, int, int] | None = None
    for source, symbol, tf_name, g0, g1 in sorted(pieces):
        key = SeriesKey(source, symbol, tf_name)
        if current is not None and current[0] == key and g0 <= current[2] + 1:
            current = (key, current[1], max(current[2], g1))
            continue
        if current is not None:
            emit(*current)
        current = (key, g0, g1)
    if current is not None:
        emit(*current)
    table = pa.table({
        "source": pa.array(cols["source"], pa.string()),
        "symbol": pa.array(cols["symbol"], pa.string()),
        "timeframe": pa.array(cols["timeframe"], pa.string()),
        "gap_start": pa.array(cols["gap_start"], pa.int64()),
        "gap_end": pa.array(cols["gap_end"], pa.int64()),
    })
    order = [(name, "ascending") for name in ("source", "symbol", "timeframe", "gap_start")]
    return table.sort_by(order).cast(GAP_SCHEMA)
