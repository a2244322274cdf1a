import logging

import pyarrow as pa
import pytest

from candlekeep.core.errors import BadReplyError
from candlekeep.core.schema import CANDLE_SCHEMA, candles_from_columns
from candlekeep.sources.validate import validate_candles

T0 = 1_735_689_600_000  # 2025-01-01
M = 60_000


def page(n: int = 5, **override: list[float]) -> pa.Table:
    cols = {"open": [100.0] * n, "high": [101.0] * n, "low": [99.0] * n,
            "close": [100.5] * n, "volume": [3.0] * n}
    cols.update(override)
    return candles_from_columns("binance", "BTC/USDT", "1m", [T0 + i * M for i in range(n)],
                                cols["open"], cols["high"], cols["low"], cols["close"],
                                cols["volume"], T0)


def check(t: pa.Table, now: int = T0 + 100 * M) -> pa.Table:
    return validate_candles(t, source="binance", symbol="BTC/USDT", timeframe="1m", now_ms=now)


def test_valid_page_passes_unchanged() -> None:
    t = page()
    out = check(t)
    assert out.equals(t) and out.schema.equals(CANDLE_SCHEMA)


def test_open_candle_is_dropped_not_rejected() -> None:
    out = check(page(5), now=T0 + 4 * M + 30_000)  # the 5th candle is still open
    assert out.num_rows == 4


@pytest.mark.parametrize(("override", "reason"), [
    ({"high": [101.0, 101.0, 99.5, 101.0, 101.0]}, "high below"),
    ({"low": [99.0, 100.8, 99.0, 99.0, 99.0]}, "low above"),
    ({"volume": [3.0, -1.0, 3.0, 3.0, 3.0]}, "negative volume"),
    ({"close": [100.5, float("nan"), 100.5, 100.5, 100.5]}, "non-finite"),
])
def test_bad_values_rejected_and_logged(override: dict[str, list[float]], reason: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(BadReplyError, match=reason):
        check(page(**override))
    assert "source=binance symbol=BTC/USDT" in caplog.text


def test_off_grid_duplicate_and_future_rejected() -> None:
    t = page(3)
    ts = pa.array([T0, T0 + 1, T0 + 2 * M], pa.int64()).cast(CANDLE_SCHEMA.field("ts").type)
    with pytest.raises(BadReplyError, match="off the timeframe grid"):
        check(t.set_column(3, "ts", ts))
    dup = pa.array([T0, T0, T0 + M], pa.int64()).cast(CANDLE_SCHEMA.field("ts").type)
    with pytest.raises(BadReplyError, match="strictly increasing"):
        check(t.set_column(3, "ts", dup))
    with pytest.raises(BadReplyError, match="future"):
        check(page(5), now=T0 + 2 * M)
