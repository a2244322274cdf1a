"""Paging an account's history forward from a cursor, writing each page before moving it.

Hyperliquid's time-range requests (``userFillsByTime``, ``userFunding``,
``userNonFundingLedgerUpdates``, ``fundingHistory``) answer with the oldest events at or
after ``startTime``, at most a page of them (2,000 fills, 500 of the others), cut exactly at
the page size even between two events of one millisecond. So a full page is followed by a
request from its last time, inclusive, and the events of that millisecond already seen are
dropped; a short page is the end.

The cursor is the time to ask from next, kept in the state DB and moved only after the rows
below it are durably written (write, then checkpoint):

- after a full page it becomes the page's last time (the rest of that millisecond may be on
  the next page; a rerun from there rewrites those few rows, which keyed upserts make one);
- after the short page that ends a pull it becomes the newest event's time + 1, so a run
  that finds nothing new asks once, gets an empty page and writes nothing.

A failure (the source's retries spent, a malformed reply, a store error) leaves the cursor
where the last durable write put it: a rerun, or a process killed with -9 and started
again, resumes there and duplicates nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from candlekeep.accounts.wire import Row, WireError
from candlekeep.core.timeutil import fmt_ms


class Ask(Protocol):
    """One ``/info`` request (the source's weighted, retried POST)."""

    async def __call__(self, body: dict[str, Any], *, what: str) -> Any: ...


Commit = Callable[[list[Row], int | None], Awaitable[int]]
"""Write rows (possibly none), then move the cursor to the position (None: leave it);
returns rows written."""


@dataclass(frozen=True, slots=True)
class History:
    """How one incremental dataset is asked for and read."""

    info_type: str
    page: int
    """Items per full reply: fewer means the end."""
    parse: Callable[[Any], list[Row]]
    key: Callable[[Row], Hashable]
    """What identifies an event within the account (the dataset key less the address)."""
    horizon: int | None = None
    """Only the most recent this many events are reachable (fills: 10,000)."""


@dataclass
class Paged:
    requests: int = 0
    fetched: int = 0
    """Distinct events received (rows re-read at a page boundary counted once)."""
    written: int = 0
    position: int | None = None
    """The cursor after the pull (None: nothing was ever found)."""
    first_ms: int | None = None
    warnings: list[str] = field(default_factory=list)


async def page_forward(ask: Ask, h: History, body: dict[str, Any], start: int,
                       commit: Commit, *, what: str) -> Paged:
    """Pull ``h`` from ``start`` (inclusive) to the end, committing page by page."""
    out = Paged()
    seen: set[Hashable] = set()  # events at time == start already written by this pull
    while True:
        reply = await ask({**body, "startTime": start}, what=f"{what} from {fmt_ms(start)}")
        out.requests += 1
        rows = h.parse(reply)
        times = [int(r["time"]) for r in rows]
        if times and min(times) < start:
            raise WireError(f"{h.info_type}: an event at {fmt_ms(min(times))} in a reply "
                            f"asked from {fmt_ms(start)}")
        new = [r for r in rows if h.key(r) not in seen]
        out.fetched += len(new)
        if new and out.first_ms is None:
            out.first_ms = min(int(r["time"]) for r in new)
        if len(rows) < h.page:  # the end: every event up to the newest is here
            position = max(times) + 1 if times else None
            out.written += await commit(new, position)
            if position is not None:
                out.position = position
            return out
        top = max(times)
        if top == start:
            # A whole page of one millisecond, already asked from: asking again returns the
            # same page, so the rest of that millisecond cannot be reached this way.
            out.warnings.append(
                f"{h.info_type}: more than {h.page} events at {fmt_ms(top)}; those beyond "
                "the first page cannot be paged to and may be missing")
            out.written += await commit(new, top + 1)
            out.position, start, seen = top + 1, top + 1, set()
            continue
        out.written += await commit(new, top)
        out.position, start = top, top
        seen = {h.key(r) for r, t in zip(rows, times, strict=True) if t == top}
