"""Errors that cross layers. Messages never carry secrets."""

from __future__ import annotations


class CandlekeepError(Exception):
    """Base for errors candlekeep reports to the user as-is (no traceback)."""


class ConfigError(CandlekeepError):
    """Bad configuration: names the file, the key path, what is wrong and the fix."""

    def __init__(self, file: str, key: str, problem: str, fix: str = "") -> None:
        self.file = file
        self.key = key
        self.problem = problem
        self.fix = fix
        where = f"{file}: {key}" if key else file
        msg = f"{where}: {problem}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


class SourceError(CandlekeepError):
    """A source could not deliver what was asked, after its retries."""


class TransientSourceError(SourceError):
    """Worth retrying: network fault, timeout, 5xx, truncated reply."""


class RateLimitedError(TransientSourceError):
    """The exchange said slow down (HTTP 429/418); ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BannedError(RateLimitedError):
    """The exchange banned this IP (HTTP 418) for ``retry_after`` seconds: anything sent
    before then extends the ban, so the source fails fast instead of retrying."""


class GeoBlockedError(SourceError):
    """The exchange refuses this host's location (HTTP 451): no retry or fix on our side
    changes that, so callers that can do without the reply report it and carry on."""


class BadReplyError(SourceError):
    """The exchange answered with data that fails validation; nothing of it is stored."""

    def __init__(self, source: str, symbol: str, reason: str) -> None:
        self.source = source
        self.symbol = symbol
        self.reason = reason
        super().__init__(f"bad reply from source={source} symbol={symbol}: {reason}")


class StoreError(CandlekeepError):
    """A store could not complete a read or write."""


class StoreBusyError(StoreError):
    """Another process holds the store (a DuckDB file's single writer) longer than the
    caller waits: the store is there and well, only busy."""
