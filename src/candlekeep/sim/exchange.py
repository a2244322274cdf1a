"""An in-memory exchange: listings, scripted holes, late data and faults over the generator.

Everything that decides *where* something happens (holes, late candles) is a pure function
of the seed, the symbol and time, so two runs agree and a test can ask the model what to
expect. The only state is what a real exchange would have too: which late candles have been
served already, the rate-limit window, bans, and a queue of faults a test forced.

Binance is the model: ``klines`` follows its startTime/endTime/limit semantics, the weight
budget is counted per client IP in fixed windows aligned to the epoch, a client that keeps
sending during a 429's Retry-After gets a 418 ban. The budget enforced can be smaller than
the one exchangeInfo advertises (another program on the same IP, a stricter endpoint): the
used-weight header then reports the true count, as Binance's would.

Three APIs, as Binance has them: spot (``/api``), USDⓈ-M futures (``/fapi``, linear
perpetuals ``BTC/USDT:USDT``) and COIN-M futures (``/dapi``, inverse perpetuals
``BTC/USD:BTC`` whose volume counts contracts of a fixed USD size). Each has its own weight
window.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa

from candlekeep.core.clock import Clock, SystemClock
from candlekeep.core.timeframes import DAY_MS, MINUTE_MS, parse_timeframe
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.generator import (
    I64,
    CandleArrays,
    CandleGenerator,
    base_asset,
    price_decimals,
    stable_hash64,
    uniform,
)
from candlekeep.sim.orderbook import SimBook, order_book

Api = Literal["spot", "fapi", "dapi"]
FaultKind = Literal["429", "418", "451", "500", "502", "503", "504", "truncate", "slow",
                    "high_low", "off_grid", "duplicate"]

DEFAULT_SYMBOLS: dict[str, str] = {
    "BTC/USDT": "2017-08-17",
    "ETH/USDT": "2017-08-17",
    "BNB/USDT": "2017-11-06",
    "SOL/USDT": "2020-08-11",
}

COINM_CONTRACT_USD: dict[str, float] = {"BTC": 100.0}
"""Binance's COIN-M contract sizes in USD: 100 for BTC, 10 for every other coin."""
COINM_DEFAULT_CONTRACT_USD = 10.0


def coinm_contract_size(base: str) -> float:
    """The USD value of one COIN-M contract of ``base``."""
    return COINM_CONTRACT_USD.get(base, COINM_DEFAULT_CONTRACT_USD)


@dataclass(frozen=True, slots=True)
class HoleSpec:
    """Exchange-side holes (maintenance): at most one per ``period_ms`` per symbol.

    With probability ``probability`` a period holds one hole starting at a random minute of
    the period and lasting ``min_minutes``..``max_minutes``. A candle is absent when its whole
    interval lies inside a hole, so short timeframes lose candles and long ones do not.
    """

    period_ms: int = DAY_MS
    probability: float = 1.0
    min_minutes: int = 5
    max_minutes: int = 30


@dataclass(frozen=True, slots=True)
class TransientSpec:
    """Late data: candles missing from the first reply that covers them, present afterwards.

    With probability ``probability`` a period holds one late window of ``min_minutes``..
    ``max_minutes`` per symbol and timeframe (see ``SimExchange.late_windows``).
    """

    period_ms: int = DAY_MS
    probability: float = 0.3
    min_minutes: int = 1
    max_minutes: int = 3


@dataclass(frozen=True, slots=True)
class Hole:
    """An explicit hole ``[start_ms, end_ms)``; ``symbol`` None means every symbol."""

    start_ms: int
    end_ms: int
    symbol: str | None = None


@dataclass(frozen=True, slots=True)
class Faults:
    """Rate limits and injected failures; random draws come from ``seed`` in request order.

    Weight limits apply per API (spot ``/api``, USDⓈ-M ``/fapi``, COIN-M ``/dapi``) and
    client IP in fixed windows of ``window_s``. ``weight_limit`` (and the fapi/dapi ones) is
    what exchangeInfo advertises; ``enforced_*`` what is enforced, when smaller. The first
    request over budget gets a 429 whose Retry-After runs to the end of the window; every
    request during that Retry-After is another violation (another 429), and more than
    ``ban_after`` violations in one such episode (the first included) get a 418 ban of
    ``ban_s`` seconds; so does the ``ban_episodes``-th episode within ``ban_episodes_windows``
    windows ("repeatedly violating rate limits ... will result in an automated IP ban").
    Each further ban of the same IP lasts twice the one before, up to ``ban_max_s`` (Binance:
    "from 2 minutes to 3 days").
    """

    weight_limit: int = 6000
    fapi_weight_limit: int = 2400
    dapi_weight_limit: int = 2400
    enforced_weight_limit: int | None = None
    enforced_fapi_weight_limit: int | None = None
    enforced_dapi_weight_limit: int | None = None
    window_s: float = 60.0
    ban_after: int = 5
    ban_s: float = 120.0
    ban_episodes: int = 4
    ban_episodes_windows: int = 10
    ban_max_s: float = 259_200.0
    error_rate: float = 0.0  # probability that a request starts a burst of 5xx
    error_burst: int = 1  # consecutive 5xx per burst
    error_status: int = 503
    truncate_rate: float = 0.0  # probability of a 200 with a truncated JSON body
    slow_rate: float = 0.0  # probability of a delayed reply (real seconds over HTTP)
    slow_s: float = 0.5
    corrupt_rate: float = 0.0  # probability of an invalid candle in a klines reply
    corrupt_kind: Literal["high_low", "off_grid", "duplicate"] = "high_low"
    seed: int = 0


@dataclass(slots=True)
class Admission:
    """The verdict on one request: serve it (status 200, possibly damaged) or fail it."""

    status: int = 200
    used_weight: int = 0
    retry_after_s: int | None = None
    delay_s: float = 0.0
    truncate: bool = False
    corrupt: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(slots=True)
class _Forced:
    kind: FaultKind
    endpoint: str
    retry_after_s: int | None
    delay_s: float | None


@dataclass(slots=True)
class _RateState:
    window_index: int = -1
    used: int = 0
    violations: int = 0  # requests over budget or during Retry-After, this episode
    retry_until_ms: int = 0
    banned_until_ms: int = 0
    episodes: deque[int] = field(default_factory=deque)  # window index of each episode
    bans: int = 0


@dataclass(frozen=True, slots=True)
class Delisting:
    """A market that stopped trading at ``at``: no candles (and no archive files) after it.

    Binance keeps a delisted USDⓈ-M perpetual in exchangeInfo for a while with status
    ``SETTLING`` (CCXT marks it inactive), then drops it; its archive files stay. With
    ``in_exchange_info=False`` the market is already dropped: only the archive knows it.
    """

    at: int | str
    in_exchange_info: bool = True


@dataclass(frozen=True, slots=True)
class SimMarket:
    """One market of one API.

    A COIN-M perpetual (``BTC/USD:BTC``, id ``BTCUSD_PERP``) has a ``contract_size`` (its
    volume counts contracts of that many USD) and shares the holes of the USDⓈ-M perpetual
    of its coin (``holes_of``): maintenance hits both futures markets alike.
    """

    symbol: str  # unified: BTC/USDT, BTC/USDT:USDT (USDⓈ-M), BTC/USD:BTC (COIN-M)
    market_id: str  # exchange id: BTCUSDT, BTCUSD_PERP
    base: str
    quote: str
    listing_ms: int
    price_decimals: int
    delisting_ms: int | None = None
    in_exchange_info: bool = True
    contract_size: float | None = None  # inverse markets only
    holes_of: str | None = None  # the symbol whose holes this market shares

    @property
    def inverse(self) -> bool:
        return self.contract_size is not None

    def trading(self, now_ms: int) -> bool:
        """Listed and not delisted at ``now_ms``."""
        return self.listing_ms <= now_ms and (self.delisting_ms is None
                                              or now_ms < self.delisting_ms)


def _listing(value: int | str | None) -> int:
    if value is None:
        return to_ms("2017-01-01")
    return to_ms(value)


class SimExchange:
    """The exchange model shared by the in-process SimSource and the HTTP server."""

    def __init__(
        self,
        seed: int = 7,
        symbols: Mapping[str, int | str | None] | Iterable[str] | None = None,
        *,
        clock: Clock | None = None,
        holes: HoleSpec | None = HoleSpec(),
        transient: TransientSpec | None = TransientSpec(),
        extra_holes: Iterable[Hole] = (),
        faults: Faults | None = None,
        delistings: Mapping[str, Delisting | int | str] | None = None,
    ) -> None:
        """``delistings`` maps a symbol of ``symbols`` (spot form, ``OLD/USDT``) to when it
        stopped trading, on spot and futures alike."""
        self.seed = seed
        self.clock: Clock = clock or SystemClock()
        self.generator = CandleGenerator(seed)
        self.holes = holes
        self.transient = transient
        self.extra_holes = tuple(extra_holes)
        self.faults = faults or Faults()
        if symbols is None:
            symbols = DEFAULT_SYMBOLS
        listed = (
            {s: _listing(v) for s, v in symbols.items()}
            if isinstance(symbols, Mapping)
            else {s: _listing(None) for s in symbols}
        )
        delisted = {s: d if isinstance(d, Delisting) else Delisting(d)
                    for s, d in (delistings or {}).items()}
        unknown = sorted(set(delisted) - set(listed))
        if unknown:
            raise ValueError(f"delistings name symbols the sim does not list: {unknown}")
        self._spot: dict[str, SimMarket] = {}
        self._fapi: dict[str, SimMarket] = {}
        self._dapi: dict[str, SimMarket] = {}
        for symbol, listing_ms in listed.items():
            base, quote = symbol.split(":", 1)[0].split("/", 1)
            perp = f"{base}/{quote}:{quote}"
            gone = delisted.get(symbol)
            end_ms = None if gone is None else to_ms(gone.at)
            in_info = gone is None or gone.in_exchange_info
            self._spot[base + quote] = SimMarket(symbol, base + quote, base, quote, listing_ms,
                                                 price_decimals(seed, symbol), end_ms, in_info)
            self._fapi[base + quote] = SimMarket(perp, base + quote, base, quote, listing_ms,
                                                 price_decimals(seed, perp), end_ms, in_info)
            # One COIN-M perpetual per coin (the first quote listed gives its dates).
            inverse = f"{base}/USD:{base}"
            self._dapi.setdefault(f"{base}USD_PERP", SimMarket(
                inverse, f"{base}USD_PERP", base, "USD", listing_ms,
                price_decimals(seed, inverse), end_ms, in_info, coinm_contract_size(base),
                holes_of=perp))
        self._apis: dict[Api, dict[str, SimMarket]] = {"spot": self._spot, "fapi": self._fapi,
                                                       "dapi": self._dapi}
        self._by_symbol = {m.symbol: m for markets in self._apis.values()
                           for m in markets.values()}
        self._lock = threading.Lock()
        self._served: set[tuple[str, str, int]] = set()
        self._rate: dict[tuple[Api, str], _RateState] = {}
        self._forced: deque[_Forced] = deque()
        self._rng = random.Random(self.faults.seed)
        self._burst_left = 0
        self.requests = 0
        self.rejected = 0
        self.rate_limited = 0
        """429 replies for the weight budget (forced ones not counted)."""
        self.banned = 0
        """418 replies for a ban (forced ones not counted)."""

    # ----------------------------------------------------------------- markets

    def markets(self, api: Api = "spot") -> list[SimMarket]:
        """Every market ever listed, delisted ones included (the archive serves them all)."""
        return list(self._apis[api].values())

    def info_markets(self, api: Api = "spot") -> list[SimMarket]:
        """The markets exchangeInfo shows: all but the delisted ones already dropped."""
        return [m for m in self.markets(api) if m.in_exchange_info]

    def market_by_id(self, api: Api, market_id: str) -> SimMarket | None:
        return self._apis[api].get(market_id)

    def market(self, symbol: str) -> SimMarket:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise KeyError(f"sim exchange has no market {symbol!r}") from None

    @property
    def symbols(self) -> list[str]:
        return [m.symbol for m in self._spot.values()]

    # ----------------------------------------------------------------- holes

    def _windows(self, tag: str, symbol: str, period_ms: int, probability: float,
                 min_minutes: int, max_minutes: int, period: I64,
                 ) -> tuple[np.ndarray, I64, I64]:
        """The scripted window of each period index: (present, start_ms, duration_ms)."""
        key = stable_hash64(tag, self.seed, base_asset(symbol), symbol)
        present = uniform(key ^ 0xA1, period) < probability
        span_minutes = max(1, period_ms // MINUTE_MS)
        start = period * period_ms + (uniform(key ^ 0xB2, period) * span_minutes).astype(
            np.int64) * MINUTE_MS
        minutes = min_minutes + (uniform(key ^ 0xC3, period)
                                 * (max_minutes - min_minutes + 1)).astype(np.int64)
        return present, start, minutes * MINUTE_MS

    def hole_mask(self, symbol: str, timeframe: str, ts: I64) -> np.ndarray:
        """True where a candle does not exist on the exchange (maintenance, before listing)."""
        tf = parse_timeframe(timeframe)
        market = self.market(symbol)
        absent = ts < tf.floor(market.listing_ms)
        if market.delisting_ms is not None:
            absent |= ts >= market.delisting_ms
        holes_of = market.holes_of or symbol
        if self.holes is not None and self.holes.probability > 0:
            h = self.holes
            for back in (0, 1):  # a hole may spill over from the previous period
                present, start, dur = self._windows("hole", holes_of, h.period_ms,
                                                    h.probability, h.min_minutes,
                                                    h.max_minutes, ts // h.period_ms - back)
                absent |= present & (start <= ts) & (ts + tf.ms <= start + dur)
        for hole in self.extra_holes:
            if hole.symbol is None or hole.symbol == holes_of:
                absent |= (hole.start_ms <= ts) & (ts + tf.ms <= hole.end_ms)
        return absent

    def late_windows(self, symbol: str, timeframe: str, ts: I64) -> np.ndarray:
        """Per candle, the id of the late-data window it belongs to, or -1.

        A candle is late when its open time falls in a window of ``max(duration, timeframe)``:
        per period that is a minute or three of 1m candles and exactly one candle of any
        longer timeframe, so every timeframe sees about as many late events. Timeframes
        longer than the period use their own length as the period.
        """
        result = np.full(ts.shape[0], -1, dtype=np.int64)
        t = self.transient
        if t is None or t.probability <= 0:
            return result
        tf_ms = parse_timeframe(timeframe).ms
        period_ms = max(t.period_ms, tf_ms)
        for back in (0, 1):
            period = ts // period_ms - back
            present, start, dur = self._windows("late", symbol, period_ms, t.probability,
                                                t.min_minutes, t.max_minutes, period)
            hit = present & (start <= ts) & (ts < start + np.maximum(dur, tf_ms))
            result = np.where(hit & (result < 0), period, result)
        return result

    def expected(self, symbol: str, timeframe: str, start_ms: int, end_ms: int, *,
                 source: str = "sim") -> pa.Table:
        """The closed candles that exist in ``[start_ms, end_ms)`` once late data arrived."""
        tf = parse_timeframe(timeframe)
        end_ms = min(end_ms, tf.floor(self.clock.now_ms()))
        first = tf.ceil(start_ms)
        ts = np.arange(first, max(first, end_ms), tf.ms, dtype=np.int64)
        ts = ts[~self.hole_mask(symbol, timeframe, ts)]
        return self.candle_arrays(symbol, timeframe, ts).to_table(source, symbol, timeframe, 0)

    def candle_arrays(self, symbol: str, timeframe: str, ts: I64) -> CandleArrays:
        """The candles of ``symbol`` opening at ``ts``: what klines, the archive and
        ``expected`` all serve.

        An inverse market trades whole contracts, so its quote (USD) volume is rounded to a
        whole number of contracts here, and its base volume is that USD amount at the
        candle's mean price: the contract count a reply or a file shows, times the contract
        size, is then exactly the stored quote volume.
        """
        arrays = self.generator.arrays(symbol, timeframe, ts)
        size = self.market(symbol).contract_size
        if size is None:
            return arrays
        contracts = np.round(arrays.quote_volume / size)
        quote = contracts * size
        mid = (arrays.open + arrays.high + arrays.low + arrays.close) / 4.0
        base = np.round(quote / mid, 8)
        return CandleArrays(arrays.ts, arrays.open, arrays.high, arrays.low, arrays.close,
                            base, quote, arrays.trades)

    # ----------------------------------------------------------------- klines

    def klines(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
        *,
        newest: bool = False,
        corrupt: str | None = None,
    ) -> CandleArrays:
        """Candles as Binance returns them: open time in [start, end] (both inclusive),
        ascending, at most ``limit``, including the still-open current candle; without
        ``start_ms`` the newest ``limit`` candles up to ``end_ms`` (or now).

        ``newest`` is COIN-M's rule: the newest ``limit`` candles of [start, end], where
        spot and USDⓈ-M give the oldest.
        """
        tf = parse_timeframe(timeframe)
        now_open = tf.floor(self.clock.now_ms())
        delisted = self.market(symbol).delisting_ms
        if delisted is not None:  # nothing to scan for after the last candle
            now_open = min(now_open, tf.floor(delisted - 1))
        hi = now_open if end_ms is None else min(tf.floor(end_ms), now_open)
        if limit <= 0:
            return self.candle_arrays(symbol, timeframe, np.empty(0, np.int64))
        chunk = limit + 64
        picked: list[I64] = []
        count = 0
        floor = tf.floor(self.market(symbol).listing_ms)
        if start_ms is not None:
            floor = max(floor, tf.ceil(start_ms))
        if start_ms is not None and not newest:
            cursor = floor
            while count < limit and cursor <= hi:
                stop = min(hi + 1, cursor + chunk * tf.ms)
                ts = np.arange(cursor, stop, tf.ms, dtype=np.int64)
                ts = ts[~self.hole_mask(symbol, timeframe, ts)]
                picked.append(ts)
                count += ts.shape[0]
                cursor = stop
            ts = np.concatenate(picked) if picked else np.empty(0, np.int64)
            ts = self._drop_late(symbol, timeframe, ts, limit, forward=True)
        else:
            cursor = hi + tf.ms
            while count < limit and cursor > floor:
                lo = max(floor, cursor - chunk * tf.ms)
                lo = tf.ceil(lo)
                ts = np.arange(lo, cursor, tf.ms, dtype=np.int64)
                ts = ts[~self.hole_mask(symbol, timeframe, ts)]
                picked.insert(0, ts)
                count += ts.shape[0]
                cursor = lo
            ts = np.concatenate(picked) if picked else np.empty(0, np.int64)
            ts = self._drop_late(symbol, timeframe, ts, limit, forward=False)
        arrays = self.candle_arrays(symbol, timeframe, ts)
        kind = corrupt
        return _corrupt(arrays, kind, tf.ms) if kind and len(arrays) else arrays

    def _drop_late(self, symbol: str, timeframe: str, ts: I64, limit: int, *,
                   forward: bool) -> I64:
        """Remove late candles not served yet, remember them as served, apply ``limit``."""
        windows = self.late_windows(symbol, timeframe, ts)
        if not (windows >= 0).any():
            return ts[:limit] if forward else ts[-limit:]
        with self._lock:
            unserved = [w for w in np.unique(windows[windows >= 0]).tolist()
                        if (symbol, timeframe, w) not in self._served]
            late = np.isin(windows, unserved)
            kept = ts[~late]
            truncated = kept.shape[0] > limit
            kept = kept[:limit] if forward else kept[-limit:]
            # Only late candles inside the span the reply covered count as served.
            covered = late
            if truncated:
                covered = late & (ts <= kept[-1] if forward else ts >= kept[0])
            for w in np.unique(windows[covered]).tolist():
                self._served.add((symbol, timeframe, int(w)))
        return kept

    def table(self, symbol: str, timeframe: str, arrays: CandleArrays, *,
              source: str = "sim") -> pa.Table:
        return arrays.to_table(source, symbol, timeframe, self.clock.now_ms())

    def order_book(self, symbol: str, limit: int) -> SimBook:
        """``limit`` levels a side of ``symbol``'s book now (see ``sim.orderbook``): mid at
        the close of the last closed 1m candle."""
        self.market(symbol)  # KeyError for a market the sim does not list
        return order_book(self.generator, symbol, self.clock.now_ms(), limit)

    # ----------------------------------------------------------------- faults

    def force(self, kind: FaultKind, count: int = 1, *, endpoint: str = "klines",
              retry_after_s: int | None = None, delay_s: float | None = None) -> None:
        """Make the next ``count`` requests to ``endpoint`` ("klines", "exchangeInfo", "*")
        fail or misbehave with ``kind``."""
        with self._lock:
            for _ in range(count):
                self._forced.append(_Forced(kind, endpoint, retry_after_s, delay_s))

    def clear_forced(self) -> None:
        with self._lock:
            self._forced.clear()

    def weight_limit(self, api: Api) -> int:
        f = self.faults
        return {"spot": f.weight_limit, "fapi": f.fapi_weight_limit,
                "dapi": f.dapi_weight_limit}[api]

    def enforced_limit(self, api: Api) -> int:
        """The weight budget actually enforced (at most the advertised one)."""
        f = self.faults
        enforced = {"spot": f.enforced_weight_limit, "fapi": f.enforced_fapi_weight_limit,
                    "dapi": f.enforced_dapi_weight_limit}[api]
        advertised = self.weight_limit(api)
        return advertised if enforced is None else min(enforced, advertised)

    def used_weight(self, api: Api, ip: str | None = None) -> int:
        """Weight counted in the current window, for ``ip`` or summed over all IPs."""
        with self._lock:
            window = self._window_index()
            return sum(state.used for (a, who), state in self._rate.items()
                       if a == api and (ip is None or who == ip)
                       and state.window_index == window)

    def _window_index(self) -> int:
        return int(self.clock.now_ms() // int(self.faults.window_s * 1000))

    def admit(self, api: Api, endpoint: str, weight: int, ip: str = "") -> Admission:
        """Count the request's weight against ``ip``'s budget and decide its fate; cheap,
        called on every request."""
        f = self.faults
        now = self.clock.now_ms()
        window_ms = int(f.window_s * 1000)
        with self._lock:
            self.requests += 1
            state = self._rate.setdefault((api, ip), _RateState())
            window = now // window_ms
            if state.window_index != window:
                state.window_index = window
                state.used = 0
            state.used += weight
            adm = Admission(used_weight=state.used)
            in_retry = now < state.retry_until_ms
            if state.banned_until_ms > now:
                adm.status, adm.reason = 418, "banned"
                adm.retry_after_s = _ceil_s(state.banned_until_ms - now)
                self.banned += 1
            elif in_retry or state.used > self.enforced_limit(api):
                if not in_retry:  # a new episode: Retry-After runs to the window's end
                    state.violations = 0
                    state.retry_until_ms = (window + 1) * window_ms
                    state.episodes.append(window)
                    while state.episodes[0] <= window - f.ban_episodes_windows:
                        state.episodes.popleft()
                state.violations += 1
                if state.violations > f.ban_after or len(state.episodes) >= f.ban_episodes:
                    ban_ms = int(min(f.ban_max_s, f.ban_s * 2 ** state.bans) * 1000)
                    state.bans += 1
                    state.banned_until_ms = now + ban_ms
                    state.violations = 0
                    state.retry_until_ms = 0
                    state.episodes.clear()
                    adm.status, adm.reason = 418, "banned"
                    adm.retry_after_s = _ceil_s(ban_ms)
                    self.banned += 1
                else:
                    adm.status, adm.reason = 429, "rate limit"
                    adm.retry_after_s = _ceil_s(state.retry_until_ms - now)
                    self.rate_limited += 1
            else:
                self._apply_forced(adm, endpoint)
                if adm.ok and adm.reason == "":
                    self._apply_random(adm, endpoint)
            if not adm.ok:
                self.rejected += 1
            return adm

    def _apply_forced(self, adm: Admission, endpoint: str) -> None:
        for i, forced in enumerate(self._forced):
            if forced.endpoint in ("*", endpoint):
                del self._forced[i]
                break
        else:
            return
        kind = forced.kind
        adm.reason = f"forced {kind}"
        if kind in ("429", "418"):
            adm.status = int(kind)
            adm.retry_after_s = forced.retry_after_s if forced.retry_after_s is not None else 1
        elif kind in ("451", "500", "502", "503", "504"):
            adm.status = int(kind)
        elif kind == "truncate":
            adm.truncate = True
        elif kind == "slow":
            adm.delay_s = forced.delay_s if forced.delay_s is not None else self.faults.slow_s
        else:
            adm.corrupt = kind

    def _apply_random(self, adm: Admission, endpoint: str) -> None:
        f = self.faults
        if self._burst_left > 0:
            self._burst_left -= 1
            adm.status, adm.reason = f.error_status, "error burst"
            return
        if f.error_rate > 0 and self._rng.random() < f.error_rate:
            self._burst_left = max(0, f.error_burst - 1)
            adm.status, adm.reason = f.error_status, "error burst"
            return
        if f.truncate_rate > 0 and self._rng.random() < f.truncate_rate:
            adm.truncate = True
        if f.slow_rate > 0 and self._rng.random() < f.slow_rate:
            adm.delay_s = f.slow_s
        if endpoint == "klines" and f.corrupt_rate > 0 and self._rng.random() < f.corrupt_rate:
            adm.corrupt = f.corrupt_kind


def spot_klines_weight(limit: int) -> int:
    """Binance spot today: 2 whatever the limit."""
    return 2


def fapi_klines_weight(limit: int) -> int:
    """Binance USDⓈ-M and COIN-M futures: weight steps by limit."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def _ceil_s(ms: int) -> int:
    return max(1, -(-ms // 1000))


def _corrupt(arrays: CandleArrays, kind: str, tf_ms: int) -> CandleArrays:
    """A copy of ``arrays`` with one invalid candle of the requested kind."""
    a = arrays.take(slice(None))
    ts, high, low = a.ts.copy(), a.high.copy(), a.low.copy()
    i = len(a) // 2
    if kind == "high_low":
        high[i], low[i] = low[i] * 0.99, high[i] * 1.01
    elif kind == "off_grid":
        ts[i] += 1_000
    elif kind == "duplicate" and len(a) > 1:
        ts[i] = ts[i - 1] if i > 0 else ts[1]
    return CandleArrays(ts, a.open, high, low, a.close, a.volume, a.quote_volume, a.trades)


__all__ = [
    "COINM_CONTRACT_USD",
    "DEFAULT_SYMBOLS",
    "Admission",
    "Delisting",
    "Faults",
    "Hole",
    "HoleSpec",
    "SimExchange",
    "SimMarket",
    "TransientSpec",
    "coinm_contract_size",
    "fapi_klines_weight",
    "spot_klines_weight",
]
