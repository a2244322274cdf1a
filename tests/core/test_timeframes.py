from datetime import UTC, datetime

import pytest

from candlekeep.core.timeframes import TIMEFRAMES, parse_timeframe


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_weekly_grid_is_monday() -> None:
    tf = parse_timeframe("1w")
    opened = tf.floor(ms(2025, 1, 1, 13))  # a Wednesday
    assert datetime.fromtimestamp(opened / 1000, UTC) == datetime(2024, 12, 30, tzinfo=UTC)
    assert tf.on_grid(ms(2025, 1, 6)) and not tf.on_grid(ms(2025, 1, 2))


@pytest.mark.parametrize("name", list(TIMEFRAMES))
def test_floor_ceil_count(name: str) -> None:
    tf = parse_timeframe(name)
    t = ms(2025, 3, 7, 11, 17) + 123
    f = tf.floor(t)
    assert f <= t < f + tf.ms and tf.on_grid(f)
    assert tf.ceil(f) == f and tf.ceil(f + 1) == f + tf.ms
    assert tf.count(f, f + 10 * tf.ms) == 10
    assert tf.count(f + 1, f + 10 * tf.ms) == 9
    assert tf.last_closed_open(f + 1) == f - tf.ms


def test_unknown_timeframe_names_choices() -> None:
    with pytest.raises(ValueError, match="valid: 1m, 3m"):
        parse_timeframe("2m")
