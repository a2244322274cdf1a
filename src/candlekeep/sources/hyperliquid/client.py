"""One ``POST /info`` request to Hyperliquid, paced by its published weights.

Every Hyperliquid read is ``POST {url}/info`` with a JSON body whose ``type`` names the
request. ``HyperliquidClient.info`` sends one such body through its source's ``call``
(the in-flight bound, retries with backoff on the injected clock, the error list) and:

- books the request type's base weight in a WeightLimiter before sending, and the extra
  weight of the items in the reply (one per 20 or per 60, see ``weights``) on the same grant
  once the reply is counted, so the grant holds both for a window after the reply, as the
  server counts them; both are counted in the source's stats and the job's meter;
- turns 5xx, transport failures, timeouts and bodies that are not JSON (truncated, an HTML
  gateway page) into TransientSourceError (retried); a 429 into RateLimitedError, honouring
  a Retry-After when there is one and otherwise booking the rest of the budget as used, so
  the limiter (not a guess) waits for the server's window to roll over (an adaptive
  limiter pauses a window and cuts its budget); any other 4xx into
  a SourceError naming the request type (not retried: the same body is refused again).

Hyperliquid sends no used-weight header, so the books are ours alone: a 429 is the only
sign that something else on the same IP spends from the budget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx

from candlekeep.core.errors import RateLimitedError, SourceError, TransientSourceError
from candlekeep.core.text import redact_url, snippet
from candlekeep.sources.base import Source
from candlekeep.sources.hyperliquid.weights import (
    base_weight,
    charges_items,
    items_weight,
    worst_items_weight,
)
from candlekeep.sources.metering import current_meter
from candlekeep.sources.ratelimit import Grant, WeightLimiter
from candlekeep.sources.usage_headers import parse_retry_after

log = logging.getLogger("candlekeep.sources")

ItemCount = Callable[[Any], int]


class HyperliquidLimiter(WeightLimiter):
    """A WeightLimiter that can add weight to a request still in flight: Hyperliquid
    charges some replies per item returned, which is known only once the reply is read."""

    def charge(self, grant: Grant, extra: int) -> None:
        """Add ``extra`` weight to ``grant`` before its release (so it is held, like the
        base weight, until a window after the reply)."""
        if extra <= 0:
            return
        if grant.released:  # too late to ride on the grant: book it on its own
            self.observe_used(self.used() + extra)
        else:
            self._pending += extra
            grant.weight += extra
        self.granted_weight += extra

    def refund(self, grant: Grant, amount: int) -> None:
        """Give back ``amount`` of what ``grant`` reserved but the reply did not cost."""
        amount = min(amount, grant.weight)
        if amount <= 0 or grant.released:
            return
        self._pending -= amount
        grant.weight -= amount
        self.granted_weight -= amount
        self._released.set()  # waiters may fit now


class HyperliquidClient:
    """``POST /info`` for one source, over one ``httpx.AsyncClient``.

    ``source`` supplies ``call`` (retries, in-flight bound), ``count_request`` and the
    stats; ``limiter`` is shared by every request of that source (Hyperliquid's budget is
    per IP, across request types).
    """

    def __init__(self, source: Source, url: str, *, limiter: WeightLimiter,
                 timeout_s: float = 10.0, http: httpx.AsyncClient | None = None) -> None:
        """``http``: a client to share (its owner closes it); else one of our own."""
        self.source = source
        self.url = url.rstrip("/")
        self.info_url = f"{self.url}/info"
        self.shown_url = redact_url(self.info_url)
        self.limiter = limiter
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=32), follow_redirects=False)

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def info(self, body: dict[str, Any], *, what: str,
                   items: ItemCount | None = None) -> Any:
        """The parsed JSON reply to ``body`` (retried per the source's policy).

        ``what`` describes the request for messages ("BTC funding from 2024-01-01").
        ``items`` counts the items of the reply that Hyperliquid charges for; by default a
        list reply's length, for the request types charged per item. The reply is parsed
        JSON, not yet validated: callers check its shape (BadReplyError).
        """
        info_type = body.get("type")
        if not isinstance(info_type, str) or not info_type:
            raise ValueError(f"an /info body needs a string 'type': {body!r}")
        name = self.source.name
        return await self.source.call(f"{name} {info_type} {what}",
                                      lambda: self.post_once(body, what=what, items=items))

    async def post_once(self, body: dict[str, Any], *, what: str,
                        items: ItemCount | None = None) -> Any:
        """One attempt, no retries: for code already inside the source's ``call`` (a
        candle page, which the base retries); ``info`` for everything else."""
        info_type = str(body.get("type"))
        weight = base_weight(info_type)
        # The item weight is known only from the reply: reserve the most a reply can cost
        # and give back the rest, so that concurrent requests never overrun the window.
        worst = worst_items_weight(info_type)
        async with self.limiter.reserve(weight + worst) as grant:
            self.source.count_request(weight)
            extra = 0
            try:
                try:
                    reply = await self._http.post(self.info_url, json=body)
                except httpx.UnsupportedProtocol as exc:
                    raise SourceError(redact_url(
                        f"source {self.source.name}: cannot send to {self.shown_url}: {exc} "
                        "(base_url must start with http:// or https://)")) from None
                except httpx.TransportError as exc:  # timeouts, refused or dropped
                    raise TransientSourceError(redact_url(
                        f"source {self.source.name}: {info_type} ({what}): "
                        f"{type(exc).__name__}: {exc}")) from None
                parsed = self._parse(reply, info_type, what)
                extra = items_weight(info_type, self._count(parsed, info_type, items))
                return parsed
            finally:
                self.settle(grant, worst, extra)

    def settle(self, grant: Grant, reserved: int, extra: int) -> None:
        """The reply cost ``extra`` item weight where ``reserved`` was held: give back the
        difference (or book more), and count ``extra`` in the stats and the job's meter."""
        if isinstance(self.limiter, HyperliquidLimiter):
            if extra < reserved:
                self.limiter.refund(grant, reserved - extra)
            elif extra > reserved:
                self.limiter.charge(grant, extra - reserved)
        elif extra > reserved:  # a plain limiter: book it as weight the server reports used
            self.limiter.observe_used(self.limiter.used() + extra - reserved)
        if not extra:
            return
        self.source.stats.weight_used += extra
        meter = current_meter()
        if meter is not None:
            meter.weight += extra

    @staticmethod
    def _count(parsed: Any, info_type: str, items: ItemCount | None) -> int:
        if not charges_items(info_type):
            return 0
        if items is not None:
            try:
                return max(0, int(items(parsed)))
            except (TypeError, ValueError, KeyError, IndexError, AttributeError):
                return 0  # a malformed reply: its validation reports it
        return len(parsed) if isinstance(parsed, list) else 0

    def _parse(self, reply: httpx.Response, info_type: str, what: str) -> Any:
        code = reply.status_code
        name = self.source.name
        where = f"source {name}: {info_type} ({what})"
        if code == 429:
            retry_after = parse_retry_after(reply.headers.get("Retry-After"),
                                            self.limiter.clock.now_ms() / 1000)
            self.source.stats.rate_limited += 1
            if retry_after is None and self.limiter.aimd is None:
                # The server's window is spent (by us or by someone on the same IP): book
                # the rest of the budget so that the limiter waits a window before sending.
                # (An adaptive limiter pauses for a window and cuts its budget instead.)
                self.limiter.observe_used(self.limiter.budget)
            self.limiter.on_rate_limited(retry_after)
            raise RateLimitedError(
                f"{where}: HTTP 429 rate limited"
                + (f" (retry after {retry_after:g}s)" if retry_after is not None
                   else " (waiting for the weight window to roll over)"), retry_after)
        if code >= 500:
            raise TransientSourceError(f"{where}: HTTP {code} at {self.shown_url}: "
                                       f"{snippet(reply.text)}")
        if code != 200:
            hint = (" (Hyperliquid could not read the request: an unknown type, coin or "
                    "interval, or a field of the wrong type)" if code == 422 else "")
            raise SourceError(f"{where}: HTTP {code} at {self.shown_url}: "
                              f"{snippet(reply.text)}{hint}")
        try:
            return json.loads(reply.content)
        except ValueError:
            raise TransientSourceError(
                f"{where}: unparseable or truncated reply ({len(reply.content)} bytes): "
                f"{snippet(reply.text)}") from None


__all__ = ["HyperliquidClient", "HyperliquidLimiter", "ItemCount"]
