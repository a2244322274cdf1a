"""Parsing user-facing times and durations; everything comes out as UTC epoch ms or seconds."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``"30s"``, ``"10m"``, ``"4h"``, ``"7d"`` (a bare number means seconds)."""
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value}")
        return float(value)
    m = _DURATION.match(value)
    if not m:
        raise ValueError(
            f"bad duration {value!r}; write a number and a unit: 500ms, 30s, 10m, 4h, 7d, 1w"
        )
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2) or "s"]


def to_ms(value: str | date | datetime | int) -> int:
    """Epoch ms UTC for a date, a datetime (naive means UTC), an ISO string or epoch ms."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)  # epoch milliseconds, as scripts pass them
        if text.lower() == "now":
            return int(datetime.now(UTC).timestamp() * 1000)
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"bad date {value!r}; use YYYY-MM-DD or an ISO time like 2025-01-01T00:00:00Z"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_to_datetime(ts_ms: int) -> datetime:
    """Exact (integer arithmetic, no float seconds): database parameters compare equal."""
    return _EPOCH + timedelta(milliseconds=int(ts_ms))


def fmt_ms(ts_ms: int | None) -> str:
    """Compact ISO text for tables and logs."""
    if ts_ms is None:
        return "-"
    return ms_to_datetime(ts_ms).strftime("%Y-%m-%d %H:%M:%S")


def iso_ms(ts_ms: int | None) -> str | None:
    """ISO 8601 in UTC with milliseconds (``2026-12-02T03:00:00.000Z``), for JSON."""
    if ts_ms is None:
        return None
    return ms_to_datetime(ts_ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts_ms) % 1000:03d}Z"


def fmt_duration(ms: int) -> str:
    """A duration for people: 4.2s, 12s, 3m05s, 2h10m, 1d04h."""
    s = ms // 1000
    if s < 60:
        return f"{ms / 1000:.1f}s" if ms < 10_000 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
