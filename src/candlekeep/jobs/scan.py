"""Scans (job type ``scan``, profiles ``hot``, ``warm``, ``custom``, ``premove``): the
universe's factors from stored candles and order-book snapshots, weighted by the latest
regime, through the profile's gates, written as explained artifacts
(``<artifacts>/scans/<universe>/<profile>/<UTC time>/``) and as ``scan_signals`` rows.

The work is reading, in one store session: the universe's candles over the lookback, its
recent order-book snapshots, the newest regime and (premove) funding rates; the maths over
them is vectorised (``scans/factors.py``, ``scans/scoring.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import BeforeValidator, Field

from candlekeep.config.scans import Profile
from candlekeep.core.errors import ConfigError
from candlekeep.core.timeframes import HOUR_MS
from candlekeep.core.timeutil import fmt_duration, iso_ms, parse_duration
from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type

if TYPE_CHECKING:  # pyarrow and numpy are imported when a scan runs: `list` stays light
    import pyarrow as pa

    from candlekeep.jobs.runtime import Runtime
    from candlekeep.scans.regime import Regime
    from candlekeep.scans.scoring import ScanResult
    from candlekeep.scans.universe import Universe
    from candlekeep.stores.base import Store

Duration = Annotated[float, BeforeValidator(parse_duration)]

NO_REGIME = "normal"
"""The weights a scan uses before any regime was recorded for its universe (said so)."""


class ScanParams(Params):
    profile: Profile
    universe: str | None = None
    """A name under ``universes:``; may be left out when exactly one is configured."""
    timeframe: str = "1h"
    """Candles the factors read (1h or finer: the 1h return needs it)."""
    lookback: Duration = Field(default=3 * 86400.0, gt=0)
    """Candles read per symbol: enough for RSI(14), the 24 h return and VADR's 20 bars."""
    books: str | None = None
    """Source of the order-book snapshots (default: the universe's source)."""


@dataclass(frozen=True)
class ScanRun:
    """One scan's inputs and verdicts, before anything is written."""

    universe: Universe
    result: ScanResult
    run_ts: int
    regime_note: str | None


def scan_now(runtime: Runtime, p: ScanParams, now_ms: int) -> ScanRun:
    """The scan at ``now_ms`` from stored data, nothing written. Blocking (reads the
    store): call it in a thread."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from candlekeep.core.datasets import CANDLES
    from candlekeep.jobs.regime import latest_regime, params_timeframe, universe_name
    from candlekeep.scans.factors import compute_factors
    from candlekeep.scans.scoring import evaluate
    from candlekeep.scans.universe import resolve_universe, universe_store

    cfg = runtime.config
    name = universe_name(cfg, p.universe, "params.universe")
    tf = params_timeframe(cfg, p.timeframe)
    if tf.ms > HOUR_MS:
        raise ConfigError(cfg.file, "params.timeframe",
                          f"{tf.name} is coarser than the 1h momentum return",
                          "use 1h or finer (default 1h)")
    need = min_lookback_bars(tf.ms)
    if p.lookback * 1000 < need * tf.ms:
        raise ConfigError(cfg.file, "params.lookback",
                          f"{fmt_duration(round(p.lookback * 1000))} holds "
                          f"{int(p.lookback * 1000 // tf.ms)} {tf.name} bars; the factors "
                          f"need at least {need}",
                          f"give at least {-(-need * tf.ms // HOUR_MS)}h for {tf.name} "
                          "candles (default 3d)")
    store = runtime.store(universe_store(cfg, name))
    end = tf.floor(now_ms)  # closed candles only
    with store.session():  # one visit for the reads (DuckDB: one open, not one per read)
        u = resolve_universe(store, cfg, name, now_ms)
        candles = store.read(CANDLES, where={"source": u.source, "timeframe": tf.name},
                             column="ts", lo=end - round(p.lookback * 1000), hi=end)
        books = _recent_books(store, p.books or u.source, now_ms)
        found = latest_regime(store, name)
        funding = _funding(store, now_ms) if p.profile == "premove" else None
    if u.symbols and candles.num_rows:
        candles = candles.filter(pc.is_in(candles["symbol"],
                                          value_set=pa.array(u.symbols, pa.string())))
    regime, note = (found.regime, stale_note(found, now_ms)) if found is not None else (
        NO_REGIME, f"no regime recorded for universe {name}: {NO_REGIME} weights")
    factors = compute_factors(candles, now_ms, symbols=list(u.symbols), books=books)
    result = evaluate(factors, p.profile, regime, cfg.scans, funding)
    return ScanRun(u, result, now_ms, note)


def min_lookback_bars(tf_ms: int) -> int:
    """Bars a symbol needs for every factor: the 24 h return's (the bar a day before the
    newest), RSI's seeding changes, VADR's 20 bars before the last and the MA's, plus one
    RSI period more so Wilder's smoothing runs past its seed."""
    from candlekeep.core.timeframes import DAY_MS
    from candlekeep.scans.factors import MA_BARS, RSI_PERIOD, VADR_BARS

    return max(-(-DAY_MS // tf_ms) + 1, RSI_PERIOD + 1, VADR_BARS + 1, MA_BARS) + RSI_PERIOD


def stale_note(found: Regime, now_ms: int) -> str | None:
    """A warning when the regime is past its ``next_refresh`` by more than one refresh
    period (the regime job stopped, or failed, at least twice): its weights are still
    used, but the run says how old they are."""
    period = max(found.next_refresh - found.ts, 0)
    if now_ms <= found.next_refresh + period:
        return None
    return (f"regime of {iso_ms(found.ts)} is stale (next refresh was due at "
            f"{iso_ms(found.next_refresh)}): its {found.regime} weights used")


def _recent_books(store: Store, source: str, now_ms: int) -> pa.Table:
    """Snapshots of the last few freshness spans (older ones would only say "stale")."""
    from candlekeep.scans.datasets import ORDERBOOK_SNAPSHOTS
    from candlekeep.scans.factors import BOOK_FRESH_MS

    return store.read(ORDERBOOK_SNAPSHOTS, where={"source": source}, column="ts",
                      lo=now_ms - 4 * BOOK_FRESH_MS, hi=now_ms + 1)


def _funding(store: Store, now_ms: int) -> pa.Table:
    """Funding rates of the last day (Hyperliquid's market data), for the pre-movement
    gates; none stored (an absent table reads as empty) reports the funding gate missing,
    never passing."""
    from candlekeep.accounts.datasets import FUNDING_RATES

    return store.read(FUNDING_RATES, column="time", lo=now_ms - 86_400_000, hi=now_ms + 1)


def not_scored(run: ScanRun) -> dict[str, str]:
    """Symbols of the universe that could not be scored, with why (never scored 0)."""
    r = run.result
    symbols = r.factors["symbol"].to_pylist()
    return {symbols[i]: r.why[i] or "not scored" for i in range(len(symbols))
            if r.scores[i] != r.scores[i]}  # NaN: not scored


def premove_detail(run: ScanRun, universe: str, folder: str,
                   needed: int) -> dict[str, object]:
    """The symbols a pre-movement run alerts on and those it scored quiet (an undetermined
    or unscored symbol is neither: its alert state stays as it was), and how many of the
    three gates an alert needs (the alert's text says so)."""
    r = run.result
    symbols = r.factors["symbol"].to_pylist()
    undetermined = ({i for i, st in enumerate(r.premove.status) if st == "undetermined"}
                    if r.premove is not None else set())

    def row(i: int) -> dict[str, object]:
        return {"symbol": symbols[i], "score": None if r.scores[i] != r.scores[i]
                else round(float(r.scores[i]), 2)}

    return {"universe": universe, "folder": folder, "needed": needed,
            "alert": [row(i) for i in range(len(symbols)) if r.passed[i]],
            "quiet": [row(i) for i in range(len(symbols))
                      if not r.passed[i] and i not in undetermined
                      and r.scores[i] == r.scores[i]]}


def summary(run: ScanRun, unscored: dict[str, str]) -> dict[str, object]:
    """What a run found, JSON-ready: passed symbols by score, those not scored with why
    (``not_scored``), those the universe excluded with why."""
    r = run.result
    symbols = r.factors["symbol"].to_pylist()
    passed = sorted((i for i in range(len(symbols)) if r.passed[i]),
                    key=lambda i: (-r.scores[i], symbols[i]))
    return {
        "profile": r.profile, "universe": run.universe.name, "regime": r.regime,
        "regime_note": run.regime_note, "symbols": len(symbols),
        "passed": [{"symbol": symbols[i], "score": round(float(r.scores[i]), 2)}
                   for i in passed],
        "not_scored": unscored, "excluded": dict(run.universe.excluded),
    }


@job_type("scan", ScanParams,
          "Score the universe from stored candles and order books with the regime's "
          "weights, apply the profile's gates, write signals.csv and explain.json.")
async def scan(ctx: JobContext, p: ScanParams) -> JobResult:
    from candlekeep.jobs.regime import artifacts_dir, universe_name
    from candlekeep.scans.artifacts import ArtifactWriteError, scan_signal_rows, write_artifacts
    from candlekeep.scans.datasets import SCAN_SIGNALS

    name = universe_name(ctx.config, p.universe, f"jobs.{ctx.job_name}.params.universe")
    run = await asyncio.to_thread(scan_now, ctx.runtime, p.model_copy(update={"universe": name}),
                                  ctx.clock.now_ms())
    unscored = not_scored(run)
    res = JobResult(details=summary(run, unscored))
    if run.regime_note:
        res.warnings.append(run.regime_note)
    for symbol, why in unscored.items():
        res.warnings.append(f"{symbol}: not scored: {why}")
    if ctx.dry_run:
        return res
    try:
        folder = await asyncio.to_thread(write_artifacts, artifacts_dir(ctx.config),
                                         run.result, run.run_ts, name)
    except ArtifactWriteError as exc:
        res.errors.append(str(exc))
        return res
    res.artifacts += [str(f) for f in sorted(Path(folder).iterdir())]
    if p.profile == "premove":  # what the premove alert rule fires and resolves on
        res.details["premove"] = premove_detail(run, name, str(folder),
                                                ctx.config.scans.premove.needed)
    store = await ctx.store(run.universe.store)
    res.rows_written = await store.upsert(
        SCAN_SIGNALS, scan_signal_rows(run.result, run.run_ts, ctx.clock.now_ms(), name))
    ctx.log.info("scan profile=%s universe=%s regime=%s passed=%d of %d", p.profile, name,
                 run.result.regime, int(run.result.passed.sum()), len(run.result.passed))
    return res
