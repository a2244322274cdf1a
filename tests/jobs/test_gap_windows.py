import pyarrow as pa

from candlekeep.core.schema import candles_from_columns
from candlekeep.core.series import SeriesKey
from candlekeep.jobs.gaps import _inside_gaps, merge_windows
from candlekeep.state.rows import GapRow

M = 60_000
S1 = SeriesKey("s", "BTC/USDT", "1m")
S2 = SeriesKey("s", "ETH/USDT", "1m")


def gap(i: int, start: int, end: int, series: SeriesKey = S1) -> GapRow:
    return GapRow(i, series, start * M, end * M, 0, None, "open", 0, 0, None)


def test_neighbours_merge_up_to_a_page_and_series_never_mix() -> None:
    gaps = [gap(1, 10, 12), gap(2, 500, 500), gap(3, 1009, 1009), gap(4, 1010, 1020),
            gap(5, 20, 25, S2)]
    windows = merge_windows(gaps, page_limit=1000)
    spans = sorted((w.key.symbol, w.start // M, w.end // M, len(w.gaps)) for w in windows)
    # 10..1009 is exactly 1000 candles: one request; 1010..1020 needs a second.
    assert spans == [("BTC/USDT", 10, 1009, 3), ("BTC/USDT", 1010, 1020, 1),
                     ("ETH/USDT", 20, 25, 1)]


def test_only_candles_inside_gaps_are_kept() -> None:
    ts = [t * M for t in range(0, 30)]
    batch = candles_from_columns("s", "BTC/USDT", "1m", ts, [1.0] * 30, [2.0] * 30,
                                 [0.5] * 30, [1.5] * 30, [1.0] * 30, 0)
    kept = _inside_gaps(batch, [gap(1, 20, 22), gap(2, 3, 3), gap(3, 10, 11)])
    assert pa.compute.divide(kept["ts"].cast("int64"), M).to_pylist() == [3, 10, 11, 20, 21, 22]
