"""HEAD probes of the archive's daily files: is each (symbol, date) file published?

200 means published (its Content-Length and Last-Modified are kept), 404 means not (yet).
Anything else (5xx, 403, 429, a timeout, a dropped connection) says nothing about the file,
so it is retried with backoff and, if it persists, recorded as an error for that one
(symbol, date): a flaky file never fails the probes of the others.

Thousands of probes share one ``httpx.AsyncClient``; ``concurrency`` workers pull targets
from one iterator, so no task per probe is created and at most ``concurrency`` requests
are in flight. This loop is what bench/availability.py holds against a bare HEAD loop.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date
from email.utils import parsedate_to_datetime

import httpx

from candlekeep.availability.dataset import ProbeStatus
from candlekeep.core.clock import Clock
from candlekeep.core.text import redact_url
from candlekeep.sources.retry import RetryPolicy

DEFAULT_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.5, max_delay_s=10.0)
"""Four tries over a few seconds: enough for a CDN hiccup, short enough that a file that
keeps failing does not hold a worker for long."""


_LANE: ContextVar[int] = ContextVar("candlekeep_availability_lane", default=0)


class LaneTransport(httpx.AsyncBaseTransport):
    """One kept-alive connection per worker ("lane"), chosen by the calling task.

    httpcore's shared pool re-examines every queued request against every connection on
    each request's start and end (O(requests x connections), each check a socket poll):
    with 32 requests in flight on loopback that is about 6 ms of CPU per request, 20 times
    the cost of the request itself. A pool of one connection per worker has nothing to
    search. Requests of a task outside any worker share lane 0.
    """

    def __init__(self, lanes: int) -> None:
        ssl_context = httpx.create_ssl_context()  # one, not one per lane (~50 ms each)
        self._lanes = [httpx.AsyncHTTPTransport(
            verify=ssl_context, limits=httpx.Limits(max_connections=1,
                                                    max_keepalive_connections=1))
            for _ in range(max(1, lanes))]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._lanes[_LANE.get() % len(self._lanes)].handle_async_request(request)

    async def aclose(self) -> None:
        for lane in self._lanes:
            await lane.aclose()


def use_lane(lane: int) -> None:
    """Route this task's requests through connection ``lane`` (call at a worker's start)."""
    _LANE.set(lane)


def make_client(concurrency: int, timeout_s: float) -> httpx.AsyncClient:
    """The one client of a run: a kept-alive connection per worker."""
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
    return httpx.AsyncClient(timeout=timeout, transport=LaneTransport(concurrency),
                             follow_redirects=True)


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    symbol: str  # exchange id: BTCUSDT
    day: date
    url: str


@dataclass(frozen=True, slots=True)
class Probe:
    """What one target's probe concluded; ``attempts`` counts requests made for it."""

    target: ProbeTarget
    status: ProbeStatus
    size: int | None = None
    last_modified_ms: int | None = None
    error: str | None = None
    attempts: int = 1


async def probe_all(client: httpx.AsyncClient, targets: Sequence[ProbeTarget], *,
                    concurrency: int, clock: Clock, retry: RetryPolicy = DEFAULT_RETRY,
                    rng: random.Random | None = None,
                    on_done: Callable[[int], None] | None = None) -> list[Probe]:
    """One Probe per target, in the targets' order. ``on_done(n)`` reports progress."""
    rng = rng or random.Random()
    results: list[Probe | None] = [None] * len(targets)
    indexes = iter(range(len(targets)))  # shared: each worker takes the next index

    async def worker(lane: int) -> None:
        use_lane(lane)  # this task's context only: gather runs each worker in a task
        done = 0
        for i in indexes:
            results[i] = await probe_one(client, targets[i], clock=clock, retry=retry,
                                         rng=rng)
            done += 1
            if on_done is not None and done == 64:
                on_done(done)
                done = 0
        if on_done is not None and done:
            on_done(done)

    await asyncio.gather(*(worker(i) for i in range(max(1, min(concurrency, len(targets))))))
    return [r for r in results if r is not None]


async def probe_one(client: httpx.AsyncClient, target: ProbeTarget, *, clock: Clock,
                    retry: RetryPolicy = DEFAULT_RETRY,
                    rng: random.Random | None = None) -> Probe:
    attempt = 1
    while True:
        try:
            reply = await client.head(target.url)
        except httpx.HTTPError as exc:  # timeouts, refused or dropped connections
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            code = reply.status_code
            if code == 200:
                headers = reply.headers
                return Probe(target, ProbeStatus.AVAILABLE,
                             _int(headers.get("content-length")),
                             _http_date_ms(headers.get("last-modified")), None, attempt)
            if code == 404:
                return Probe(target, ProbeStatus.MISSING, attempts=attempt)
            why = f"HTTP {code}"
        if attempt >= retry.max_attempts:
            return Probe(target, ProbeStatus.ERROR,
                         error=f"{why} at {redact_url(target.url)} (after {attempt} attempts)",
                         attempts=attempt)
        await clock.sleep(retry.backoff_s(attempt, rng or random.Random()))
        attempt += 1


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _http_date_ms(value: str | None) -> int | None:
    """Epoch ms of an HTTP date (``Fri, 03 Jan 2025 00:00:00 GMT``); None when absent or
    unreadable (the probe's verdict does not depend on it)."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)
