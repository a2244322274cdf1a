"""One process's live objects built from config: state DB, stores, sources, clock.

Sources are shared per process (one CCXT instance per configured source) so that one rate
budget governs every job that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from candlekeep.config.models import Config, SeriesConfig
from candlekeep.core.clock import Clock, SystemClock
from candlekeep.core.errors import ConfigError
from candlekeep.core.series import SeriesKey

if TYPE_CHECKING:  # concrete modules are imported where first used: start-up stays light
    from candlekeep.sources.base import Source
    from candlekeep.state.db import StateDB
    from candlekeep.stores.base import Store


class ConcurrencyLimits:
    """How many job runs may execute at once in this process, in all and per source.

    The source's rate limiter already keeps requests within the exchange's budget; these
    limits bound how many jobs compete for it (and for memory and store writes)."""

    def __init__(self, max_runs: int | None, per_source: dict[str, int]) -> None:
        self._global = asyncio.Semaphore(max_runs) if max_runs else None
        self._per_source = {name: asyncio.Semaphore(n) for name, n in per_source.items()}

    def limited(self, sources: Iterable[str] = ()) -> bool:
        """Whether a run using ``sources`` may have to queue for a slot at all."""
        return self._global is not None or any(s in self._per_source for s in sources)

    @contextlib.asynccontextmanager
    async def slot(self, sources: Iterable[str] = ()) -> AsyncIterator[None]:
        """Hold the global slot and one per used source; taken in a fixed order, so two
        runs never each hold what the other waits for."""
        sems = [self._global] if self._global else []
        sems += [self._per_source[s] for s in sorted(set(sources)) if s in self._per_source]
        async with contextlib.AsyncExitStack() as stack:
            for sem in sems:
                await stack.enter_async_context(sem)
            yield


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """A configured series with what jobs need to work on it."""

    key: SeriesKey
    store: str
    start_ms: int | None
    end_ms: int | None
    fallback: tuple[str, ...] = ()
    """Sources that stand in when ``key.source`` fails a range (``jobs.fallback``)."""


class Runtime:
    def __init__(
        self,
        config: Config,
        clock: Clock | None = None,
        node: str | None = None,
        sources: dict[str, Source] | None = None,
    ) -> None:
        """``sources`` replaces configured sources by name (tests, embedding)."""
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.node = node or config.node or socket.gethostname()
        # Unique per process: a daemon and a CLI command on one host share the node name,
        # and only a run's own process may finish it. Host and PID in it let a process on
        # the same host tell that the owner of a run is gone (``localproc.instance_dead``).
        self.instance = f"{socket.gethostname()[:80]}/{os.getpid()}/{secrets.token_hex(4)}"
        self._state: StateDB | None = None
        self._stores: dict[str, Store] = {}
        self._sources: dict[str, Source] = dict(sources or {})
        self._making = threading.RLock()  # a buffer opens its targets while being made
        self.limits = ConcurrencyLimits(
            config.max_concurrent_runs,
            {n: s.max_concurrent_jobs for n, s in config.sources.items()
             if s.max_concurrent_jobs is not None},
        )

    @property
    def state(self) -> StateDB:
        if self._state is None:
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
            from candlekeep.state.db import StateDB

            self._state = StateDB(self.config.state_url)
        return self._state

    def store(self, name: str) -> Store:
        """The named store, made on first use (from any thread: jobs open stores off the
        loop)."""
        with self._making:
            return self._store(name)

    def _store(self, name: str) -> Store:
        if name not in self._stores:
            cfg = self.config.stores.get(name)
            if cfg is None:
                raise ConfigError(self.config.file, f"stores.{name}", "unknown store",
                                  f"defined: {', '.join(self.config.stores)}")
            from candlekeep.stores.registry import make_store

            self._stores[name] = make_store(name, cfg, self)
        return self._stores[name]

    def source(self, name: str) -> Source:
        """The named source, one per process (its rate budget is shared by every job)."""
        with self._making:
            return self._source(name)

    def _source(self, name: str) -> Source:
        if name not in self._sources:
            cfg = self.config.sources.get(name)
            if cfg is None:
                raise ConfigError(self.config.file, f"sources.{name}", "unknown source",
                                  f"defined: {', '.join(self.config.sources)}")
            from candlekeep.sources.registry import make_source

            self._sources[name] = make_source(name, cfg, self.clock)
        return self._sources[name]

    def open_sources(self) -> list[Source]:
        """The sources made so far, by name: their ``stats`` count what this process's
        jobs asked of the exchanges (what ``/metrics`` reports)."""
        with self._making:
            return sorted(self._sources.values(), key=lambda s: s.name)

    def plans(
        self,
        source: str | None = None,
        symbol: str | None = None,
        timeframe: str | None = None,
    ) -> list[SeriesPlan]:
        return series_plans(self.config, source, symbol, timeframe)

    async def aclose(self) -> None:
        for src in self._sources.values():
            await src.close()
        self._sources.clear()
        for st in self._stores.values():
            st.close()
        self._stores.clear()
        if self._state is not None:
            self._state.dispose()


def series_plans(config: Config, source: str | None = None, symbol: str | None = None,
                 timeframe: str | None = None) -> list[SeriesPlan]:
    """The configured series, filtered; the same series listed twice appears once."""
    seen: dict[SeriesKey, SeriesPlan] = {}
    for s in config.series:
        for sym in s.symbols:
            for tf in s.timeframes:
                key = SeriesKey(s.source, sym, tf)
                if (source and key.source != source) or (symbol and sym != symbol) or (
                    timeframe and tf != timeframe
                ):
                    continue
                seen.setdefault(key, _plan(config, s, key))
    return list(seen.values())


def _plan(config: Config, s: SeriesConfig, key: SeriesKey) -> SeriesPlan:
    return SeriesPlan(key, config.store_for(s), s.start, s.end, tuple(s.fallback))
