"""The market regime (calm, normal, volatile) from stored candles of a universe: pure
functions over Arrow and numpy, no I/O.

Definitions, on one timeframe ``tf`` (the job's ``timeframe``, default ``1h``; it must
divide a day), all anchored at ``as_of``, a closed candle's open time (an in-progress
candle is never read) chosen so that one symbol a bar ahead or behind cannot skew it: the
newest time that BTC and at least half the members with stored candles have reached (the
members' newest closed times, sorted, at the half; then no later than BTC's). Ingest
stores a new candle symbol by symbol, so mid-way some symbols are a bar ahead (they are
read up to ``as_of``) and some behind (left out, with their newest close as the reason):

* **BTC volatility**: the sample standard deviation (n - 1) of the log returns of BTC's
  closes over the 7 days to ``as_of`` (``7d / tf`` returns, so ``7d / tf + 1`` closes),
  annualised by ``sqrt(365d / tf)`` (``sqrt(8760)`` on 1h). Every one of those closes must
  be stored; otherwise the indicator is missing, with the count found as its reason.
* **Share above MA**: of the symbols with all of their last 20 closes stored (up to
  ``as_of``), the share whose close at ``as_of`` is strictly above the mean of those 20.
* **Breadth**: of the symbols with a close at ``as_of`` and one 24 h before it, the share
  whose close at ``as_of`` is strictly above the earlier one (advancing).

A symbol left out of a share is listed with the reason (never counted as 0). A share
counting fewer than half the universe's members does not vote (it is missing, with the
count as the reason): a few symbols do not speak for the market.

Votes are strict, as the issue states them: volatility ``< calm`` votes calm, ``> volatile``
volatile; the share above MA and breadth ``> calm`` calm, ``< volatile`` volatile; anything
else, a value exactly at a threshold included, votes normal (unlike a scan gate, which a
value exactly at its threshold passes).
The verdict is the vote with the most indicators; any tie (three different votes, or two
indicators disagreeing when one is missing) resolves to ``normal``. Confidence is the
verdict's votes ÷ 3, whatever is missing (a tie scores 1/3, or 0 when nothing voted
normal). With no indicator at all there is no verdict.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.config.scans import REGIME_WEIGHTS, RegimeConfig, Votes, Weights
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, Timeframe
from candlekeep.core.timeutil import iso_ms

CALM, NORMAL, VOLATILE = "calm", "normal", "volatile"
VOLATILITY_DAYS = 7
MA_PERIOD = 20
BREADTH_LAG_MS = 24 * HOUR_MS
YEAR_MS = 365 * DAY_MS


@dataclass(frozen=True)
class Indicator:
    """One indicator: its value and vote, or why it is missing (then it does not vote)."""

    name: str
    value: float | None
    vote: str | None
    counted: int
    """Symbols in the share (closes in the volatility)."""
    reason: str | None = None


@dataclass(frozen=True)
class Regime:
    """A verdict. ``as_of``, ``timeframe`` and ``excluded`` are known to the run that
    computed it (and its regime.json); a verdict read back from the store has none."""

    universe: str
    ts: int
    regime: str
    confidence: float
    volatility: Indicator
    above_ma: Indicator
    breadth: Indicator
    weights: Weights
    next_refresh: int
    timeframe: str | None = None
    as_of: int | None = None
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def indicators(self) -> tuple[Indicator, Indicator, Indicator]:
        return self.volatility, self.above_ma, self.breadth

    def to_json(self) -> dict[str, object]:
        """What regime.json holds."""
        return {
            "universe": self.universe, "ts": iso_ms(self.ts), "as_of": iso_ms(self.as_of),
            "timeframe": self.timeframe, "regime": self.regime,
            "confidence": round(self.confidence, 6),
            "indicators": {i.name: {"value": i.value, "vote": i.vote, "counted": i.counted,
                                    "reason": i.reason} for i in self.indicators},
            "weights": self.weights.model_dump(),
            "next_refresh": iso_ms(self.next_refresh),
            "excluded": self.excluded,
        }


def vote_low_calm(value: float, votes: Votes) -> str:
    """Volatility's vote: low is calm (strictly beyond a threshold to vote it)."""
    return CALM if value < votes.calm else VOLATILE if value > votes.volatile else NORMAL


def vote_high_calm(value: float, votes: Votes) -> str:
    """A share's vote: high is calm (strictly beyond a threshold to vote it)."""
    return CALM if value > votes.calm else VOLATILE if value < votes.volatile else NORMAL


def decide(votes: list[str | None]) -> tuple[str, float] | None:
    """The verdict and its confidence from the indicators' votes (None: missing); None
    when nothing voted. A tie for the most votes resolves to ``normal``."""
    counts = Counter(v for v in votes if v is not None)
    if not counts:
        return None
    top = max(counts.values())
    winners = [v for v, n in counts.items() if n == top]
    verdict = winners[0] if len(winners) == 1 else NORMAL
    return verdict, counts[verdict] / 3


def annualised_volatility(closes: np.ndarray, tf: Timeframe) -> float:
    """Sample stdev of the log returns of consecutive ``closes``, times sqrt(periods a year)."""
    returns = np.diff(np.log(closes))
    return float(np.std(returns, ddof=1) * math.sqrt(YEAR_MS / tf.ms))


NO_CANDLE = np.iinfo(np.int64).min
"""A symbol's newest closed candle when it has none."""


@dataclass(frozen=True)
class CloseGrid:
    """Closes of ``symbols`` on the last ``slots`` candles up to ``as_of`` (NaN: none), and
    each symbol's newest closed candle's open time, however far past ``as_of``
    (``NO_CANDLE``: none)."""

    symbols: list[str]
    as_of: int
    closes: np.ndarray  # shape (symbols, slots)
    newest: np.ndarray  # shape (symbols,), int64


def slots_needed(tf: Timeframe) -> int:
    """Candles the three indicators look back over, ``as_of``'s included."""
    return max(VOLATILITY_DAYS * DAY_MS // tf.ms + 1, MA_PERIOD, BREADTH_LAG_MS // tf.ms + 1)


def choose_as_of(members_newest: np.ndarray, btc_newest: int) -> int | None:
    """The newest time that BTC and at least half the members with candles have reached:
    the members' newest times sorted, taken at the half, then no later than BTC's. One
    symbol ahead or behind does not move it. None when no symbol has a candle."""
    have = np.sort(members_newest[members_newest != NO_CANDLE])
    quorum = int(have[have.size // 2]) if have.size else None
    if btc_newest == NO_CANDLE:
        return quorum
    return btc_newest if quorum is None else min(quorum, btc_newest)


def close_grid(candles: pa.Table, members: list[str], btc: str, tf: Timeframe,
               now_ms: int) -> CloseGrid | None:
    """The grid of ``members`` then ``btc`` (unless a member) from a candle table of one
    source and timeframe (any order, any other symbols), anchored at ``choose_as_of``: one
    scatter of the whole column, no loop over rows. None when none of them has a closed
    candle."""
    symbols = [*members, *([btc] if btc not in members else [])]
    ts = pc.cast(candles.column("ts"), pa.int64())
    wanted = pc.and_(pc.is_in(candles.column("symbol"), value_set=pa.array(symbols)),
                     pc.less_equal(pc.add(ts, tf.ms), now_ms))
    t = pa.table({"symbol": candles.column("symbol"), "ts": ts,
                  "close": candles.column("close")}).filter(wanted)
    newest = np.full(len(symbols), NO_CANDLE, dtype=np.int64)
    np.maximum.at(newest, pc.index_in(t.column("symbol"), value_set=pa.array(symbols))
                  .to_numpy(), t.column("ts").to_numpy())
    as_of = choose_as_of(newest[:len(members)], int(newest[symbols.index(btc)]))
    if as_of is None:
        return None
    slots = slots_needed(tf)
    first = as_of - (slots - 1) * tf.ms
    t = t.filter(pc.and_(pc.greater_equal(t.column("ts"), first),
                         pc.less_equal(t.column("ts"), as_of)))
    row = pc.index_in(t.column("symbol"), value_set=pa.array(symbols)).to_numpy()
    col = (t.column("ts").to_numpy() - first) // tf.ms
    grid = np.full((len(symbols), slots), np.nan)
    grid[row, col] = t.column("close").to_numpy()
    return CloseGrid(symbols, as_of, grid, newest)


def compute_regime(candles: pa.Table, universe: str, symbols: list[str], btc: str,
                   tf: Timeframe, config: RegimeConfig, now_ms: int,
                   excluded: dict[str, str] | None = None) -> Regime | None:
    """The regime of ``symbols`` from ``candles`` (one source, timeframe ``tf``), BTC's
    volatility from ``btc``'s closes (a member of the universe or not). ``excluded``:
    reasons already known (from the universe); symbols this leaves out are added. None
    when no symbol (BTC included) has a closed candle."""
    members = list(dict.fromkeys(symbols))
    grid = close_grid(candles, members, btc, tf, now_ms)
    if grid is None:
        return None
    out = dict(excluded or {})
    c = grid.closes[:len(members)]
    vol = _volatility(grid.closes[grid.symbols.index(btc)], btc, tf, grid.as_of, config)

    last = c[:, -1]
    ma_ok = ~np.isnan(c[:, -MA_PERIOD:]).any(axis=1)
    above = last > c[:, -MA_PERIOD:].mean(axis=1)
    lag = BREADTH_LAG_MS // tf.ms
    before = c[:, -1 - lag]
    br_ok = ~np.isnan(last) & ~np.isnan(before)
    advancing = last > before

    at = iso_ms(grid.as_of)
    for i in np.flatnonzero(~(ma_ok & br_ok)):
        sym, newest = members[i], int(grid.newest[i])
        if newest == NO_CANDLE:
            why = f"no {tf.name} candles in the window to {at}"
        elif newest < grid.as_of:
            why = f"behind: newest {tf.name} close opens {iso_ms(newest)}, before {at}"
        elif np.isnan(last[i]):
            why = f"no {tf.name} close at {at}"
        else:
            why = "; ".join(
                ([f"fewer than {MA_PERIOD} {tf.name} closes to {at} (not in the share above "
                  "MA)"] if not ma_ok[i] else [])
                + ([f"no {tf.name} close 24h before {at} (not in breadth)"]
                   if not br_ok[i] else []))
        out[sym] = f"{out[sym]}; {why}" if sym in out else why

    share = _share("above_ma_share", above, ma_ok, config.above_ma)
    breadth = _share("breadth", advancing, br_ok, config.breadth)
    decided = decide([vol.vote, share.vote, breadth.vote])
    if decided is None:
        return None
    verdict, confidence = decided
    return Regime(universe, now_ms, verdict, confidence, vol, share, breadth,
                  REGIME_WEIGHTS[verdict], now_ms + int(config.refresh * 1000), tf.name,
                  grid.as_of, dict(sorted(out.items())))


def _volatility(closes: np.ndarray, btc: str, tf: Timeframe, as_of: int,
                config: RegimeConfig) -> Indicator:
    need = VOLATILITY_DAYS * DAY_MS // tf.ms + 1
    window = closes[-need:]
    have = int((~np.isnan(window)).sum())
    if have < need:
        return Indicator("btc_volatility", None, None, have,
                         f"{btc}: {have} of {need} {tf.name} closes in the "
                         f"{VOLATILITY_DAYS} days to {iso_ms(as_of)}")
    value = annualised_volatility(window, tf)
    return Indicator("btc_volatility", value, vote_low_calm(value, config.volatility), need)


def _share(name: str, hit: np.ndarray, counted: np.ndarray, votes: Votes) -> Indicator:
    n, size = int(counted.sum()), counted.size
    if n == 0 or 2 * n < size:
        return Indicator(name, None, None, n, f"{n} of {size} members have the closes it "
                                              "needs, fewer than half")
    value = float(hit[counted].sum() / n)
    return Indicator(name, value, vote_high_calm(value, votes), n)


__all__ = ["CALM", "NORMAL", "NO_CANDLE", "VOLATILE", "CloseGrid", "Indicator", "Regime",
           "annualised_volatility", "choose_as_of", "close_grid", "compute_regime", "decide",
           "slots_needed", "vote_high_calm", "vote_low_calm"]
