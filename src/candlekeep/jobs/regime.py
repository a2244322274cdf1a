"""Regime refresh (job type ``regime``): the universe's regime from its stored candles (see
``scans/regime.py`` for the definitions), recorded as a ``regimes`` row in the universe's
store and as ``regime.json`` under the artifacts folder, one folder per universe
(``<artifacts>/regime/<universe>/<UTC time>/regime.json``, copied to
``<artifacts>/regime/<universe>/latest.json``). Votes are strict: a value exactly at a
threshold votes normal (a scan gate, by contrast, passes a value exactly at it).

Scans read the latest verdict back with ``latest_regime`` to choose their factor weights."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

from candlekeep.core.errors import CandlekeepError, ConfigError
from candlekeep.core.timeframes import DAY_MS, Timeframe, parse_timeframe
from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type

if TYPE_CHECKING:  # Arrow and numpy are imported where used: `candlekeep list` stays light
    import pyarrow as pa

    from candlekeep.config.models import Config
    from candlekeep.jobs.runtime import Runtime
    from candlekeep.scans.regime import Regime
    from candlekeep.stores.base import Store


class RegimeParams(Params):
    universe: str | None = None
    """The universe (``universes:``); may be left out when exactly one is configured."""
    timeframe: str = "1h"
    """Candles the indicators read (must divide a day: 1m … 1d)."""
    btc: str = "BTC/USDT"
    """The symbol whose closes give the volatility indicator (read from the universe's
    source whether or not the universe lists it)."""


def universe_name(config: Config, wanted: str | None, key: str) -> str:
    """``wanted``, or the only configured universe; ConfigError at ``key`` otherwise."""
    if wanted is not None:
        return wanted
    if len(config.universes) == 1:
        return next(iter(config.universes))
    raise ConfigError(config.file, key,
                      "which universe?" if config.universes else "no universe is configured",
                      f"name one of: {', '.join(config.universes)}" if config.universes
                      else "add one under universes:")


def params_timeframe(config: Config, value: str) -> Timeframe:
    """``params.timeframe`` parsed; ConfigError at that key when it is no timeframe."""
    try:
        return parse_timeframe(value)
    except ValueError as exc:
        raise ConfigError(config.file, "params.timeframe",
                          str(exc)) from None


def regime_now(runtime: Runtime, p: RegimeParams, now_ms: int) -> Regime:
    """The regime at ``now_ms`` from stored data, nothing written. Blocking (reads the
    store): one read of the universe's source and timeframe over the window. Raises
    ValueError when no indicator can be computed."""
    from candlekeep.core.datasets import CANDLES
    from candlekeep.scans.regime import compute_regime, slots_needed
    from candlekeep.scans.universe import resolve_universe, universe_store

    cfg = runtime.config
    name = universe_name(cfg, p.universe, "params.universe")
    tf = params_timeframe(cfg, p.timeframe)
    if DAY_MS % tf.ms:
        raise ConfigError(cfg.file, "params.timeframe",
                          f"{tf.name} does not divide a day", "use 1m … 1d (default 1h)")
    store = runtime.store(universe_store(cfg, name))
    end = tf.floor(now_ms)
    with store.session():  # one visit (DuckDB: one open) for the universe and its candles
        u = resolve_universe(store, cfg, name, now_ms)
        candles = store.read(CANDLES, where={"source": u.source, "timeframe": tf.name},
                             column="ts", lo=end - 2 * slots_needed(tf) * tf.ms, hi=end)
    found = compute_regime(candles, name, list(u.symbols), p.btc, tf, cfg.regime, now_ms,
                           u.excluded)
    if found is None:
        raise ValueError(f"universe {name}: no closed {tf.name} candles of {u.source} in "
                         f"store {u.store} for {p.btc} or any of {len(u.symbols)} symbols")
    return found


@job_type("regime", RegimeParams,
          "The universe's market regime (calm, normal, volatile) from stored candles, "
          "recorded in the regimes dataset and regime.json.")
async def regime(ctx: JobContext, p: RegimeParams) -> JobResult:
    name = universe_name(ctx.config, p.universe, f"jobs.{ctx.job_name}.params.universe")
    folder = regime_folder(ctx.config, name)
    if ctx.dry_run:
        return JobResult(details={"plan": f"judge the regime of universe {name} on "
                                          f"{p.timeframe} candles (nothing recorded)"})
    try:
        found = await asyncio.to_thread(regime_now, ctx.runtime, p, ctx.clock.now_ms())
    except ValueError as exc:
        return JobResult(errors=[str(exc)])
    res = JobResult(details=found.to_json())
    for ind in found.indicators:
        if ind.reason:
            res.warnings.append(f"{ind.name} missing: {ind.reason}")
    try:
        written = await asyncio.to_thread(write_regime_files, folder, found)
    except RegimeWriteError as exc:
        res.errors.append(str(exc))
        return res
    res.artifacts.extend(str(path) for path in written)
    from candlekeep.scans.datasets import REGIMES
    from candlekeep.scans.universe import universe_store

    store = await ctx.store(universe_store(ctx.config, name))
    res.rows_written = await store.upsert(REGIMES, regime_row(found, ctx.clock.now_ms()))
    ctx.log.info("regime universe=%s regime=%s confidence=%.2f", name, found.regime,
                 found.confidence)
    return res


class RegimeWriteError(CandlekeepError):
    """regime.json could not be written; the message names the path."""


def regime_folder(config: Config, universe: str) -> Path:
    """``<artifacts>/regime/<universe>``: each universe's runs and latest.json apart.
    Raises ConfigError for a name that is not one folder."""
    if universe in ("", ".", "..") or "/" in universe or "\\" in universe:
        raise ConfigError(config.file, f"universes.{universe}",
                          "a universe's name is the folder of its regime artifacts",
                          "rename it without / or \\")
    return artifacts_dir(config) / "regime" / universe


def write_regime_files(folder: Path, found: Regime) -> tuple[Path, Path]:
    """The run's ``<UTC time>/regime.json`` and ``latest.json`` in ``folder``, both or
    neither: the run folder lands whole (``scans.artifacts.write_run_folder``), then
    latest.json is replaced atomically; if that fails, the run folder is removed again.
    Blocking. Raises RegimeWriteError naming the path that could not be written."""
    import shutil

    from candlekeep.core.fsync import write_text_atomic
    from candlekeep.scans.artifacts import ArtifactWriteError, run_dirname, write_run_folder

    text = json.dumps(found.to_json(), indent=2) + "\n"
    try:
        run_dir = write_run_folder(folder / run_dirname(found.ts),
                                   {"regime.json": text.encode()})
    except ArtifactWriteError as exc:
        raise RegimeWriteError(str(exc)) from None
    latest = folder / "latest.json"
    try:
        write_text_atomic(latest, text)
    except OSError as exc:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise RegimeWriteError(f"cannot write artifact {latest}: {exc.strerror or exc}") \
            from None
    return run_dir / "regime.json", latest


def artifacts_dir(config: Config) -> Path:
    """``scans.artifacts`` under ``data_dir`` (or as given when absolute)."""
    return config.data_dir / config.scans.artifacts


def regime_row(r: Regime, ingested_ms: int) -> pa.Table:
    """The ``regimes`` row of a verdict."""
    import pyarrow as pa

    from candlekeep.scans.datasets import REGIMES

    w = r.weights
    return pa.Table.from_pylist([{
        "universe": r.universe, "ts": r.ts, "regime": r.regime, "confidence": r.confidence,
        "btc_volatility": r.volatility.value, "above_ma_share": r.above_ma.value,
        "breadth": r.breadth.value, "volatility_vote": r.volatility.vote,
        "above_ma_vote": r.above_ma.vote, "breadth_vote": r.breadth.vote,
        "weight_momentum": w.momentum, "weight_technical": w.technical,
        "weight_volume": w.volume, "weight_quality": w.quality,
        "next_refresh": r.next_refresh, "ingested_at": ingested_ms}], schema=REGIMES.schema)


def latest_regime(store: Store, universe: str) -> Regime | None:
    """The newest verdict recorded for ``universe`` in ``store`` (None when none): what a
    scan weighs its factors with. Blocking. Its ``excluded``, ``as_of`` and ``timeframe``
    are not stored (see the run's regime.json)."""
    from candlekeep.config.scans import Weights
    from candlekeep.core.timeutil import to_ms
    from candlekeep.scans.datasets import REGIMES
    from candlekeep.scans.regime import Indicator, Regime

    rows = store.read(REGIMES, where={"universe": universe}, column="ts")
    if rows.num_rows == 0:
        return None
    row = rows.slice(rows.num_rows - 1).to_pylist()[0]

    def ind(name: str, value: str, vote: str) -> Indicator:
        return Indicator(name, row[value], row[vote], 0,
                         None if row[vote] is not None else "missing at that run")

    return Regime(
        universe, to_ms(row["ts"]), row["regime"], row["confidence"],
        ind("btc_volatility", "btc_volatility", "volatility_vote"),
        ind("above_ma_share", "above_ma_share", "above_ma_vote"),
        ind("breadth", "breadth", "breadth_vote"),
        Weights(momentum=row["weight_momentum"], technical=row["weight_technical"],
                volume=row["weight_volume"], quality=row["weight_quality"]),
        to_ms(row["next_refresh"]))
