"""Deterministic trading accounts: orders, fills, positions, funding and ledger events.

An account's history is a pure function of (seed, address, time). Orders arrive as a
Poisson stream keyed by the order's index; each order is decided in placement order (its
side leans toward a slowly moving target position, so positions open, grow, shrink and
flip), then resolves at a later time: filled (a crossing order in one to three pieces
within seconds, or a resting order in one piece within hours) or canceled. Positions are
the running sum of signed fills in fill-time order, with Hyperliquid's entry price
(average of the opening fills), closed PnL on reductions and direction labels. Funding is
paid every hour on open positions (usdc = -szi x mark x rate) and ledger events
(deposits, withdrawals, transfers) arrive now and then.

Nothing exists after ``now``: every query takes the current time, and the model only
generates orders placed up to the end of now's day (an order placed later cannot fill
earlier), so moving the clock reveals new fills without changing any old one.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from candlekeep.core.timeframes import DAY_MS, HOUR_MS
from candlekeep.sim.generator import I64, stable_hash64, uniform
from candlekeep.sim.hyperliquid.market import HlMarkets
from candlekeep.sim.hyperliquid.records import (
    Fill,
    FundingPayment,
    LedgerEvent,
    Order,
    OrderStatus,
    Position,
    Side,
    fmt_num,
    tx_hash,
)
from candlekeep.sim.hyperliquid.spec import AccountSpec

TAKER_FEE = 0.00045
MAKER_FEE = 0.00015
BUILDER_FEE = 0.0001
WITHDRAW_FEE = 1.0
CANCEL_PROBABILITY = 0.25
QUICK_PROBABILITY = 0.7  # of filled orders: crossing (taker) orders filled within seconds
MEAN_PIECES = QUICK_PROBABILITY * 2.0 + (1 - QUICK_PROBABILITY) * 1.0
RESTING_MEAN_MS = 6 * HOUR_MS
RESTING_MAX_MS = 3 * DAY_MS
TARGET_PERIOD_MS = 3 * DAY_MS


@dataclass(slots=True)
class _History:
    bound_ms: int
    orders: list[Order] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)  # every fill of ``orders``, by (time, tid)
    fill_times: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    funding: list[FundingPayment] = field(default_factory=list)
    funding_times: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    ledger: list[LedgerEvent] = field(default_factory=list)
    ledger_times: I64 = field(default_factory=lambda: np.empty(0, np.int64))


class AccountModel:
    """One account's history, generated on demand and cached up to the end of a day."""

    def __init__(self, seed: int, account: AccountSpec, markets: HlMarkets) -> None:
        self.seed = seed
        self.account = account
        self.markets = markets
        self.address = account.address
        self._key = stable_hash64("hl-account", seed, account.address)
        self._lock = threading.Lock()
        self._history: _History | None = None

    # ------------------------------------------------------------------ queries

    def history(self, now_ms: int) -> _History:
        """Everything generated for orders placed up to the end of ``now_ms``'s day."""
        bound = (now_ms // DAY_MS + 1) * DAY_MS
        with self._lock:
            if self._history is None or self._history.bound_ms < bound:
                self._history = self._generate(bound)
            return self._history

    def fills(self, start_ms: int, end_ms: int, now_ms: int) -> list[Fill]:
        """Every fill with time in ``[start_ms, end_ms]`` and not after ``now_ms``, oldest
        first (ties by tid), ignoring the exchange's 10,000-fill horizon."""
        h = self.history(now_ms)
        lo = int(np.searchsorted(h.fill_times, start_ms, side="left"))
        hi = int(np.searchsorted(h.fill_times, min(end_ms, now_ms), side="right"))
        return h.fills[lo:hi]

    def orders(self, now_ms: int) -> list[Order]:
        """Every order placed by ``now_ms``, oldest first."""
        return [o for o in self.history(now_ms).orders if o.timestamp <= now_ms]

    def open_orders(self, now_ms: int) -> list[Order]:
        return [o for o in self.orders(now_ms) if o.status(now_ms) == "open"]

    def funding(self, start_ms: int, end_ms: int, now_ms: int) -> list[FundingPayment]:
        h = self.history(now_ms)
        lo = int(np.searchsorted(h.funding_times, start_ms, side="left"))
        hi = int(np.searchsorted(h.funding_times, min(end_ms, now_ms), side="right"))
        return h.funding[lo:hi]

    def ledger(self, start_ms: int, end_ms: int, now_ms: int) -> list[LedgerEvent]:
        h = self.history(now_ms)
        lo = int(np.searchsorted(h.ledger_times, start_ms, side="left"))
        hi = int(np.searchsorted(h.ledger_times, min(end_ms, now_ms), side="right"))
        return h.ledger[lo:hi]

    def positions(self, now_ms: int) -> list[Position]:
        """Open positions at ``now_ms``, in the order of the account's coins."""
        fills = self.fills(0, now_ms, now_ms)
        funding = self.funding(0, now_ms, now_ms)
        out: list[Position] = []
        for coin in self.account.coins:
            perp = self.markets.perps[coin]
            szi, entry = 0.0, 0.0
            opened_at, changed_at = -1, -1
            for f in fills:
                if f.coin != coin:
                    continue
                new = round(f.start_position + f.signed_sz, perp.sz_decimals)
                if f.start_position == 0 or (f.start_position > 0) != (new > 0):
                    opened_at = f.time
                changed_at = f.time
                szi = new
            if szi == 0:
                continue
            entry = self._entry_px(coin, fills)
            paid = [(p.time, -p.usdc) for p in funding if p.coin == coin]
            out.append(Position(
                coin, szi, entry,
                cum_funding_all_time=round(sum(u for _, u in paid), 6),
                cum_funding_since_open=round(sum(u for t, u in paid if t > opened_at), 6),
                cum_funding_since_change=round(sum(u for t, u in paid if t > changed_at), 6),
                sz_decimals=perp.sz_decimals,
                px_decimals=self.markets.decimals(perp.symbol)))
        return out

    def cash(self, now_ms: int) -> float:
        """The perp account's USDC without unrealised PnL: ledger, realised PnL, fees and
        funding up to ``now_ms``."""
        total = sum(e.perp_usdc for e in self.ledger(0, now_ms, now_ms))
        for f in self.fills(0, now_ms, now_ms):
            total += f.closed_pnl - f.fee - (f.builder_fee or 0.0)
        total += sum(p.usdc for p in self.funding(0, now_ms, now_ms))
        return total

    def _entry_px(self, coin: str, fills: list[Fill]) -> float:
        entry = 0.0
        for f in fills:
            if f.coin == coin:
                entry = _entry_after(f, entry)
        return entry

    # ------------------------------------------------------------------ generation

    def _generate(self, bound_ms: int) -> _History:
        h = _History(bound_ms)
        start = self.account.start_ms
        if bound_ms <= start:
            return h
        if self.account.fills_per_day > 0:
            h.orders, h.fills = self._orders_and_fills(start, bound_ms)
            h.fill_times = np.array([f.time for f in h.fills], dtype=np.int64)
            h.funding = self._funding(h.fills, start, bound_ms)
            h.funding_times = np.array([p.time for p in h.funding], dtype=np.int64)
        if self.account.ledger_per_day > 0 or self.account.fills_per_day > 0:
            h.ledger = self._ledger(start, bound_ms)
            h.ledger_times = np.array([e.time for e in h.ledger], dtype=np.int64)
        return h

    def _arrivals(self, tag: int, per_day: float, start: int, bound: int) -> I64:
        """Poisson arrival times in ``(start, bound]``, keyed by arrival index (so a
        longer bound only appends)."""
        mean_gap = DAY_MS / per_day
        times: list[I64] = []
        last, i0, block = start, 0, 4096
        while last <= bound:
            idx = np.arange(i0, i0 + block, dtype=np.int64)
            u = uniform(self._key ^ tag, idx)
            gaps = np.maximum(1, np.round(-np.log1p(-u) * mean_gap)).astype(np.int64)
            t = last + np.cumsum(gaps)
            times.append(t)
            last, i0 = int(t[-1]), i0 + block
        all_t = np.concatenate(times)
        return all_t[all_t <= bound]

    def _orders_and_fills(self, start: int, bound: int) -> tuple[list[Order], list[Fill]]:
        acc = self.account
        per_day = acc.fills_per_day / MEAN_PIECES / (1 - CANCEL_PROBABILITY)
        times = self._arrivals(0x0D, per_day, start, bound)
        n = times.shape[0]
        idx = np.arange(n, dtype=np.int64)
        k = self._key

        def draw(tag: int) -> np.ndarray:
            return uniform(k ^ tag, idx)

        coin_i = np.minimum((draw(0x11) * len(acc.coins)).astype(np.int64), len(acc.coins) - 1)
        canceled = draw(0x12) < CANCEL_PROBABILITY
        quick = (~canceled) & (draw(0x13) < QUICK_PROBABILITY)
        u_delay = draw(0x14)
        resting_delay = np.minimum(
            RESTING_MAX_MS, np.maximum(1000, -np.log1p(-u_delay) * RESTING_MEAN_MS))
        delay = np.where(quick, 50 + (u_delay * 2950), resting_delay).astype(np.int64)
        resolved = times + delay
        pieces = np.where(quick, 1 + np.minimum(2, (draw(0x15) * 3).astype(np.int64)), 1)
        notional = acc.order_notional * (0.2 + 0.8 * draw(0x16))
        flip = draw(0x17) < 0.2
        builder = quick & (draw(0x18) < 0.1)
        alo = draw(0x19) < 0.5

        # Prices per coin, vectorised: at placement, at resolution, and the 1m range there.
        place_px = np.empty(n)
        fill_px = np.empty(n)
        low = np.empty(n)
        high = np.empty(n)
        for ci, coin in enumerate(acc.coins):
            sel = coin_i == ci
            sym = self.markets.perps[coin].symbol
            place_px[sel] = self.markets.prices(sym, times[sel])
            fill_px[sel] = self.markets.prices(sym, resolved[sel])
            low[sel], high[sel] = self.markets.minute_range(sym, resolved[sel])

        projected = dict.fromkeys(acc.coins, 0.0)
        phases = {c: (stable_hash64("hl-target", self.seed, acc.address, c) % 10_000) / 10_000
                  for c in acc.coins}
        addr_slot = self._key % 1024
        orders: list[Order] = []
        raw: list[tuple[int, int, Order, int, float, float]] = []  # (time, order, sz...)
        builder_oids: set[int] = set()
        for i in range(n):
            coin = acc.coins[int(coin_i[i])]
            perp = self.markets.perps[coin]
            pxd = self.markets.decimals(perp.symbol)
            t = int(times[i])
            price = float(place_px[i])
            step = 10.0 ** -perp.sz_decimals
            sz = max(step, round(float(notional[i]) / price, perp.sz_decimals))
            cap = 4 * acc.order_notional / price
            angle = 2 * math.pi * (t / TARGET_PERIOD_MS + phases[coin])
            buy = projected[coin] < cap * math.sin(angle)
            if flip[i]:
                buy = not buy
            side: Side = "B" if buy else "A"
            oid = (t - 1_600_000_000_000) * 1024 + addr_slot
            tick = 10.0 ** -pxd
            if canceled[i]:
                limit = round(price * (0.995 if buy else 1.005), pxd)
                order = Order(coin, side, max(limit, tick), sz, oid, t, "Alo" if alo[i] else
                              "Gtc", "canceled", int(resolved[i]), perp.sz_decimals, pxd)
                orders.append(order)
                continue
            projected[coin] = round(projected[coin] + (sz if buy else -sz), perp.sz_decimals)
            px = float(fill_px[i])
            if quick[i]:
                limit = round(px * (1.01 if buy else 0.99), pxd)
                tif = "Ioc"
            else:
                limit = px
                tif = "Alo" if alo[i] else "Gtc"
            order = Order(coin, side, limit, sz, oid, t, tif, "filled", int(resolved[i]),
                          perp.sz_decimals, pxd)
            orders.append(order)
            if builder[i]:
                builder_oids.add(oid)
            steps = round(sz / step)
            parts = max(1, min(int(pieces[i]), steps))
            base, extra = divmod(steps, parts)
            for p in range(parts):
                piece_px = px + (p * tick if buy else -p * tick)
                piece_px = round(min(max(piece_px, float(low[i])), float(high[i])), pxd)
                piece_sz = round((base + (1 if p < extra else 0)) * step, perp.sz_decimals)
                raw.append((int(resolved[i]), oid * 4 + p, order, p, piece_px, piece_sz))
        raw.sort(key=lambda r: (r[0], r[1]))
        return orders, self._fills_from(raw, builder_oids)

    def _fills_from(self, raw: list[tuple[int, int, Order, int, float, float]],
                    builder_oids: set[int]) -> list[Fill]:
        """Fills with running positions, entry prices and closed PnL, in time order."""
        state: dict[str, tuple[float, float]] = {}  # coin -> (szi, entry)
        fills: list[Fill] = []
        for t, _, order, piece, px, sz in raw:
            szi, entry = state.get(order.coin, (0.0, 0.0))
            signed = sz if order.side == "B" else -sz
            new = round(szi + signed, order.sz_decimals)
            closed = 0.0
            if szi != 0 and (szi > 0) != (signed > 0):
                closed = min(abs(signed), abs(szi))
            closed_pnl = round(closed * (px - entry) * (1 if szi > 0 else -1), 6) + 0.0
            crossed = order.tif == "Ioc"
            fee = round(px * sz * (TAKER_FEE if crossed else MAKER_FEE), 6)
            builder_fee = (round(px * sz * BUILDER_FEE, 6)
                           if order.oid in builder_oids else None)
            fill = Fill(
                coin=order.coin, px=px, sz=sz, side=order.side, time=t, start_position=szi,
                dir=_direction(szi, signed, new), closed_pnl=closed_pnl,
                hash=tx_hash("hl-fill", self.seed, self.address, order.oid), oid=order.oid,
                crossed=crossed, fee=fee,
                tid=stable_hash64("hl-tid", self.seed, self.address, order.oid, piece)
                & ((1 << 50) - 1),
                builder_fee=builder_fee, sz_decimals=order.sz_decimals,
                px_decimals=order.px_decimals)
            fills.append(fill)
            state[order.coin] = (new, _entry_after(fill, entry))
        return fills

    def _funding(self, fills: list[Fill], start: int, bound: int) -> list[FundingPayment]:
        first_hour = -(-start // HOUR_MS)
        hours = np.arange(first_hour, bound // HOUR_MS + 1, dtype=np.int64)
        payments: list[FundingPayment] = []
        for coin in self.account.coins:
            perp = self.markets.perps[coin]
            mine = [f for f in fills if f.coin == coin]
            if not mine:
                continue
            f_times = np.array([f.time for f in mine], dtype=np.int64)
            after = np.array([round(f.start_position + f.signed_sz, perp.sz_decimals)
                              for f in mine])
            ft = self.markets.funding_times(coin, hours)
            pos = np.searchsorted(f_times, ft, side="right") - 1
            szi = np.where(pos >= 0, after[np.maximum(pos, 0)], 0.0)
            live = szi != 0
            rate, _ = self.markets.funding_rates(coin, hours[live])
            mark = self.markets.prices(perp.symbol, ft[live])
            usdc = np.round(-szi[live] * mark * rate, 6)
            for t, u, s, r in zip(ft[live].tolist(), usdc.tolist(), szi[live].tolist(),
                                  rate.tolist(), strict=True):
                payments.append(FundingPayment(t, coin, u, s, r, perp.sz_decimals))
        payments.sort(key=lambda p: (p.time, p.coin))
        return payments

    def _ledger(self, start: int, bound: int) -> list[LedgerEvent]:
        acc = self.account
        events = [LedgerEvent(start, tx_hash("hl-ledger", self.seed, self.address, -1),
                              {"type": "deposit", "usdc": _usd(acc.initial_deposit)},
                              acc.initial_deposit)]
        if acc.ledger_per_day <= 0:
            return events
        times = self._arrivals(0x1E, acc.ledger_per_day, start, bound)
        idx = np.arange(times.shape[0], dtype=np.int64)
        kind = uniform(self._key ^ 0x21, idx)
        amount = np.round(100 + 4900 * uniform(self._key ^ 0x22, idx), 2)
        way = uniform(self._key ^ 0x23, idx) < 0.5
        for i in range(times.shape[0]):
            t, usdc, u = int(times[i]), float(amount[i]), float(kind[i])
            other = "0x" + tx_hash("hl-peer", self.seed, self.address, i)[2:42]
            delta: dict[str, Any]
            if u < 0.3:
                delta, effect = {"type": "deposit", "usdc": _usd(usdc)}, usdc
            elif u < 0.5:
                delta = {"type": "withdraw", "usdc": _usd(usdc), "nonce": t,
                         "fee": _usd(WITHDRAW_FEE)}
                effect = -usdc - WITHDRAW_FEE
            elif u < 0.75:
                delta = {"type": "accountClassTransfer", "usdc": _usd(usdc),
                         "toPerp": bool(way[i])}
                effect = usdc if way[i] else -usdc
            elif u < 0.9:
                sender, receiver = (other, self.address) if way[i] else (self.address, other)
                delta = {"type": "internalTransfer", "usdc": _usd(usdc), "user": sender,
                         "destination": receiver, "fee": "0.0"}
                effect = usdc if way[i] else -usdc
            else:
                delta = {"type": "spotTransfer", "token": "USDC", "amount": _usd(usdc),
                         "usdcValue": _usd(usdc), "user": self.address, "destination": other,
                         "fee": "0.0", "nativeTokenFee": "0.0", "nonce": None}
                effect = 0.0  # a spot balance moves; the perp account does not
            events.append(LedgerEvent(t, tx_hash("hl-ledger", self.seed, self.address, i),
                                      delta, effect))
        return events


def _direction(szi: float, signed: float, new: float) -> str:
    """Hyperliquid's ``dir`` of a perp fill."""
    if szi == 0:
        return "Open Long" if signed > 0 else "Open Short"
    if szi > 0:
        if signed > 0:
            return "Open Long"
        return "Close Long" if new >= 0 else "Long > Short"
    if signed < 0:
        return "Open Short"
    return "Close Short" if new <= 0 else "Short > Long"


def _entry_after(fill: Fill, entry: float) -> float:
    """The position's entry price after ``fill``: average of opening fills, unchanged by
    reductions, the fill's price after a flip, 0 when flat."""
    szi = fill.start_position
    new = round(szi + fill.signed_sz, fill.sz_decimals)
    if new == 0:
        return 0.0
    if szi == 0 or (szi > 0) != (new > 0):
        return fill.px
    if (szi > 0) == (fill.signed_sz > 0):
        return (entry * abs(szi) + fill.px * fill.sz) / abs(new)
    return entry


def _usd(x: float) -> str:
    return fmt_num(x, 6)


__all__ = ["AccountModel", "Fill", "FundingPayment", "LedgerEvent", "Order", "OrderStatus",
           "Position", "Side", "fmt_num", "tx_hash"]
