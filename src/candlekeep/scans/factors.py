"""A scan's factors: per symbol, raw inputs from one candles table and the latest order
book, each scaled to 0-100, with the reason a symbol cannot be scored.

Everything is computed over whole columns: the candles of all symbols sit in one table
sorted by (symbol, ts), each symbol one contiguous segment, and every input is a gather or
a segment reduction over those boundaries (no Python loop per row or per symbol).

Raw inputs (each from the symbol's newest candle, "last"):

* ``ret_1h`` / ``ret_4h`` / ``ret_24h``: ``close[last] / close[last.ts - h] - 1``, the bar
  exactly h before the newest (by time): with that bar missing (a gap) the return is null
  rather than a longer one; null too when the history is shorter than h.
* ``rsi``: Wilder's RSI(14): average gain and loss seeded with the mean of the first 14
  close-to-close changes, then ``avg = avg·13/14 + change/14``; 100 when nothing fell (50
  when nothing moved). Needs 15 bars.
* ``ma_distance``: ``close[last] / mean(close of the last 20 bars) - 1``. Needs 20 bars.
* ``vadr``: ``volume[last] / mean(volume of the 20 bars before it)``. Needs 20 bars before
  the last (21 in all); otherwise null and ``vadr_note`` says why (never a made-up value).
* ``spread_bps`` / ``depth_usd`` / ``venue``: the symbol's newest order-book snapshot.
  ``depth_usd`` is its ``depth_quote`` (the thinner side within ±2 % of mid, in the quote
  currency) when the quote is USD-like (``USD_QUOTES``); for another quote it is null and
  the reason says "quote currency X is not USD" (no conversion is guessed).
* Freshness: candles are fresh when the newest one opened within ``2 x timeframe`` of now
  (the forming bar or the last closed one is stored); a symbol whose candles are not fresh
  is not scored (its factors are null, the reason names its newest candle's time), its raw
  inputs are still listed. A book is fresh when taken within ``BOOK_FRESH_MS``; a stale
  book's spread and depth stay in the table (``fresh_book`` false, quality loses its
  freshness share) but the gates read them as missing (``scoring.gate_values``).

The 0-100 scalings are the ``*_score`` functions below (each documents its mapping). A
symbol with a factor that cannot be computed keeps its raw inputs, gets null factors where
they are missing and a ``reason``; it is never scored 0 nor dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.config.scans import STABLECOINS
from candlekeep.core.schema import TS_TYPE
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS, parse_timeframe

F64, STR, BOOL = pa.float64(), pa.string(), pa.bool_()

HORIZONS_MS = (HOUR_MS, 4 * HOUR_MS, DAY_MS)
MOMENTUM_WEIGHTS = (0.2, 0.3, 0.5)
"""Weights of the 1h, 4h and 24h returns in momentum (the longer move counts most)."""
MOMENTUM_FULL_SCALE = 0.01
"""A weighted return of ±1 % per √hour maps to 100 / 0 (see ``momentum_score``)."""
RSI_PERIOD = 14
MA_BARS = 20
VADR_BARS = 20
MA_FULL_SCALE = 0.05
"""A close ±5 % from its 20-bar mean maps to 100 / 0 in the technical factor."""
SPREAD_ZERO_BPS = 100.0
"""A spread this wide (or wider) scores 0 in quality; 0 bps scores 100."""
DEPTH_FLOOR_USD, DEPTH_FULL_USD = 10_000.0, 1_000_000.0
"""Depth scores 0 at or under 10k USD, 100 at or over 1M, log-linear between (100k → 50)."""
BOOK_FRESH_MS = 30 * MINUTE_MS
"""An order-book snapshot older than this is stale: it costs quality its freshness share and
the spread and depth gates read it as missing."""
USD_QUOTES = frozenset({"USD"} | {s for s in STABLECOINS if not s.startswith("EUR")})
"""Quote currencies whose depth counts as USD (the dollar and dollar stablecoins)."""

FACTORS_SCHEMA = pa.schema([
    pa.field("symbol", STR, nullable=False),
    pa.field("source", STR),           # where the candles came from
    pa.field("bars", pa.int64(), nullable=False),
    pa.field("last_ts", TS_TYPE),
    pa.field("close", F64),
    pa.field("ret_1h", F64), pa.field("ret_4h", F64), pa.field("ret_24h", F64),
    pa.field("rsi", F64), pa.field("ma_distance", F64),
    pa.field("vadr", F64), pa.field("vadr_note", STR),
    pa.field("venue", STR),            # where the order book came from
    pa.field("book_ts", TS_TYPE),
    pa.field("spread_bps", F64), pa.field("depth_usd", F64),
    pa.field("fresh_candles", BOOL, nullable=False),
    pa.field("fresh_book", BOOL, nullable=False),
    pa.field("fresh", BOOL, nullable=False),  # both fresh
    pa.field("momentum", F64), pa.field("technical", F64),
    pa.field("volume", F64), pa.field("quality", F64),
    pa.field("reason", STR),           # why the symbol cannot be scored; null when it can
])
FACTOR_NAMES = ("momentum", "technical", "volume", "quality")

VADR_SHORT = f"fewer than {VADR_BARS} bars before the last"
VADR_NO_VOLUME = f"no volume in the {VADR_BARS} bars before the last"


def _clip100(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(x, 0.0, 100.0), float)


def momentum_score(ret_1h: np.ndarray, ret_4h: np.ndarray, ret_24h: np.ndarray) -> np.ndarray:
    """``clip(50 + 50 · R / 1 %)`` with ``R = .2·r1h/√1 + .3·r4h/√4 + .5·r24h/√24``: each
    return is divided by the square root of its hours, so moves of equal surprise (under a
    random walk) weigh the same; R = 0 → 50, R ≥ +1 % → 100, R ≤ -1 % → 0."""
    per_root_hour = [r / np.sqrt(h / HOUR_MS) for r, h in zip(
        (ret_1h, ret_4h, ret_24h), HORIZONS_MS, strict=True)]
    weighted = sum(w * r for w, r in zip(MOMENTUM_WEIGHTS, per_root_hour, strict=True))
    return _clip100(50.0 + 50.0 * np.asarray(weighted) / MOMENTUM_FULL_SCALE)


def technical_score(rsi: np.ndarray, ma_distance: np.ndarray) -> np.ndarray:
    """The mean of RSI (already 0-100) and ``clip(50 + 50 · distance / 5 %)``: strength
    scores high; overbought is not penalised here (the gates and the reader judge that)."""
    return 0.5 * rsi + 0.5 * _clip100(50.0 + 50.0 * ma_distance / MA_FULL_SCALE)


def volume_score(vadr: np.ndarray) -> np.ndarray:
    """Piecewise linear: VADR 0 → 0, 1 (an ordinary bar) → 50, 3 or more → 100 (so the hot
    gate's 1.8 is 70 and 2.0 is 75)."""
    return np.where(vadr <= 1.0, 50.0 * np.clip(vadr, 0.0, 1.0),
                    np.minimum(50.0 + 25.0 * (vadr - 1.0), 100.0))


def quality_score(spread_bps: np.ndarray, depth_usd: np.ndarray,
                  fresh_candles: np.ndarray, fresh_book: np.ndarray) -> np.ndarray:
    """``.4 · spread + .4 · depth + .2 · freshness``: spread 0 bps → 100, ≥ 100 bps → 0
    (linear); depth ≤ 10k USD → 0, ≥ 1M → 100, log10-linear between; freshness 100 with
    fresh candles and a fresh book, 50 with one of them, 0 with neither."""
    spread = _clip100(100.0 * (1.0 - spread_bps / SPREAD_ZERO_BPS))
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.maximum(depth_usd, DEPTH_FLOOR_USD))
    lo, hi = np.log10(DEPTH_FLOOR_USD), np.log10(DEPTH_FULL_USD)
    depth = _clip100(100.0 * (logs - lo) / (hi - lo))
    depth = np.where(np.isnan(depth_usd), np.nan, depth)
    fresh = 50.0 * (fresh_candles.astype(float) + fresh_book.astype(float))
    return np.asarray(0.4 * spread + 0.4 * depth + 0.2 * fresh, float)


def _segments(symbol: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(names, starts, ends inclusive) of runs of equal symbols; ValueError when a symbol
    occurs in more than one run (the table is not sorted by symbol)."""
    encoded = pc.dictionary_encode(symbol)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [len(codes)]]).astype(np.int64) - 1
    if len(starts) != len(encoded.dictionary):
        raise ValueError("not sorted by symbol")
    return encoded.dictionary.take(pa.array(codes[starts])), starts, ends


def _sorted(table: pa.Table) -> pa.Table:
    """``table`` sorted by (symbol, ts) unless it already is (the stores' usual order)."""
    if table.num_rows < 2:
        return table
    sym = table["symbol"]
    ts = table["ts"].cast(pa.int64()).to_numpy()
    ordered = pc.all(pc.less_equal(sym[:-1], sym[1:])).as_py()
    same = pc.equal(sym[:-1], sym[1:]).to_numpy(zero_copy_only=False)
    if ordered and not np.any(same & (ts[1:] <= ts[:-1])):
        return table
    return table.sort_by([("symbol", "ascending"), ("ts", "ascending")])


def _gather(values: np.ndarray, idx: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``values[idx]`` where ``ok`` (broadcast over idx's rows), NaN elsewhere."""
    out = values[np.clip(idx, 0, max(len(values) - 1, 0))] if len(values) else np.full(
        idx.shape, np.nan)
    ok = ok.reshape(ok.shape + (1,) * (idx.ndim - 1))
    return np.where(ok, out, np.nan)


def _wilder_last(change: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 enough: np.ndarray) -> np.ndarray:
    """Wilder's average of ``change`` (indexed by row; a segment's first row is unused) at
    each segment's end, in closed form: ``seed·k^(n-14) + Σ (1/14)·k^(end-i)·x_i`` over
    the changes after the 14 that seed it, with ``k = 13/14``."""
    n = RSI_PERIOD
    k = (n - 1) / n
    seed = _gather(change, starts[:, None] + np.arange(1, n + 1), enough).mean(axis=1)
    row = np.arange(len(change))
    seg = np.repeat(np.arange(len(starts)), ends - starts + 1)
    pos = row - starts[seg]
    weight = np.where(pos > n, np.power(k, (ends[seg] - row).astype(float)) / n, 0.0)
    tail = np.add.reduceat(weight * change, starts) if len(change) else np.zeros(0)
    later = (ends - starts) - n  # changes after the seeding ones
    return np.asarray(seed * np.power(k, np.maximum(later, 0).astype(float)) + tail, float)


def _rsi(close: np.ndarray, starts: np.ndarray, ends: np.ndarray,
         bars: np.ndarray) -> np.ndarray:
    change = np.diff(close, prepend=close[:1]) if len(close) else close
    enough = bars >= RSI_PERIOD + 1
    gain = _wilder_last(np.maximum(change, 0.0), starts, ends, enough)
    loss = _wilder_last(np.maximum(-change, 0.0), starts, ends, enough)
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100.0 - 100.0 / (1.0 + gain / loss)
    rsi = np.where(loss == 0.0, np.where(gain > 0.0, 100.0, 50.0), rsi)
    return np.where(enough, rsi, np.nan)


def _returns(ts: np.ndarray, close: np.ndarray, starts: np.ndarray,
             ends: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per horizon: (last close over the close of the bar exactly ``horizon`` before the
    last, NaN without that bar; whether the history reaches back that far), by one binary
    search over (segment, ts) packed into one sorted int64 key."""
    shift = np.int64(1) << np.int64(43)  # ms timestamps stay below 2^43 until 2248
    seg = np.repeat(np.arange(len(starts), dtype=np.int64), ends - starts + 1)
    key = seg * shift + ts
    out = []
    for horizon in HORIZONS_MS:
        target = np.arange(len(starts), dtype=np.int64) * shift + ts[ends] - horizon
        at = np.searchsorted(key, target, side="left")
        exact = (at <= ends) & (key[np.minimum(at, max(len(key) - 1, 0))] == target) \
            if len(key) else np.zeros(0, bool)
        base = _gather(close, at, exact)
        out.append((close[ends] / base - 1.0, ts[starts] <= ts[ends] - horizon))
    return out


def quote_of(symbols: pa.Array) -> np.ndarray:
    """The quote currency of CCXT symbols (object array): ``BTC/USDT`` and
    ``BTC/USDT:USDT`` → ``USDT``, ``BTC/USD:BTC`` → ``USD``; None without a ``/``."""
    found = pc.extract_regex(symbols, r"/(?P<quote>[^:]*)")
    return np.asarray(pc.struct_field(found, "quote").to_pylist(), object)


def utc_text(ms: np.ndarray) -> np.ndarray:
    """Epoch milliseconds as ``2024-01-02 03:00 UTC`` strings (object array)."""
    ts = pa.array(np.asarray(ms, np.int64), pa.int64()).cast(TS_TYPE)
    return np.asarray(pc.strftime(ts, format="%Y-%m-%d %H:%M UTC").to_pylist(), object)


def _masked(values: np.ndarray, type_: pa.DataType = F64) -> pa.Array:
    """NaN → null: a value that could not be computed is missing, not a number."""
    return pa.array(values, type_, mask=np.isnan(values))


def _latest_books(books: pa.Table | None, symbols: pa.Array) -> dict[str, np.ndarray]:
    """The newest order-book row per symbol, aligned to ``symbols`` (NaN / None when a
    symbol has none)."""
    n = len(symbols)
    found = np.zeros(n, bool)
    out: dict[str, np.ndarray] = {
        "spread_bps": np.full(n, np.nan), "depth_usd": np.full(n, np.nan),
        "book_ts": np.zeros(n, np.int64), "venue": np.full(n, None, object)}
    if books is not None and books.num_rows:
        books = _sorted(books)
        names, _, ends = _segments(books["symbol"])
        where = pc.index_in(symbols, value_set=names)
        found = where.is_valid().to_numpy(zero_copy_only=False)
        at = ends[where.fill_null(0).to_numpy(zero_copy_only=False)]
        latest = books.take(pa.array(at))
        out["spread_bps"] = np.where(found, latest["spread_bps"].to_numpy(
            zero_copy_only=False).astype(float), np.nan)
        out["depth_usd"] = np.where(found, latest["depth_quote"].to_numpy(
            zero_copy_only=False).astype(float), np.nan)
        out["book_ts"] = latest["ts"].cast(pa.int64()).to_numpy()
        venue = np.asarray(latest["source"].to_pylist(), object)
        venue[~found] = None
        out["venue"] = venue
    out["found"] = found
    return out


def compute_factors(candles: pa.Table, now_ms: int, *,
                    symbols: Sequence[str] | None = None,
                    books: pa.Table | None = None,
                    book_fresh_ms: int = BOOK_FRESH_MS) -> pa.Table:
    """One ``FACTORS_SCHEMA`` row per symbol of ``symbols`` (default: those in
    ``candles``), in that order.

    ``candles``: CANDLE_SCHEMA rows of one timeframe (1h or finer: the 1h return needs
    it) and one source per symbol, any order (sorted by (symbol, ts) it is not re-sorted).
    ``books``: ORDERBOOK_SNAPSHOTS rows (the newest per symbol is used), or None.
    """
    candles = _sorted(candles)
    timeframes = pc.unique(candles["timeframe"]).to_pylist()
    if len(timeframes) > 1:
        raise ValueError(f"one timeframe per scan, got {sorted(timeframes)}")
    tf_ms = parse_timeframe(timeframes[0]).ms if timeframes else HOUR_MS
    if tf_ms > HOUR_MS:
        raise ValueError(f"momentum's 1h return needs candles of 1h or finer, not "
                         f"{timeframes[0]}")
    wanted = pa.array(list(symbols) if symbols is not None
                      else pc.unique(candles["symbol"]).to_pylist(), STR)
    n = len(wanted)

    ts = candles["ts"].cast(pa.int64()).to_numpy()
    close = candles["close"].to_numpy().astype(float)
    volume = candles["volume"].to_numpy().astype(float)
    if candles.num_rows:
        names, starts, ends = _segments(candles["symbol"])
        inside = np.ones(max(len(ts) - 1, 0), bool)
        inside[ends[:-1]] = False  # the step from one symbol to the next
        if np.any(np.diff(ts)[inside] <= 0):
            raise ValueError("candles repeat a (symbol, ts): one source per symbol")
    else:
        names, starts, ends = pa.array([], STR), np.zeros(0, np.int64), np.zeros(0, np.int64)
    seg_bars = ends - starts + 1

    per_seg: dict[str, np.ndarray] = {
        "close": close[ends], "rsi": _rsi(close, starts, ends, seg_bars)}
    for h, (values, reached) in zip((1, 4, 24), _returns(ts, close, starts, ends),
                                    strict=True):
        per_seg[f"ret_{h}h"] = values
        per_seg[f"reached_{h}h"] = reached.astype(float)
    window = _gather(close, ends[:, None] - np.arange(MA_BARS)[::-1], seg_bars >= MA_BARS)
    per_seg["ma_distance"] = close[ends] / window.mean(axis=1) - 1.0
    before = _gather(volume, ends[:, None] - np.arange(1, VADR_BARS + 1)[::-1],
                     seg_bars >= VADR_BARS + 1).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_seg["vadr"] = np.where(before > 0, volume[ends] / before, np.nan)

    where = pc.index_in(wanted, value_set=names)
    has = where.is_valid().to_numpy(zero_copy_only=False)
    seg = where.fill_null(0).to_numpy(zero_copy_only=False)

    def pick(values: np.ndarray) -> np.ndarray:
        return _gather(values, seg, has)

    v = {name: pick(values) for name, values in per_seg.items()}
    bars = np.where(has, seg_bars[seg] if len(seg_bars) else 0, 0)
    last_ts = np.where(has, ts[ends][seg] if len(ends) else 0, 0)
    fresh_candles = has & (now_ms - last_ts <= 2 * tf_ms)
    book = _latest_books(books, wanted)
    fresh_book = book["found"] & (now_ms - book["book_ts"] <= book_fresh_ms)
    quote = quote_of(wanted)
    usd = np.isin(quote, list(USD_QUOTES))
    book["depth_usd"] = np.where(usd, book["depth_usd"], np.nan)

    vadr_note = np.full(n, None, object)
    vadr_note[has & (bars < VADR_BARS + 1)] = VADR_SHORT
    vadr_note[has & (bars >= VADR_BARS + 1) & np.isnan(v["vadr"])] = VADR_NO_VOLUME

    factors = {
        "momentum": momentum_score(v["ret_1h"], v["ret_4h"], v["ret_24h"]),
        "technical": technical_score(v["rsi"], v["ma_distance"]),
        "volume": volume_score(v["vadr"]),
        "quality": quality_score(book["spread_bps"], book["depth_usd"],
                                 fresh_candles, fresh_book),
    }
    stale = has & ~fresh_candles
    factors = {name: np.where(stale, np.nan, values) for name, values in factors.items()}
    notes = {
        "stale": np.char.add(np.char.add("newest candle at ", utc_text(last_ts).astype(str)),
                             ": stale"),
        "vadr": np.char.add("VADR not computed: ", vadr_note.astype(str)),
        "quote": np.char.add(np.char.add("quote currency ", quote.astype(str)),
                             " is not USD (depth_usd not computed)"),
    }
    reasons = _reasons(has, book["found"], v, vadr_note != None,  # noqa: E711 - elementwise
                       stale, book["found"] & ~usd, notes)
    sources = candles["source"].take(pa.array(starts)) if len(starts) else pa.array([], STR)
    return pa.table({
        "symbol": wanted,
        "source": sources.take(where),
        "bars": pa.array(bars, pa.int64()),
        "last_ts": pa.array(last_ts, pa.int64(), mask=~has).cast(TS_TYPE),
        "close": _masked(v["close"]),
        **{name: _masked(v[name]) for name in ("ret_1h", "ret_4h", "ret_24h", "rsi",
                                              "ma_distance", "vadr")},
        "vadr_note": pa.array(vadr_note, STR),
        "venue": pa.array(book["venue"], STR),
        "book_ts": pa.array(book["book_ts"], pa.int64(), mask=~book["found"]).cast(TS_TYPE),
        "spread_bps": _masked(book["spread_bps"]),
        "depth_usd": _masked(book["depth_usd"]),
        "fresh_candles": pa.array(fresh_candles, BOOL),
        "fresh_book": pa.array(fresh_book, BOOL),
        "fresh": pa.array(fresh_candles & fresh_book, BOOL),
        **{name: _masked(values) for name, values in factors.items()},
        "reason": pa.array(reasons, STR),
    }, schema=FACTORS_SCHEMA)


def _reasons(has: np.ndarray, has_book: np.ndarray, v: dict[str, np.ndarray],
             no_vadr: np.ndarray, stale: np.ndarray, not_usd: np.ndarray,
             notes: dict[str, np.ndarray]) -> np.ndarray:
    """"; "-joined reasons a symbol cannot be scored (None when it can): a handful of
    vectorised masks, each with one text or one text per symbol (``notes``)."""
    checks: list[tuple[np.ndarray, str | np.ndarray]] = [
        (~has, "no candles"), (stale, notes["stale"])]
    checks.append((has & (v["reached_24h"] != 1.0), "fewer than 24h of candles for momentum"))
    for h in (1, 4, 24):  # a history long enough for 24h reaches 1h and 4h back too
        checks.append((has & np.isnan(v[f"ret_{h}h"]) & (v[f"reached_{h}h"] == 1.0),
                       f"no candle {h}h before the newest (a gap) for momentum"))
    checks += [
        (has & np.isnan(v["rsi"]), f"fewer than {RSI_PERIOD + 1} bars for RSI({RSI_PERIOD})"),
        (has & np.isnan(v["ma_distance"]), f"fewer than {MA_BARS} bars for MA({MA_BARS})"),
        (has & no_vadr, notes["vadr"]),
        (~has_book, "no order book"),
        (not_usd, notes["quote"]),
    ]
    out = np.full(len(has), "", object)
    for mask, text in checks:
        add = np.where(mask, text, "")
        joined = np.where((out != "") & mask, out + "; ", out)
        out = np.where(mask, joined + add, out)
    out[out == ""] = None
    return out


__all__ = ["BOOK_FRESH_MS", "FACTORS_SCHEMA", "FACTOR_NAMES", "USD_QUOTES", "compute_factors",
           "momentum_score", "quality_score", "quote_of", "technical_score", "utc_text",
           "volume_score"]
