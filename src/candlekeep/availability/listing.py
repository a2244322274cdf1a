"""The archive's own symbol list: the folders of its S3 bucket listing.

The exchange forgets symbols some time after delisting them, the archive keeps their files,
so the tracker asks both. The bucket answers S3 ListObjects (v1): with ``delimiter=/`` a
page holds the sub-folders of ``prefix`` as ``CommonPrefixes``, at most 1,000 entries; a
truncated page says ``IsTruncated`` and where to go on (``NextMarker``, else the last entry).

A page that fails (5xx, a timeout, XML cut short) is retried; if it keeps failing the
listing stops there and says so, naming the page's URL: the caller records the error
rather than trusting a short list.
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import httpx

from candlekeep.core.clock import Clock
from candlekeep.core.text import redact_url
from candlekeep.sources.binance_archive.paths import Market
from candlekeep.sources.retry import RetryPolicy

PUBLIC_LISTING_URL = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"
MAX_PAGES = 1000


@dataclass(frozen=True, slots=True)
class Listing:
    """Symbol folders found; ``error`` (naming the URL) when the listing did not finish."""

    symbols: tuple[str, ...]
    pages: int
    requests: int
    error: str | None = None


class _PageError(Exception):
    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def daily_prefix(market: Market, data_type: str) -> str:
    """``data/futures/um/daily/klines/``: the folder whose sub-folders are symbols."""
    kind = data_type.split("/", 1)[0]
    return f"data/{market.value}/daily/{kind}/"


async def list_symbols(client: httpx.AsyncClient, listing_url: str, prefix: str, *,
                       clock: Clock, retry: RetryPolicy, rng: random.Random | None = None,
                       max_pages: int = MAX_PAGES) -> Listing:
    """Every sub-folder name of ``prefix`` in the bucket at ``listing_url``, sorted."""
    rng = rng or random.Random()
    found: set[str] = set()
    marker = ""
    pages = requests = 0
    while True:
        if pages >= max_pages:
            return Listing(tuple(sorted(found)), pages, requests,
                           f"listing {redact_url(listing_url)} prefix {prefix}: more than "
                           f"{max_pages} pages; stopped")
        params = {"prefix": prefix, "delimiter": "/", "marker": marker}
        url = redact_url(str(httpx.URL(listing_url, params=params)))
        attempt = 1
        while True:
            requests += 1
            try:
                names, next_marker = await _page(client, listing_url, params, prefix)
                break
            except _PageError as exc:
                if not exc.transient or attempt >= retry.max_attempts:
                    tries = "" if not exc.transient else f" (after {attempt} attempts)"
                    return Listing(tuple(sorted(found)), pages, requests,
                                   f"archive listing page {url}: {exc}{tries}; "
                                   f"{len(found)} symbols listed before it")
            await clock.sleep(retry.backoff_s(attempt, rng))
            attempt += 1
        pages += 1
        found.update(names)
        if next_marker is None:
            return Listing(tuple(sorted(found)), pages, requests)
        if next_marker <= marker:
            return Listing(tuple(sorted(found)), pages, requests,
                           f"archive listing page {url}: the next marker {next_marker!r} "
                           "does not move past this page's; stopped")
        marker = next_marker


async def _page(client: httpx.AsyncClient, listing_url: str, params: dict[str, str],
                prefix: str) -> tuple[list[str], str | None]:
    """One page's folder names and the marker of the next page (None: the last page)."""
    try:
        reply = await client.get(listing_url, params=params)
    except httpx.HTTPError as exc:
        raise _PageError(f"{type(exc).__name__}: {exc}", transient=True) from None
    if reply.status_code != 200:
        transient = reply.status_code in (408, 429) or reply.status_code >= 500
        raise _PageError(f"HTTP {reply.status_code}: {reply.text[:200]!r}",
                         transient=transient)
    try:
        root = ET.fromstring(reply.content)
    except ET.ParseError as exc:
        # A body cut short in transfer: worth another try.
        raise _PageError(f"malformed XML ({exc}; {len(reply.content)} bytes)",
                         transient=True) from None
    if _local(root.tag) != "ListBucketResult":
        raise _PageError(f"not an S3 bucket listing (root element {_local(root.tag)!r})",
                         transient=False)
    folders: list[str] = []
    last = ""
    for elem in root:
        name = _local(elem.tag)
        if name == "CommonPrefixes":
            value = _child_text(elem, "Prefix")
            last = max(last, value)
            sub = value[len(prefix):] if value.startswith(prefix) else ""
            sub = sub[:-1] if sub.endswith("/") else sub
            if sub and "/" not in sub:
                folders.append(sub)
        elif name == "Contents":
            last = max(last, _child_text(elem, "Key"))
    truncated = _child_text(root, "IsTruncated").strip().lower() == "true"
    if not truncated:
        return folders, None
    next_marker = _child_text(root, "NextMarker") or last
    if not next_marker:
        raise _PageError("the page says it is truncated but names nothing to go on from",
                         transient=True)
    return folders, next_marker


def _local(tag: str) -> str:
    """An element's name without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1]


def _child_text(elem: ET.Element, name: str) -> str:
    for child in elem:
        if _local(child.tag) == name:
            return child.text or ""
    return ""
