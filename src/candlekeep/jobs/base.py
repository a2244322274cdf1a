"""What a job type is, what it receives, and what it reports.

The CLI and the scheduler run the same job types: ``candlekeep backfill …`` is
``run(backfill, params)``, so a job behaves the same however it was started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict

from candlekeep.core.clock import Clock

if TYPE_CHECKING:
    from candlekeep.config.models import Config, SloConfig
    from candlekeep.jobs.facades import AsyncState, AsyncStore
    from candlekeep.jobs.runtime import Runtime, SeriesPlan
    from candlekeep.sources.base import Source


class Params(BaseModel):
    """Base for job parameter models: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SeriesFilter(Params):
    """Which configured series a run covers: every one when no field is set."""

    source: str | None = None
    symbol: str | None = None
    timeframe: str | None = None

    @property
    def selects_all(self) -> bool:
        return self.source is None and self.symbol is None and self.timeframe is None

    def plans(self, rt: Runtime) -> list[SeriesPlan]:
        return rt.plans(self.source, self.symbol, self.timeframe)


@dataclass
class JobResult:
    rows_written: int = 0
    requests: int = 0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def merge(self, other: JobResult) -> None:
        self.rows_written += other.rows_written
        self.requests += other.requests
        self.warnings += other.warnings
        self.errors += other.errors
        self.artifacts += other.artifacts


class ProgressSink(Protocol):
    """Where a long job reports progress; the CLI shows Rich bars, the daemon ignores it."""

    def start(self, key: str, total: int, description: str) -> None: ...
    def advance(self, key: str, amount: int) -> None: ...
    def finish(self, key: str) -> None: ...


class NullProgress:
    def start(self, key: str, total: int, description: str) -> None:
        pass

    def advance(self, key: str, amount: int) -> None:
        pass

    def finish(self, key: str) -> None:
        pass


@dataclass
class JobContext:
    runtime: Runtime
    job_name: str
    log: logging.Logger
    dry_run: bool = False
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    progress: ProgressSink = field(default_factory=NullProgress)
    process_hook: Callable[[str | None], None] | None = None
    """Set by the run path: where ``report_process`` records a run's process group."""

    def report_process(self, identity: str | None) -> None:
        """Tell the run path which process group this run owns (``None``: it has ended),
        so that a node restarting after a crash can end what its dead predecessor left
        running. A no-op when nothing records the run (dry runs, direct calls)."""
        if self.process_hook is not None:
            self.process_hook(identity)

    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def db(self) -> AsyncState:
        """The state DB, awaitable: its calls run in a thread, never on the loop."""
        from candlekeep.jobs.facades import AsyncState

        return AsyncState(self.runtime.state)

    async def store(self, name: str) -> AsyncStore:
        """A configured store, awaitable (opened in a thread the first time)."""
        from candlekeep.jobs.facades import open_store

        return await open_store(self.runtime, name)

    async def source(self, name: str) -> Source:
        """A configured source (created in a thread the first time: CCXT's import alone
        takes a third of a second)."""
        from candlekeep.jobs.facades import open_source

        return await open_source(self.runtime, name)

    @property
    def clock(self) -> Clock:
        return self.runtime.clock


JobFn = Callable[[JobContext, Any], Awaitable[JobResult]]
SourcesFn = Callable[[JobContext, Any], set[str]]


@dataclass(frozen=True)
class JobType:
    name: str
    params: type[Params]
    run: JobFn
    description: str = ""
    sources: SourcesFn | None = None
    """The configured sources a run will call, for per-source concurrency limits."""
    slo: SloConfig | None = None
    """The objective a job of this type has when its config gives no ``slo:`` block
    (``candlekeep slo``); None: only a configured block gives it one."""
