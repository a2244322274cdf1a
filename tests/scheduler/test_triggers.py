import bisect
import itertools
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from candlekeep.scheduler.triggers import CronError, CronTrigger, cron_trigger, split_fields
from tests.scheduler.helpers import ms

HOUR = 3_600_000
DAY = 24 * HOUR


def local(ts: int, tz: str) -> str:
    return datetime.fromtimestamp(ts / 1000, ZoneInfo(tz)).strftime("%m-%d %H:%M:%S%z")


def test_five_fields_and_leading_seconds_field() -> None:
    t5 = cron_trigger("*/5 * * * *")
    assert t5.next_n(ms("2025-01-01T00:00:00"), 3) == [
        ms("2025-01-01T00:05:00"), ms("2025-01-01T00:10:00"), ms("2025-01-01T00:15:00")]
    t6 = cron_trigger("30 0 2 * * *")  # seconds first: 02:00:30 daily
    assert t6.next_after(ms("2025-01-01T00:00:00")) == ms("2025-01-01T02:00:30")
    every10 = cron_trigger("*/10 * * * * *")
    assert every10.next_n(ms("2025-01-01T00:00:01"), 2) == [
        ms("2025-01-01T00:00:10"), ms("2025-01-01T00:00:20")]


def test_next_after_is_strictly_after() -> None:
    t = cron_trigger("0 * * * *")
    assert t.next_after(ms("2025-01-01T01:00:00")) == ms("2025-01-01T02:00:00")
    assert t.next_after(ms("2025-01-01T01:00:00") - 1) == ms("2025-01-01T01:00:00")


def test_aliases() -> None:
    assert split_fields("@daily").croniter_expr == "0 0 * * *"
    assert cron_trigger("@hourly").next_after(ms("2025-01-01T00:10:00")) == ms(
        "2025-01-01T01:00:00")


@pytest.mark.parametrize(("expr", "why"), [
    ("* * * *", "4 fields"),
    ("* * * * * * *", "7 fields"),
    ("61 * * * *", "out of range"),
    ("*/0 * * * *", "step '0'"),
    ("0 0 31 2 *", "failed to find next date"),
    ("H * * * *", "hashed"),
])
def test_bad_cron_says_why(expr: str, why: str) -> None:
    with pytest.raises(CronError, match=why):
        CronTrigger(expr)


def test_bad_timezone() -> None:
    with pytest.raises(CronError, match="unknown timezone 'Mars/Olympus'"):
        CronTrigger("* * * * *", "Mars/Olympus")


def test_a_year_of_daily_ticks_in_a_dst_zone_stays_on_local_wall_time() -> None:
    tz = "Europe/Berlin"
    t = cron_trigger("0 9 * * *", tz)
    ticks = list(t.ticks(ms("2025-01-01T00:00:00"), ms("2026-01-01T00:00:00")))
    assert len(ticks) == 365
    assert {local(x, tz)[6:14] for x in ticks} == {"09:00:00"}
    # Winter ticks are 08:00 UTC, summer ticks 07:00 UTC.
    assert ticks[0] == ms("2025-01-01T08:00:00")
    assert ms("2025-07-01T07:00:00") in ticks


def test_spring_forward_skipped_wall_time_fires_once_at_the_jump() -> None:
    # America/New_York, 2025-03-09: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
    tz = "America/New_York"
    t = cron_trigger("30 2 * * *", tz)
    ticks = list(t.ticks(ms("2025-03-07T12:00:00"), ms("2025-03-11T00:00:00")))
    assert [local(x, tz) for x in ticks] == [
        "03-08 02:30:00-0500", "03-09 03:00:00-0400", "03-10 02:30:00-0400"]


def test_spring_forward_interval_schedule_keeps_real_cadence() -> None:
    t = cron_trigger("*/15 * * * *", "America/New_York")
    ticks = list(t.ticks(ms("2025-03-09T06:00:00"), ms("2025-03-09T08:00:00")))
    # Every 15 real minutes, through the jump, no duplicates.
    assert ticks == list(range(ms("2025-03-09T06:15:00"), ms("2025-03-09T08:00:01"),
                               15 * 60_000))


def test_fall_back_fixed_hour_runs_once_wildcard_hour_runs_twice() -> None:
    # America/New_York, 2025-11-02: 02:00 EDT falls back to 01:00 EST (06:00 UTC).
    tz = "America/New_York"
    daily = cron_trigger("30 1 * * *", tz)
    ticks = list(daily.ticks(ms("2025-11-01T12:00:00"), ms("2025-11-03T12:00:00")))
    assert [local(x, tz) for x in ticks] == ["11-02 01:30:00-0400", "11-03 01:30:00-0500"]
    hourly = cron_trigger("0 * * * *", tz)
    ticks = list(hourly.ticks(ms("2025-11-02T03:30:00"), ms("2025-11-02T08:30:00")))
    assert [local(x, tz) for x in ticks] == [
        "11-02 00:00:00-0400", "11-02 01:00:00-0400", "11-02 01:00:00-0500",
        "11-02 02:00:00-0500", "11-02 03:00:00-0500"]
    assert all(b - a == HOUR for a, b in itertools.pairwise(ticks))


def test_count_between_fast_path_matches_walking() -> None:
    for expr, tz in [("*/5 * * * *", "UTC"), ("*/10 * * * * *", "UTC"),
                     ("*/15 * * * *", "Europe/Berlin")]:
        t = cron_trigger(expr, tz)
        assert t.period_ms is not None
        a, b = ms("2025-03-29T00:00:07"), ms("2025-03-31T00:00:00")
        assert t.count_between(a, b) == sum(1 for _ in t.ticks(a, b))
    assert cron_trigger("0 9 * * 1-5").period_ms is None


def test_count_between_huge_window_is_arithmetic() -> None:
    t = cron_trigger("* * * * * *")
    assert t.count_between(ms("2025-01-01T00:00:00"), ms("2025-01-31T00:00:00")) == 30 * 86400


def test_last_between_finds_the_latest_tick_of_a_long_backlog() -> None:
    t = cron_trigger("* * * * * *")
    assert t.last_between(ms("2025-01-01T00:00:00"), ms("2025-03-01T12:34:56") + 500) == ms(
        "2025-03-01T12:34:56")
    daily = cron_trigger("0 3 * * *")
    assert daily.last_between(ms("2025-01-01T00:00:00"), ms("2025-06-01T02:00:00")) == ms(
        "2025-05-31T03:00:00")
    assert daily.last_between(ms("2025-01-01T04:00:00"), ms("2025-01-02T02:00:00")) is None


# Offset changes (UTC instants) in zones whose offsets are not whole hours.
NON_WHOLE_HOUR_TRANSITIONS = [
    ("Australia/Adelaide", "2025-04-05T16:30:00"),  # 03:00 ACDT back to 02:00 ACST
    ("Australia/Adelaide", "2025-10-04T16:30:00"),  # 02:00 ACST on to 03:00 ACDT
    ("America/St_Johns", "2025-03-09T05:30:00"),  # 02:00 NST on to 03:00 NDT
    ("America/St_Johns", "2025-11-02T04:30:00"),  # 02:00 NDT back to 01:00 NST
    ("Asia/Kathmandu", "1985-12-31T18:30:00"),  # +05:30 on to +05:45 (a 15-minute jump)
    ("Asia/Kolkata", "1941-09-30T18:30:00"),  # +05:30 on to +06:30
    ("Asia/Kolkata", "1942-05-14T17:30:00"),  # +06:30 back to +05:30
    ("Asia/Kolkata", "2025-06-01T00:00:00"),  # no transition for decades: one offset
    ("Australia/Lord_Howe", "2025-04-05T15:00:00"),  # +11:00 back to +10:30
    ("Australia/Lord_Howe", "2025-10-04T15:30:00"),  # +10:30 on to +11:00
]
COUNTED_SCHEDULES = [
    "* * * * * *", "*/7 * * * * *", "*/5 * * * *", "15 * * * *", "0 */2 * * *",
    "30 2 * * *", "*/10 * 1-2 * * *", "*/20 2 * * 0", "0 0 * * *",
]


@pytest.mark.parametrize("expr", COUNTED_SCHEDULES)
@pytest.mark.parametrize(("tz", "at_text"), NON_WHOLE_HOUR_TRANSITIONS)
def test_count_between_equals_walking_around_offset_changes(expr: str, tz: str,
                                                            at_text: str) -> None:
    t = cron_trigger(expr, tz)
    at = ms(at_text)
    half = 2 * HOUR if split_fields(expr).has_seconds else 2 * DAY
    lo, hi = at - half + 7, at + half + 999
    walked = list(t.ticks(lo, hi))
    assert t.count_between(lo, hi) == len(walked)
    near = [x for x in walked if abs(x - at) <= 2 * HOUR]
    near = near[:2] + near[len(near) // 2 - 1:len(near) // 2 + 1] + near[-2:]
    points = sorted({lo, hi, at - 1, at, at + 1, at - HOUR // 2, at + HOUR // 2,
                     *near, *(x - 1 for x in near), *(x + 1 for x in near)})
    for a, b in itertools.combinations([p for p in points if lo <= p <= hi], 2):
        expected = bisect.bisect_right(walked, b) - bisect.bisect_right(walked, a)
        assert t.count_between(a, b) == expected, (local(a, tz), local(b, tz))


@pytest.mark.parametrize(("expr", "tz", "start", "expected"), [
    ("* * * * * *", "Asia/Kolkata", "2025-01-01T00:00:07", 30 * 86400),
    ("* * * * * *", "Asia/Kathmandu", "2025-01-01T00:00:00", 30 * 86400),
    # A wildcard hour keeps real cadence: one tick per elapsed second, through either change.
    ("* * * * * *", "Australia/Adelaide", "2025-03-20T00:00:00", 30 * 86400),
    ("* * * * * *", "Australia/Adelaide", "2025-09-20T00:00:00", 30 * 86400),
    # A fixed hour runs the repeated 02:xx of 04-06 once; the missing 02:xx of 10-05 fires once,
    # at the jump. The window covers 30 local days' 02:xx either way.
    ("*/10 * 2 * * *", "Australia/Adelaide", "2025-03-20T00:00:00", 30 * 360),
    ("*/10 * 2 * * *", "Australia/Adelaide", "2025-09-20T00:00:00", 29 * 360 + 1),
])
def test_count_between_a_month_of_seconds_is_exact_and_does_not_walk(
    monkeypatch: pytest.MonkeyPatch, expr: str, tz: str, start: str, expected: int,
) -> None:
    t = cron_trigger(expr, tz)
    steps = 0
    real = croniter.get_next

    def counted(self: croniter, *args: Any, **kwargs: Any) -> Any:
        nonlocal steps
        steps += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(croniter, "get_next", counted)
    assert t.count_between(ms(start), ms(start) + 30 * DAY) == expected
    assert steps <= 100  # per day at most, not per tick
