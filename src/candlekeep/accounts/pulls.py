"""One run's pulls for Hyperliquid accounts: snapshots, orders and incremental history.

Per account, in this order, each pull on its own (one failing does not stop the next):

- ``snapshots``: ``clearinghouseState`` → one account snapshot and its open positions, both
  at the reply's own time (``snapshot_ts``);
- ``open_orders``: ``frontendOpenOrders`` → the open orders at that same ``snapshot_ts``;
- ``orders``: ``historicalOrders`` (the 2,000 most recent, with their latest status) →
  ``orders``, only those whose status changed since the cursor (by ``status_ts``);
- ``fills``, ``funding``, ``ledger``: paged forward from their cursors (accounts.paging).

With market data on, per source: ``asset_contexts`` (``metaAndAssetCtxs`` → one snapshot of
every perpetual) and ``funding_rates`` (``fundingHistory`` per coin, each from its cursor).

Every error is caught per pull and reported as ``account NAME PULL: error``; the pull's
cursor stays where its last durable write put it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.accounts import datasets as ds
from candlekeep.accounts import wire
from candlekeep.accounts.cursors import CHECKPOINT_JOB, CURSOR_TAGS, cursor_key
from candlekeep.accounts.kinds import MarketPull, Pull
from candlekeep.accounts.paging import History, page_forward
from candlekeep.accounts.wire import Row, Who
from candlekeep.core.datasets import Dataset
from candlekeep.core.errors import CandlekeepError, RateLimitedError, TransientSourceError
from candlekeep.core.timeutil import fmt_ms
from candlekeep.sources.metering import current_meter, metered

if TYPE_CHECKING:
    from candlekeep.jobs.facades import AsyncState, AsyncStore
    from candlekeep.sources.base import Source
    from candlekeep.sources.hyperliquid.source import HyperliquidSource

log = logging.getLogger("candlekeep.accounts")

DAY_MS = 86_400_000
FILLS_PAGE = 2000
FILLS_HORIZON = 10_000
TIME_RANGE_PAGE = 500
HISTORICAL_ORDERS_LIMIT = 2000
DEFAULT_LOOKBACK_MS = 30 * DAY_MS
"""A first pull of funding, ledger and funding rates starts this far back (fills start at
the exchange's horizon: the 10,000 most recent are all it serves)."""


WRITES: dict[str, tuple[Dataset, ...]] = {
    Pull.SNAPSHOTS: (ds.ACCOUNT_SNAPSHOTS, ds.POSITIONS_SNAPSHOTS),
    Pull.OPEN_ORDERS: (ds.OPEN_ORDERS_SNAPSHOTS,),
    Pull.ORDERS: (ds.ORDERS,),
    Pull.FILLS: (ds.FILLS,),
    Pull.FUNDING: (ds.FUNDING_PAYMENTS,),
    Pull.LEDGER: (ds.LEDGER_UPDATES,),
    MarketPull.ASSET_CONTEXTS: (ds.ASSET_CTX_SNAPSHOTS,),
    MarketPull.FUNDING_RATES: (ds.FUNDING_RATES,),
}
"""The datasets each pull writes."""

INFO_TYPES: dict[str, str] = {
    Pull.SNAPSHOTS: "clearinghouseState", Pull.OPEN_ORDERS: "frontendOpenOrders",
    Pull.ORDERS: "historicalOrders", Pull.FILLS: "userFillsByTime",
    Pull.FUNDING: "userFunding", Pull.LEDGER: "userNonFundingLedgerUpdates",
    MarketPull.ASSET_CONTEXTS: "metaAndAssetCtxs", MarketPull.FUNDING_RATES: "fundingHistory",
}

def _fill_key(r: Row) -> Hashable:
    return int(r["tid"])


def _funding_key(r: Row) -> Hashable:
    return (r["time"], r["coin"])


def _ledger_key(r: Row) -> Hashable:
    return (r["time"], r["hash"], r["kind"])


HISTORIES: dict[str, History] = {
    Pull.FILLS: History("userFillsByTime", FILLS_PAGE, wire.fill_rows, _fill_key,
                        horizon=FILLS_HORIZON),
    Pull.FUNDING: History("userFunding", TIME_RANGE_PAGE, wire.funding_rows, _funding_key),
    Pull.LEDGER: History("userNonFundingLedgerUpdates", TIME_RANGE_PAGE, wire.ledger_rows,
                         _ledger_key),
}


@dataclass
class Outcome:
    """One pull of one account (or one source's market data)."""

    subject: str
    """``account alice`` or ``markets of hl``."""
    pull: str
    incremental: bool = False
    """Kept by a cursor (then ``fetched`` and the cursor say how far it got)."""
    rows: int = 0
    requests: int = 0
    fetched: int = 0
    cursor_from: int | None = None
    cursor_to: int | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.subject} {self.pull}"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": self.rows, "requests": self.requests}
        if self.incremental:
            out["fetched"] = self.fetched
            out["cursor"] = fmt_ms(self.cursor_to) if self.cursor_to is not None else None
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class Starts:
    """Where a pull without a cursor starts (epoch ms)."""

    since_ms: int | None
    """The job's ``since``: every first pull starts there."""
    now_ms: int

    def first(self, pull: str) -> int:
        if self.since_ms is not None:
            return self.since_ms
        if pull == Pull.FILLS:
            return 0  # everything the exchange still serves (its 10,000 most recent)
        return max(0, self.now_ms - DEFAULT_LOOKBACK_MS)


class Puller:
    """Pulls for the accounts of one source into one store, cursors in the state DB."""

    def __init__(self, source: HyperliquidSource, store: AsyncStore, store_name: str,
                 state: AsyncState, now_ms: Callable[[], int], since_ms: int | None,
                 cancel: asyncio.Event | None = None) -> None:
        """``cancel``: once set, no further pull starts (the one running finishes its
        page and commits: its cursor stays consistent)."""
        self.cancel = cancel or asyncio.Event()
        self.source = source
        self.store = store
        self.store_name = store_name
        self.state = state
        self.now_ms = now_ms
        self.since_ms = since_ms

    def starts(self) -> Starts:
        return Starts(self.since_ms, self.now_ms())

    async def _ask(self, body: dict[str, Any], *, what: str) -> Any:
        return await self.source.info(body, what=what)

    # ------------------------------------------------------------------ one account

    async def account(self, who: Who, pulls: Sequence[Pull]) -> list[Outcome]:
        subject = f"account {who.account}"
        outcomes: list[Outcome] = []
        snapshot_ts: int | None = None
        for pull in pulls:
            out = Outcome(subject, pull, incremental=pull in CURSOR_TAGS)
            outcomes.append(out)
            if self.cancel.is_set():
                out.warnings.append(f"{out.label}: not pulled, the run was cancelled")
                continue
            with _counted(out), _caught(out, self.source):
                if pull == Pull.SNAPSHOTS:
                    snapshot_ts = await self._snapshots(who, out)
                elif pull == Pull.OPEN_ORDERS:
                    await self._open_orders(who, out, snapshot_ts or self.now_ms())
                elif pull == Pull.ORDERS:
                    await self._orders(who, out)
                else:
                    await self._history(who, pull, out)
            log.info("hyperliquid %s %s rows=%d requests=%d%s", subject, pull, out.rows,
                     out.requests, f" error={out.error!r}" if out.error else "")
        return outcomes

    async def _write(self, dataset: Dataset, who: Who, rows: list[Row]) -> int:
        if not rows:
            return 0
        return await self.store.upsert(dataset, who.table(dataset, rows, self.now_ms()))

    async def _snapshots(self, who: Who, out: Outcome) -> int:
        state = await self._ask({"type": "clearinghouseState", "user": who.address},
                                what=f"of account {who.account}")
        account, ts = wire.account_row(state)
        positions = wire.position_rows(state)
        snapshot_ts = ts if ts is not None else self.now_ms()
        account["snapshot_ts"] = snapshot_ts
        for p in positions:
            p["snapshot_ts"] = snapshot_ts
        # Positions first: an account snapshot is what says "a snapshot was taken", so a
        # reader never sees one whose positions are still to come.
        out.rows += await self._write(ds.POSITIONS_SNAPSHOTS, who, positions)
        out.rows += await self._write(ds.ACCOUNT_SNAPSHOTS, who, [account])
        return snapshot_ts

    async def _open_orders(self, who: Who, out: Outcome, snapshot_ts: int) -> None:
        reply = await self._ask({"type": "frontendOpenOrders", "user": who.address},
                                what=f"of account {who.account}")
        rows = wire.open_order_rows(reply)
        for r in rows:
            r["snapshot_ts"] = snapshot_ts
        out.rows += await self._write(ds.OPEN_ORDERS_SNAPSHOTS, who, rows)

    async def _orders(self, who: Who, out: Outcome) -> None:
        """Orders whose status changed at or after the cursor (their ``status_ts``): a
        status only ever changes forward in time, so older ones are stored already."""
        key = cursor_key(self.source.name, who.address, self.store_name,
                         CURSOR_TAGS[Pull.ORDERS])
        cursor = await self.state.get_checkpoint(CHECKPOINT_JOB, key)
        out.cursor_from = out.cursor_to = cursor
        reply = await self._ask({"type": "historicalOrders", "user": who.address},
                                what=f"of account {who.account}")
        rows = wire.order_rows(reply)
        out.fetched = len(rows)
        new = rows if cursor is None else [r for r in rows if r["status_ts"] >= cursor]
        if cursor is not None and len(rows) >= HISTORICAL_ORDERS_LIMIT \
                and min(r["order_time"] for r in rows) > cursor:
            out.warnings.append(
                f"{out.label}: historicalOrders returns the {HISTORICAL_ORDERS_LIMIT} most "
                f"recent orders, all placed after the cursor ({fmt_ms(cursor)}): status "
                "changes of older orders since then are not stored; run more often")
        out.rows += await self._write(ds.ORDERS, who, new)
        if new:
            top = max(r["status_ts"] for r in new) + 1
            if cursor is None or top > cursor:
                await self.state.set_checkpoint(CHECKPOINT_JOB, key, top, self.now_ms())
                out.cursor_to = top

    async def _history(self, who: Who, pull: Pull, out: Outcome) -> None:
        h = HISTORIES[pull]
        dataset = WRITES[pull][0]
        key = cursor_key(self.source.name, who.address, self.store_name, CURSOR_TAGS[pull])
        cursor = await self.state.get_checkpoint(CHECKPOINT_JOB, key)
        start = cursor if cursor is not None else self.starts().first(pull)
        out.cursor_from = out.cursor_to = cursor

        async def commit(rows: list[Row], position: int | None) -> int:
            written = await self._write(dataset, who, rows)
            out.rows += written
            if position is not None and (out.cursor_to is None or position > out.cursor_to):
                await self.state.set_checkpoint(CHECKPOINT_JOB, key, position, self.now_ms())
                out.cursor_to = position
            return written

        paged = await page_forward(self._ask, h, {"type": h.info_type, "user": who.address},
                                   start, commit, what=f"of account {who.account}")
        out.fetched = paged.fetched
        out.warnings.extend(f"{out.label}: {w}" for w in paged.warnings)
        # Only the newest ``horizon`` are served: a pull that got that many may have started
        # past events it never saw. A first pull from the default start asked for no more
        # than what is there, so only one from a cursor or an explicit ``since`` warns.
        if h.horizon is not None and paged.fetched >= h.horizon \
                and (cursor is not None or self.since_ms is not None):
            reached = fmt_ms(paged.first_ms) if paged.first_ms is not None else "?"
            out.warnings.append(
                f"{out.label}: {paged.fetched} fills since {fmt_ms(start)} reach the "
                f"exchange's horizon (only the {h.horizon} most recent are served): fills "
                f"between {fmt_ms(start)} and {reached} may be lost; run more often")

    # ------------------------------------------------------------------ market data

    async def markets(self, coins: Sequence[str] | None) -> list[Outcome]:
        """Asset contexts of every perpetual, then funding rates of ``coins`` (default:
        every perpetual the contexts list), each from its cursor."""
        subject = f"markets of {self.source.name}"
        ctx_out = Outcome(subject, MarketPull.ASSET_CONTEXTS)
        outcomes = [ctx_out]
        listed: list[str] = []
        with _counted(ctx_out), _caught(ctx_out, self.source):
            table = await self.source.asset_contexts()
            listed = table.column("coin").to_pylist()
            ctx_out.rows += await self.store.upsert(ds.ASSET_CTX_SNAPSHOTS, table)
        for coin in (coins if coins is not None else listed):
            if self.cancel.is_set():
                ctx_out.warnings.append(f"{subject}: funding rates of {coin} and later "
                                        "coins not pulled, the run was cancelled")
                break
            out = Outcome(subject, f"{MarketPull.FUNDING_RATES} {coin}", incremental=True)
            outcomes.append(out)
            with _counted(out), _caught(out, self.source):
                await self._funding_rates(coin, out)
        return outcomes

    async def _funding_rates(self, coin: str, out: Outcome) -> None:
        key = cursor_key(self.source.name, coin, self.store_name,
                         CURSOR_TAGS[MarketPull.FUNDING_RATES])
        cursor = await self.state.get_checkpoint(CHECKPOINT_JOB, key)
        start = cursor if cursor is not None else self.starts().first(MarketPull.FUNDING_RATES)
        out.cursor_from = out.cursor_to = cursor
        table = await self.source.funding_history(coin, start, self.now_ms() + 1)
        out.fetched = table.num_rows
        if table.num_rows:
            out.rows += await self.store.upsert(ds.FUNDING_RATES, table)
            top = int(pc.max(table.column("time").cast(pa.int64())).as_py()) + 1
            await self.state.set_checkpoint(CHECKPOINT_JOB, key, top, self.now_ms())
            out.cursor_to = top


@contextmanager
def _counted(out: Outcome) -> Iterator[None]:
    """Requests (HTTP attempts, retries included) made for ``out``, also counted in the
    job's meter: a meter of its own rides in the context variable while the pull runs."""
    outer = current_meter()
    with metered() as meter:
        try:
            yield
        finally:
            out.requests += meter.requests
            if outer is not None:
                outer.requests += meter.requests
                outer.weight += meter.weight


@contextmanager
def _caught(out: Outcome, source: Source) -> Iterator[None]:
    """A pull's error kept as its outcome (the run goes on with the next pull)."""
    try:
        yield
    except TransientSourceError as exc:
        policy = source.retry_policy
        waited_out = not (isinstance(exc, RateLimitedError) and exc.retry_after is not None
                          and exc.retry_after > policy.max_retry_after_s)
        out.error = f"{exc} (after {policy.max_attempts} attempts)" if waited_out else str(exc)
    except CandlekeepError as exc:
        out.error = str(exc)
