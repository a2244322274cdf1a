"""What an HTTP reply's headers say about the rate budget, for every dialect we meet.

Exchanges and data APIs report their counters in different headers:

- Binance: ``X-MBX-USED-WEIGHT-<n><unit>`` (weight used in the current window of n
  seconds, minutes, hours or days; ``X-MBX-ORDER-COUNT-*`` counts orders, not reads, and
  is ignored);
- CoinGecko and many REST APIs: ``x-ratelimit-limit`` / ``-remaining`` / ``-reset`` (reset
  in seconds from now, or as epoch seconds when it is that large);
- the IETF drafts: ``RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (seconds from now),
  the combined ``RateLimit: limit=100, remaining=50, reset=5`` and the later
  ``RateLimit: "name";r=50;t=5`` with ``RateLimit-Policy: "name";q=100;w=60``;
- ``Retry-After``: seconds, or an HTTP date.

``parse_usage`` turns any of them into one ``Usage``; fields a reply does not state stay
None. Pure functions (the clock is a parameter), so a limiter or a health view can read a
reply the same way whatever the provider.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

_EPOCH_THRESHOLD = 1_000_000_000
"""A reset value this large is an epoch timestamp (GitHub's style), not seconds from now."""

_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MBX = re.compile(r"^x-mbx-used-weight-(\d+)([smhd])$")


@dataclass(frozen=True, slots=True)
class Usage:
    """The budget as one reply reports it."""

    used: int | None = None
    """Weight (or requests) counted in the current window, this request included."""
    limit: int | None = None
    """The window's budget as the server states it (it may enforce less)."""
    remaining: int | None = None
    window_s: float | None = None
    """Length of the window the counts are for."""
    reset_s: float | None = None
    """Seconds until the window's counts reset."""
    retry_after_s: float | None = None
    """Seconds the server asks us to wait (Retry-After)."""

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.used, self.limit, self.remaining, self.window_s,
                                       self.reset_s, self.retry_after_s))


def parse_usage(headers: Mapping[str, Any] | None, now_s: float) -> Usage:
    """Every rate-limit figure in ``headers`` (any key case); ``now_s`` is the time in epoch
    seconds, to turn an HTTP-date Retry-After or an epoch reset into seconds from now."""
    h = {str(k).lower(): str(v).strip() for k, v in (headers or {}).items()}
    used, window_s = _binance_used(h)
    limit = _int(h.get("x-ratelimit-limit"))
    remaining = _int(h.get("x-ratelimit-remaining"))
    reset_s = _reset(h.get("x-ratelimit-reset"), now_s)
    ietf = _ietf(h, now_s)
    limit = limit if limit is not None else ietf.limit
    remaining = remaining if remaining is not None else ietf.remaining
    reset_s = reset_s if reset_s is not None else ietf.reset_s
    window_s = window_s if window_s is not None else ietf.window_s
    if used is None and limit is not None and remaining is not None:
        used = max(0, limit - remaining)
    return Usage(used=used, limit=limit, remaining=remaining, window_s=window_s,
                 reset_s=reset_s, retry_after_s=parse_retry_after(h.get("retry-after"), now_s))


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Retry-After as seconds from now: delta seconds or an HTTP date (RFC 9110 10.2.3);
    None when absent or unreadable, never negative."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # an HTTP date is always GMT; a zoneless one is not one
    return max(0.0, when.timestamp() - now_s)


def _binance_used(h: Mapping[str, str]) -> tuple[int | None, float | None]:
    """The used weight of the longest Binance window reported (the per-minute budget is the
    one exchangeInfo advertises; shorter windows, where sent, are finer slices of it)."""
    best: tuple[int | None, float | None] = (None, None)
    for key, value in h.items():
        m = _MBX.match(key)
        used = _int(value)
        if m is None or used is None:
            continue
        window = int(m.group(1)) * _UNIT_S[m.group(2)]
        if best[1] is None or window > best[1]:
            best = (used, window)
    return best


def _ietf(h: Mapping[str, str], now_s: float) -> Usage:
    """The IETF draft headers: separate fields, or the combined ``RateLimit`` field with
    ``RateLimit-Policy`` giving the quota and window."""
    limit = _int(h.get("ratelimit-limit"))
    remaining = _int(h.get("ratelimit-remaining"))
    reset_s = _reset(h.get("ratelimit-reset"), now_s)
    combined = _params(h.get("ratelimit", ""))
    policy = _params(h.get("ratelimit-policy", ""))
    if limit is None:
        limit = _int(combined.get("limit") or policy.get("q") or policy.get("limit"))
        if limit is None and h.get("ratelimit-policy"):
            limit = _int(h["ratelimit-policy"].split(";")[0].split(",")[0])
    if remaining is None:
        remaining = _int(combined.get("remaining") or combined.get("r"))
    if reset_s is None:
        reset_s = _reset(combined.get("reset") or combined.get("t"), now_s)
    window = _float(policy.get("w") or policy.get("window"))
    return Usage(limit=limit, remaining=remaining, reset_s=reset_s, window_s=window)


def _params(value: str) -> dict[str, str]:
    """``a=1, b=2`` or ``"name";r=1;t=2`` as a dict (the first policy only)."""
    out: dict[str, str] = {}
    for part in re.split(r"[;,]", value):
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        if sep and key and key not in out:
            out[key] = val.strip().strip('"')
    return out


def _reset(value: str | None, now_s: float) -> float | None:
    seconds = _float(value)
    if seconds is None:
        return None
    if seconds >= _EPOCH_THRESHOLD:
        seconds -= now_s
    return max(0.0, seconds)


def _int(value: str | None) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number >= 0 and math.isfinite(number) else None


__all__ = ["Usage", "parse_retry_after", "parse_usage"]
