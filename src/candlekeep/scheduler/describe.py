"""Cron expressions in words ("every 5 minutes", "at 02:00 every day") for tables.

Hand-written for the patterns people actually schedule; anything else is shown as the
expression itself, which is always correct if less friendly.
"""

from __future__ import annotations

from candlekeep.scheduler.triggers import CronError, split_fields

_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_DAY_ABBR = {d[:3].lower(): i for i, d in enumerate(_DAYS)}
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
_MONTH_ABBR = {m[:3].lower(): i + 1 for i, m in enumerate(_MONTHS)}


def _int(text: str, names: dict[str, int] | None = None) -> int | None:
    if text.isdigit():
        return int(text)
    if names is not None:
        return names.get(text.lower())
    return None


def _every(field: str, unit: str) -> str | None:
    """'every minute' for '*', 'every 5 minutes' for '*/5'; None otherwise."""
    if field == "*":
        return f"every {unit}"
    if field.startswith("*/") and field[2:].isdigit():
        n = int(field[2:])
        return f"every {unit}" if n == 1 else f"every {n} {unit}s"
    return None


def _dow(field: str) -> str | None:
    if field in ("*", "?"):
        return "every day"
    if "-" in field and "," not in field and "/" not in field:
        a, b = (_int(p, _DAY_ABBR) for p in field.split("-", 1))
        if a is not None and b is not None and a <= 7 and b <= 7:
            if (a, b) == (1, 5):
                return "on weekdays"
            return f"on {_DAYS[a % 7]} to {_DAYS[b % 7]}"
    days = [_int(p, _DAY_ABBR) for p in field.split(",")]
    if all(d is not None and d <= 7 for d in days):
        names = [_DAYS[d % 7] for d in days if d is not None]
        if names == ["Saturday", "Sunday"] or names == ["Sunday", "Saturday"]:
            return "on weekends"
        return "every " + " and ".join(names) if len(names) <= 2 else "on " + ", ".join(names)
    return None


def _calendar(dom: str, month: str, dow: str) -> str | None:
    """The date part: 'every day', 'on weekdays', 'on day 1 of every month', …"""
    if dom in ("*", "?") and month == "*":
        return _dow(dow)
    if dow in ("*", "?") and dom.isdigit():
        if month == "*":
            return f"on day {dom} of every month"
        m = _int(month, _MONTH_ABBR)
        if m is not None and 1 <= m <= 12:
            return f"on {_MONTHS[m - 1]} {dom}"
    return None


def describe(expr: str, timezone: str = "UTC") -> str:
    """Words for ``expr``; the expression itself when no pattern fits."""
    try:
        f = split_fields(expr)
    except CronError:
        return expr
    text = _describe(f.second, f.minute, f.hour, f.dom, f.month, f.dow)
    if text is None:
        return f"cron {expr}"
    return text if timezone == "UTC" else f"{text} ({timezone})"


def _describe(sec: str, minute: str, hour: str, dom: str, month: str, dow: str) -> str | None:
    cal = _calendar(dom, month, dow)
    everyday = cal == "every day"
    if sec != "0":
        if minute == "*" and hour == "*" and everyday:
            return _every(sec, "second")
        if sec.isdigit():
            inner = _describe("0", minute, hour, dom, month, dow)
            return f"{inner}, at second {sec}" if inner else None
        return None
    if hour == "*" and everyday:
        every = _every(minute, "minute")
        if every:
            return every
        if minute.isdigit():
            return "every hour" if minute == "0" else f"every hour at :{int(minute):02d}"
        return None
    if cal is None or not minute.isdigit():
        return None
    if hour.startswith("*/") and hour[2:].isdigit():
        every = _every(hour, "hour")
        at = "" if minute == "0" else f" at :{int(minute):02d}"
        return f"{every}{at}" if everyday else f"{every}{at}, {cal}"
    hours = hour.split(",")
    if all(h.isdigit() for h in hours):
        times = " and ".join(f"{int(h):02d}:{int(minute):02d}" for h in hours)
        return f"at {times} {cal}"
    return None
