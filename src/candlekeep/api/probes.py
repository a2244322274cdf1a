"""Reachability probes for ``/system/status`` and ``/system/health``: the state DB and each
store, each in a thread under a timeout.

A probe in flight is shared by every request that arrives meanwhile, and its answer is
kept for a moment: a hung store costs one stuck thread, not one per request, and a burst
of health checks costs one round trip per component.

Probes have a budget of their own: their own connection to the state DB and their own
threads, one per component. The API's reads (and a crowd of them) never delay a probe,
so a busy API does not read as a slow state DB, and a probe never waits for a reader.

A DuckDB file that another process is writing (the daemon's backfill) is waited on for
``LOCK_WAIT_S``, less than the probe's timeout: a write that outlasts it reads as a busy
store (degraded), not as one that does not answer (down).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from candlekeep.api.errors import describe_db_error
from candlekeep.core.errors import StoreBusyError
from candlekeep.jobs.runtime import Runtime
from candlekeep.queries.health import Component, ProbeView
from candlekeep.state.db import make_engine, reader_on

if TYPE_CHECKING:
    from candlekeep.stores.base import Store

TIMEOUT_S = 3.0
KEEP_S = 2.0
LOCK_WAIT_S = 2.0
BUSY = "busy (another process is writing)"


@dataclass(slots=True)
class _Slot:
    task: asyncio.Task[ProbeView] | None = None
    answer: ProbeView | None = None
    at: float = 0.0


class Prober:
    def __init__(self, runtime: Runtime, state_url: str, *, timeout_s: float = TIMEOUT_S,
                 keep_s: float = KEEP_S) -> None:
        self.runtime = runtime
        self.timeout_s = timeout_s
        self.keep_s = keep_s
        self.engine = make_engine(state_url, pooled=True, lock_timeout_s=timeout_s,
                                  statement_timeout_s=timeout_s, connect_timeout_s=timeout_s)
        self._threads = ThreadPoolExecutor(1 + len(runtime.config.stores),
                                           thread_name_prefix="candlekeep-api-probe")
        self._stores: dict[str, Store] = {}
        self._slots: dict[tuple[Component, str], _Slot] = {}

    async def state_db(self) -> ProbeView:
        return await self._probe(Component.STATE_DB, "state_db", self.engine.dialect.name,
                                 self._ping_state)

    async def stores(self) -> list[ProbeView]:
        names = sorted(self.runtime.config.stores)
        return list(await asyncio.gather(*(
            self._probe(Component.STORE, n, self.runtime.config.stores[n].type,
                        lambda n=n: self._store(n).check())  # type: ignore[misc]
            for n in names)))

    def dispose(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()

    def _ping_state(self) -> None:
        with reader_on(self.engine) as reader:
            reader.ping_ms()

    def _store(self, name: str) -> Store:
        """The store as probes see it: the runtime's, but for DuckDB one that waits for
        another process's lock ``LOCK_WAIT_S`` only (same file, same process-wide
        instance)."""
        found = self._stores.get(name)
        if found is None:
            cfg = self.runtime.config.stores[name]
            if cfg.type == "duckdb":
                from candlekeep.stores.duckdb_store import DuckDBStore

                found = DuckDBStore(name, cfg.path, lock_timeout_s=LOCK_WAIT_S)
            else:
                found = self.runtime.store(name)
            self._stores[name] = found
        return found

    async def _probe(self, kind: Component, name: str, type_: str,
                     call: Callable[[], object]) -> ProbeView:
        slot = self._slots.setdefault((kind, name), _Slot())
        if slot.answer is not None and time.monotonic() - slot.at < self.keep_s:
            return slot.answer
        if slot.task is None:
            slot.task = asyncio.ensure_future(self._run(kind, name, type_, call, slot))
        try:
            return await asyncio.wait_for(asyncio.shield(slot.task), self.timeout_s)
        except TimeoutError:
            return ProbeView(name, kind, type_, False, self.timeout_s * 1000,
                             f"no answer within {self.timeout_s:g} s")

    async def _run(self, kind: Component, name: str, type_: str, call: Callable[[], object],
                   slot: _Slot) -> ProbeView:
        start = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(self._threads, call)
            answer = ProbeView(name, kind, type_, True,
                               round((time.perf_counter() - start) * 1000, 2), None)
        except Exception as exc:
            busy = _locked(exc)
            error = describe_db_error(exc)
            answer = ProbeView(name, kind, type_, False,
                               round((time.perf_counter() - start) * 1000, 2),
                               f"{BUSY}: {error}" if busy else error, busy=busy)
        slot.answer, slot.at, slot.task = answer, time.monotonic(), None
        return answer


def _locked(exc: BaseException) -> bool:
    """Another process holds the store (the store says so with its own error type)."""
    return isinstance(exc, StoreBusyError)
