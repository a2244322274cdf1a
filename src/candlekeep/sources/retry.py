"""Retrying transient source failures: exponential backoff with full jitter.

Full jitter (a uniform draw between 0 and the exponential cap) spreads the retries of many
concurrent page fetches, so a burst of 5xx does not come back as a synchronised burst of
retries. A rate-limit reply's Retry-After wins over the backoff: the exchange said when.
Sleeping goes through the injected Clock so tests run retries without waiting.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from candlekeep.core.clock import Clock
from candlekeep.core.errors import BannedError, RateLimitedError, TransientSourceError

log = logging.getLogger("candlekeep.sources")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` counts the first try; delays never exceed ``max_delay_s`` except
    that a Retry-After up to ``max_retry_after_s`` is always honoured in full."""

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 900.0

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """Delay before retry number ``retry`` (1-based), full jitter."""
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** (retry - 1)))
        return rng.uniform(0.0, cap)

    def delay_s(self, retry: int, exc: TransientSourceError, rng: random.Random) -> float:
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            # A little jitter on top so that paused workers do not return in lockstep.
            return exc.retry_after + rng.uniform(0.0, min(1.0, self.base_delay_s))
        return self.backoff_s(retry, rng)


OnRetry = Callable[[int, TransientSourceError, float], None]


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    clock: Clock,
    rng: random.Random | None = None,
    on_retry: OnRetry | None = None,
    what: str = "request",
) -> T:
    """``await fn()``, retrying TransientSourceError per ``policy``; other errors pass through.

    ``on_retry(retry_number, error, delay_s)`` runs before each sleep (stats, limiter pause).
    The last transient error is re-raised once attempts are exhausted, or at once when a
    Retry-After exceeds ``max_retry_after_s`` (waiting that long is the caller's decision)
    or the exchange banned us (BannedError: a retry would only extend the ban).
    """
    rng = rng or random.Random()
    attempt = 1
    while True:
        try:
            return await fn()
        except TransientSourceError as exc:
            if attempt >= policy.max_attempts or isinstance(exc, BannedError):
                log.warning("giving up what=%s attempts=%d error=%r", what, attempt, str(exc))
                raise
            if (isinstance(exc, RateLimitedError) and exc.retry_after is not None
                    and exc.retry_after > policy.max_retry_after_s):
                log.warning("not waiting out what=%s retry_after=%.0fs", what, exc.retry_after)
                raise
            delay = policy.delay_s(attempt, exc, rng)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            log.info("retrying what=%s retry=%d delay=%.2fs error=%r", what, attempt, delay,
                     str(exc))
            await clock.sleep(delay)
            attempt += 1
