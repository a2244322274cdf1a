"""Pulling one coin's points at one timeframe into a store, resumably.

The window ``[start, end)`` is aligned to the timeframe's grid and starts at the coin's
checkpoint when there is one (the state DB's checkpoints, job ``coingecko_prices``,
``symbol`` = ``{coin_id}@{store}``, ``timeframe`` = the timeframe, ``o`` prefixed for
OHLC), so a rerun asks only for what it lacks. Each request's rows are upserted before
the checkpoint moves past them: a run killed between the two asks again, and the upsert
makes that harmless.

What came back is judged by its spacing: rows are stored under that timeframe, and when
it is not the one asked for, the run warns and leaves the checkpoint where it was. The
checkpoint moves to the slot after the newest one that came back, never to the end
asked: a reply that lags (its newest points not there yet) is asked again next run
instead of leaving a hole behind the checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.core.errors import SourceError
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeutil import fmt_ms
from candlekeep.sources.coingecko.datasets import (
    COINGECKO_OHLC,
    COINGECKO_PRICES,
    ReplyShapeError,
    chart_series,
    ohlc_rows,
    ohlc_table,
    prices_table,
)
from candlekeep.sources.coingecko.granularity import (
    TIMEFRAME_MS,
    Endpoint,
    chart_ranges,
    detect_step,
    name_of,
    ohlc_request,
)

if TYPE_CHECKING:
    from candlekeep.core.datasets import Dataset
    from candlekeep.jobs.facades import AsyncState, AsyncStore
    from candlekeep.sources.coingecko.coins import Coin
    from candlekeep.sources.coingecko.source import CoinGeckoSource

log = logging.getLogger("candlekeep.jobs")

CHECKPOINT_JOB = "coingecko_prices"


def checkpoint_key(source: str, coin_id: str, store: str, timeframe: str,
                   endpoint: Endpoint) -> SeriesKey:
    return SeriesKey(source, f"{coin_id}@{store}",
                     timeframe if endpoint == "market_chart" else f"o{timeframe}")


@dataclass
class CoinOutcome:
    coin: str
    coin_id: str | None = None
    symbol: str | None = None
    rows: int = 0
    requests: int = 0
    stored_as: dict[str, int] = field(default_factory=dict)
    """Rows per timeframe that actually came back."""
    window: tuple[int, int] | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"coin_id": self.coin_id, "symbol": self.symbol, "rows": self.rows,
                "requests": self.requests, "stored_as": self.stored_as,
                "window": None if self.window is None else [fmt_ms(t) for t in self.window],
                "error": self.error}


@dataclass
class Puller:
    source: CoinGeckoSource
    store: AsyncStore
    store_name: str
    db: AsyncState
    timeframe: str
    endpoint: Endpoint
    refetch: bool = False

    async def pull(self, coin: Coin, start_ms: int, end_ms: int, now_ms: int,
                   out: CoinOutcome) -> None:
        """``coin``'s points of ``[start_ms, end_ms)`` into the store; what happened goes
        into ``out`` (SourceError from the source propagates: the caller records it)."""
        step = TIMEFRAME_MS[self.timeframe]
        start = -(-start_ms // step) * step
        end = min(end_ms, now_ms) // step * step
        key = checkpoint_key(self.source.name, coin.id, self.store_name, self.timeframe,
                             self.endpoint)
        if not self.refetch:
            at = await self.db.get_checkpoint(CHECKPOINT_JOB, key)
            if at is not None:
                start = max(start, at)
        out.window = (start, end)
        if end <= start:
            return
        if self.endpoint == "market_chart":
            await self._chart(coin, start, end, now_ms, key, out)
        else:
            await self._ohlc(coin, start, end, now_ms, key, out)

    async def _chart(self, coin: Coin, start: int, end: int, now_ms: int, key: SeriesKey,
                     out: CoinOutcome) -> None:
        ranges, warnings = chart_ranges(self.timeframe, start, end, now_ms, self.source.plan)
        out.warnings.extend(f"{coin.id} {self.timeframe}: {w}" for w in warnings)
        for r in ranges:
            reply = await self.source.market_chart(coin.id, r)
            out.requests += 1
            try:
                ts, series = chart_series(reply)
            except ReplyShapeError as exc:
                raise self.source.reject(f"{coin.id} market_chart", str(exc)) from None
            step = self._came_back(coin, ts, f"{fmt_ms(r.keep_from)} to {fmt_ms(r.keep_to)}",
                                   out)
            if step is None:
                continue
            got = name_of(step) or "?"
            table = prices_table(self.source.name, coin.id, coin.symbol, got, step, ts,
                                 series, r.keep_from, r.keep_to, now_ms)
            await self._write(COINGECKO_PRICES, table, got, out)
            if got == self.timeframe:
                await self._advance(key, table, step, r.keep_to, now_ms)

    async def _ohlc(self, coin: Coin, start: int, end: int, now_ms: int, key: SeriesKey,
                    out: CoinOutcome) -> None:
        req, warnings = ohlc_request(self.timeframe, start, now_ms, self.source.plan)
        out.warnings.extend(f"{coin.id} {self.timeframe} OHLC: {w}" for w in warnings)
        reply = await self.source.ohlc(coin.id, req.days, req.interval)
        out.requests += 1
        try:
            rows = ohlc_rows(reply)
        except ReplyShapeError as exc:
            raise self.source.reject(f"{coin.id} ohlc", str(exc)) from None
        step = self._came_back(coin, [r[0] for r in rows], f"the last {req.days} days", out)
        if step is None:
            return
        got = name_of(step) or "?"
        table = ohlc_table(self.source.name, coin.id, coin.symbol, got, step, rows, start,
                           now_ms)
        await self._write(COINGECKO_OHLC, table, got, out)
        if got == self.timeframe:
            await self._advance(key, table, step, end, now_ms)

    async def _advance(self, key: SeriesKey, table: pa.Table, step: int, cap: int,
                       now_ms: int) -> None:
        """The checkpoint to the slot after the newest row of ``table`` (at most ``cap``);
        unmoved when nothing came back."""
        if not table.num_rows:
            return
        newest = pc.max(pc.cast(table["ts"], pa.int64())).as_py()
        await self.db.set_checkpoint(CHECKPOINT_JOB, key, min(cap, newest + step), now_ms)

    def _came_back(self, coin: Coin, ts: list[int], span: str,
                   out: CoinOutcome) -> int | None:
        """The width of what came back, warning when it is not the one asked for; None
        when the reply cannot say (then nothing of it is stored)."""
        step = detect_step(ts)
        if step is None:
            if len(ts) >= 2:
                raise self.source.reject(f"{coin.id} {self.endpoint}",
                                         f"points {len(ts)} spaced like no CoinGecko width")
            if ts:
                out.warnings.append(f"{coin.id} {self.timeframe}: a single point for {span}:"
                                    " its granularity cannot be told, so it is not stored")
            return None
        got = name_of(step)
        if got != self.timeframe:
            msg = (f"{coin.id}: asked CoinGecko for {self.timeframe} points for {span}, "
                   f"it returned {got} ones: stored as {got}, not as {self.timeframe}")
            log.warning("coingecko granularity source=%s %s", self.source.name, msg)
            out.warnings.append(msg)
        return step

    async def _write(self, dataset: Dataset, table: pa.Table, got: str, out: CoinOutcome) -> None:
        if not table.num_rows:
            return
        written = await self.store.upsert(dataset, table)
        out.rows += written
        out.stored_as[got] = out.stored_as.get(got, 0) + table.num_rows


async def pull_all(puller: Puller, coins: list[tuple[str, Coin | SourceError]],
                   start_ms: int, end_ms: int, now_ms: int) -> list[CoinOutcome]:
    """Every coin, concurrently (the source's limiter paces their requests); a coin that
    fails is recorded and does not stop the others."""
    from candlekeep.core.tasks import gather_all

    async def one(wanted: str, coin: Coin | SourceError) -> CoinOutcome:
        out = CoinOutcome(wanted)
        if isinstance(coin, SourceError):
            out.error = str(coin)
            return out
        out.coin_id, out.symbol = coin.id, coin.symbol
        try:
            await puller.pull(coin, start_ms, end_ms, now_ms, out)
        except SourceError as exc:
            out.error = puller.source.redact(str(exc))
        return out

    return await gather_all([one(w, c) for w, c in coins])


__all__ = ["CHECKPOINT_JOB", "CoinOutcome", "Puller", "checkpoint_key", "pull_all"]
