"""Cron triggers: which instants (epoch ms UTC) a schedule fires at, DST included.

Our cron syntax is croniter's five fields, or six with a *leading* seconds field
(``"*/10 * * * * *"`` = every 10 seconds); ``@hourly``-style aliases work too.

Wall-clock schedules meet daylight saving time twice a year. The rules (those of Vixie cron):

* a wall time skipped by a spring-forward jump fires once, at the instant of the jump, so a
  daily ``30 2 * * *`` job still runs that day;
* a wall time repeated by a fall-back runs once for a job with a fixed hour field
  (``30 1 * * *``), but at both occurrences for a job whose hour field is a wildcard
  (``*/15 * * * *``, ``0 * * * *``), which keeps its real elapsed-time cadence.

croniter only knows naive wall times, so ticks are searched zone-offset interval by interval:
between two transitions the offset is constant and wall time is UTC plus that offset.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu", "GMT",
                        "Etc/GMT", "Universal", "Etc/Universal"})
_PROBE_MS = 6 * 3_600_000  # no zone has changed its offset twice within six hours


class CronError(ValueError):
    """A schedule croniter (or our six-field convention) cannot accept; says why."""


@dataclass(frozen=True, slots=True)
class CronFields:
    """The expression split into named fields (seconds is "0" for five-field schedules)."""

    second: str
    minute: str
    hour: str
    dom: str
    month: str
    dow: str
    has_seconds: bool

    @property
    def croniter_expr(self) -> str:
        base = f"{self.minute} {self.hour} {self.dom} {self.month} {self.dow}"
        return f"{self.second} {base}" if self.has_seconds else base


def split_fields(expr: str) -> CronFields:
    """Fields of a 5- or 6-field expression (or alias); CronError for any other shape."""
    text = " ".join(expr.split())
    text = _ALIASES.get(text.lower(), text)
    parts = text.split(" ")
    if len(parts) == 5:
        mi, ho, dom, mo, dow = parts
        return CronFields("0", mi, ho, dom, mo, dow, has_seconds=False)
    if len(parts) == 6:
        se, mi, ho, dom, mo, dow = parts
        return CronFields(se, mi, ho, dom, mo, dow, has_seconds=True)
    raise CronError(
        f"{len(parts)} fields in {expr!r}; write 5 (minute hour day month weekday) or 6 "
        "with a leading seconds field")


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown timezone {name!r}; use an IANA name like UTC, "
                        "Europe/Berlin or America/New_York") from None


class _Zone:
    """Offset transitions of one zone, found by probing (zoneinfo exposes no list)."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.fixed = tz.key in _UTC_NAMES
        self._years: dict[int, list[tuple[int, int, int]]] = {}
        self._lock = threading.Lock()

    def offset_ms(self, ts_ms: int) -> int:
        off = datetime.fromtimestamp(ts_ms / 1000, self.tz).utcoffset()
        return 0 if off is None else int(off.total_seconds() * 1000)

    def _year(self, year: int) -> list[tuple[int, int, int]]:
        """(instant, offset before, offset after) of each transition in ``year`` (UTC)."""
        with self._lock:
            found = self._years.get(year)
            if found is not None:
                return found
            start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp() * 1000)
            end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp() * 1000)
            out: list[tuple[int, int, int]] = []
            prev_t, prev_off = start, self.offset_ms(start)
            t = start
            while t < end:
                t = min(t + _PROBE_MS, end)
                off = self.offset_ms(t)
                if off != prev_off:
                    lo, hi = prev_t, t  # offset(lo) == prev_off, offset(hi) == off
                    while hi - lo > 1:
                        mid = (lo + hi) // 2
                        if self.offset_ms(mid) == prev_off:
                            lo = mid
                        else:
                            hi = mid
                    out.append((hi, prev_off, off))
                prev_t, prev_off = t, off
            self._years[year] = out
            return out

    def first_transition_in(self, lo: int, hi: int) -> tuple[int, int, int] | None:
        """The first transition at an instant in ``(lo, hi]``."""
        if self.fixed or hi <= lo:
            return None
        y0, y1 = _year_of(lo), _year_of(hi)
        for year in range(y0, y1 + 1):
            for tr in self._year(year):
                if lo < tr[0] <= hi:
                    return tr
                if tr[0] > hi:
                    return None
        return None

    def last_transition_at_or_before(self, t: int) -> tuple[int, int, int] | None:
        if self.fixed:
            return None
        y = _year_of(t)
        for year in (y, y - 1):
            trs = self._year(year)
            i = bisect.bisect_right([tr[0] for tr in trs], t)
            if i:
                return trs[i - 1]
        return None


def _year_of(ts_ms: int) -> int:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).year


@lru_cache(maxsize=256)
def _zone(name: str) -> _Zone:
    return _Zone(parse_timezone(name))


class CronTrigger:
    """The fire times of one cron expression in one timezone.

    Shared between jobs with the same schedule (see ``cron_trigger``) and memoised on recent
    queries, so a thousand jobs on one schedule cost one croniter step per tick.
    Thread-safe: the engine asks from its loop and its database thread.
    """

    def __init__(self, expr: str, timezone: str = "UTC") -> None:
        self.expr = expr
        self.timezone = timezone
        self.fields = split_fields(expr)
        self._zone = _zone(timezone)
        try:
            self._iter = croniter(self.fields.croniter_expr, 0.0,
                                  second_at_beginning=self.fields.has_seconds)
            self._iter.get_next(float)
        except (CroniterError, ValueError, KeyError) as exc:
            raise CronError(_croniter_reason(expr, exc)) from None
        self._lock = threading.Lock()
        self._memo: dict[int, int] = {}
        self.fixed_hour = not self.fields.hour.startswith("*")
        self.period_ms = self._uniform_period()
        self._grid = _WallGrid(self._iter, self.fields.has_seconds)

    def __repr__(self) -> str:
        return f"CronTrigger({self.expr!r}, {self.timezone!r})"

    # -- core ----------------------------------------------------------------------------

    def _wall_next(self, wall_ms: int) -> int:
        """The first naive wall time strictly after ``wall_ms`` (both as if UTC)."""
        self._iter.set_current(wall_ms / 1000, force=True)
        nxt = self._iter.get_next(float)
        return round(nxt * 1000)

    def next_after(self, t_ms: int) -> int:
        """The first fire time strictly after ``t_ms``."""
        with self._lock:
            out = self._memo.get(t_ms)
            if out is None:
                if len(self._memo) >= 512:
                    self._memo.clear()
                out = self._memo[t_ms] = self._next_after(t_ms)
            return out

    def _next_after(self, t: int) -> int:
        zone = self._zone
        if zone.fixed:
            # Wall time is UTC; croniter's resolution is one second.
            return self._wall_next(t)
        lo, off = t, zone.offset_ms(t)
        wall = t + off
        while True:
            c = self._wall_next(wall)
            u = c - off
            tr = zone.first_transition_in(lo, u)
            if tr is None:
                if self.fixed_hour and self._repeated(u, c):
                    wall, lo = c, u
                    continue
                return u
            at, before, after = tr
            if after > before and c < at + after:
                return at  # this wall time does not exist today: fire at the jump
            lo, off, wall = at, after, at + after - 1

    def _repeated(self, u: int, wall: int) -> bool:
        """Whether the wall time of ``u`` already happened before a fall-back."""
        tr = self._zone.last_transition_at_or_before(u)
        if tr is None:
            return False
        at, before, after = tr
        return after < before and wall < at + before

    # -- derived -------------------------------------------------------------------------

    def ticks(self, after_ms: int, until_ms: int) -> Iterator[int]:
        """Fire times in ``(after_ms, until_ms]``, oldest first, lazily."""
        t = self.next_after(after_ms)
        while t <= until_ms:
            yield t
            t = self.next_after(t)

    def next_n(self, after_ms: int, n: int) -> list[int]:
        out: list[int] = []
        t = after_ms
        for _ in range(n):
            t = self.next_after(t)
            out.append(t)
        return out

    def last_between(self, after_ms: int, until_ms: int) -> int | None:
        """The latest fire time in ``(after_ms, until_ms]``, without walking from after_ms.

        Looks in growing windows ending at ``until_ms``: a month-long backlog of a
        per-second schedule costs a few steps, not millions.
        """
        window = 2_000
        while True:
            lo = max(after_ms, until_ms - window)
            last = None
            for tick in self.ticks(lo, until_ms):
                last = tick
            if last is not None or lo == after_ms:
                return last
            window *= 8

    def count_between(self, after_ms: int, until_ms: int) -> int:
        """How many fire times lie in ``(after_ms, until_ms]``, without walking them.

        A month of a per-second schedule is millions of ticks: the work here grows with the
        zone's offset changes in the window (and, for schedules restricted to some days,
        with its days), never with the ticks. Between two changes the offset is constant,
        so the ticks are the schedule's wall-time matches in the shifted window, counted
        by ``_WallGrid``; the stretch after each change applies the DST rules above.
        """
        if until_ms <= after_ms:
            return 0
        lo, hi = after_ms + 1, until_ms + 1  # as [lo, hi): ticks are whole milliseconds
        zone = self._zone
        with self._lock:
            if zone.fixed:
                return self._grid.count(lo, hi)
            n, start = 0, lo
            began = zone.last_transition_at_or_before(lo)
            while start < hi:
                tr = zone.first_transition_in(start, hi - 1)
                end = hi if tr is None else tr[0]
                n += self._count_stretch(start, end, zone.offset_ms(start), began)
                start, began = end, tr
            return n

    def _count_stretch(self, start: int, end: int, off: int,
                       began: tuple[int, int, int] | None) -> int:
        """Ticks in ``[start, end)``, where the offset is ``off`` since transition ``began``."""
        lo, hi = start + off, end + off
        n = 0
        if began is not None:
            at, before, after = began
            if after > before and at == start:
                # The wall times jumped over, and the one jumped to, are one tick at the jump.
                n = int(self._grid.count(at + before, at + after + 1) > 0)
                lo = at + after + 1
            elif after < before and self.fixed_hour:
                lo = max(lo, at + before)  # these wall times already ran before the fall-back
        return n + self._grid.count(lo, hi)

    def _uniform_period(self) -> int | None:
        """The period of schedules that tick on a fixed UTC grid (a launchd ``StartInterval``).

        That is ``*``/``*/N`` in the smallest field with everything above it a wildcard:
        whole-hour offset changes never move a grid that divides the hour.
        """
        f = self.fields
        if any(x != "*" for x in (f.hour, f.dom, f.month, f.dow)):
            return None
        if self._zone.fixed is False and not _whole_hour_zone(self._zone):
            return None
        sec_step = _step(f.second)
        min_step = _step(f.minute)
        if f.second == "0" and min_step is not None:
            return min_step * 60_000
        if sec_step is not None and f.minute == "*":
            return sec_step * 1000
        return None


class _WallGrid:
    """Counts a schedule's matches in a span of naive wall time by arithmetic.

    A cron schedule is a set of days (the day fields) times a set of times of day (hour x
    minute x second, each a plain set of values), so the matches in a span are whole
    matching days times the matches per day, plus prefix counts for the partial days at
    either end. Only which days match needs croniter (``L``, ``#``, the day-of-month or
    weekday rule), one step per matching day, and not even that when every day matches.
    It asks the trigger's own croniter (under the trigger's lock), whose expansion is the
    one walking uses: a second croniter would pick other values for ``R`` fields.
    """

    def __init__(self, it: croniter, has_seconds: bool) -> None:
        expanded = it.expanded
        hours, minutes = _values(expanded[1], 24), _values(expanded[0], 60)
        seconds = _values(expanded[5], 60) if has_seconds else frozenset({0})
        self._hours, self._minutes, self._seconds = hours, minutes, seconds
        self._hours_below = _below(hours, 24)
        self._minutes_below = _below(minutes, 60)
        self._seconds_below = _below(seconds, 60)
        self._per_hour = len(minutes) * len(seconds)
        self._per_day = len(hours) * self._per_hour
        self._every_day = all(x == ["*"] for x in expanded[2:5])
        self._iter = it

    def count(self, lo: int, hi: int) -> int:
        """Matches at wall times (ms, as if UTC) in ``[lo, hi)``."""
        if hi <= lo:
            return 0
        lo_s, hi_s = -(-lo // 1000), -(-hi // 1000)  # matches are on whole seconds
        lo_day, lo_sec = divmod(lo_s, 86_400)
        hi_day, hi_sec = divmod(hi_s, 86_400)
        if lo_day == hi_day:
            return self._matching_days(lo_day, lo_day + 1) * (
                self._in_day_before(hi_sec) - self._in_day_before(lo_sec))
        return (self._matching_days(lo_day, lo_day + 1)
                * (self._per_day - self._in_day_before(lo_sec))
                + self._matching_days(lo_day + 1, hi_day) * self._per_day
                + self._matching_days(hi_day, hi_day + 1) * self._in_day_before(hi_sec))

    def _in_day_before(self, sec: int) -> int:
        """Matches in a matching day before second ``sec`` of it (0..86400)."""
        hour, rest = divmod(sec, 3600)
        minute, second = divmod(rest, 60)
        n = self._hours_below[hour] * self._per_hour
        if hour in self._hours:
            n += self._minutes_below[minute] * len(self._seconds)
            if minute in self._minutes:
                n += self._seconds_below[second]
        return n

    def _matching_days(self, first: int, end: int) -> int:
        """How many of the days ``[first, end)`` (days since the epoch) the schedule runs on."""
        if end <= first:
            return 0
        if self._every_day:
            return end - first
        n, day = 0, first
        while day < end:
            # The first match from the start of ``day`` on falls on the next matching day.
            self._iter.set_current(day * 86_400 - 1, force=True)
            day = round(self._iter.get_next(float)) // 86_400
            if day >= end:
                break
            n += 1
            day += 1
        return n


def _values(expanded: Sequence[int | str], size: int) -> frozenset[int]:
    """The values a time field allows, from croniter's expansion (``*`` for all)."""
    if expanded == ["*"]:
        return frozenset(range(size))
    return frozenset(int(v) for v in expanded)


def _below(values: frozenset[int], size: int) -> list[int]:
    """``out[v]`` = how many allowed values are below ``v``, for ``v`` in ``0..size``."""
    out = [0]
    for v in range(size):
        out.append(out[-1] + (v in values))
    return out


def _step(field: str) -> int | None:
    if field == "*":
        return 1
    if field.startswith("*/"):
        try:
            n = int(field[2:])
        except ValueError:
            return None
        return n if n > 0 and 60 % n == 0 else None
    return None


def _whole_hour_zone(zone: _Zone) -> bool:
    now = int(datetime.now(UTC).timestamp() * 1000)
    return all(zone.offset_ms(now + k * 91 * 86_400_000) % 3_600_000 == 0 for k in range(-4, 5))


def _croniter_reason(expr: str, exc: Exception) -> str:
    text = str(exc)
    if "Hashed" in text:
        return f"{expr!r}: hashed 'H' fields are not supported; write explicit values"
    text = text.replace(f"[{expr}]", "").strip()
    return f"bad cron expression {expr!r}: {text or type(exc).__name__}"


@lru_cache(maxsize=4096)
def cron_trigger(expr: str, timezone: str = "UTC") -> CronTrigger:
    """The shared trigger for a schedule; raises CronError for a bad expression or zone."""
    return CronTrigger(expr, timezone)
