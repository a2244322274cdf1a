"""Reachability probes for ``/system/status`` and ``/system/health``: the state DB and each
store, each in a thread under a timeout.

A probe in flight is shared by every request that arrives meanwhile, and its answer is
kept for a moment: a hung store costs one stuck thread, not one per request, and a burst
of health checks costs one round trip per component.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from candlekeep.api.db import ReaderPool
from candlekeep.api.errors import describe_db_error
from candlekeep.jobs.runtime import Runtime
from candlekeep.queries.health import Component, ProbeView

TIMEOUT_S = 3.0
KEEP_S = 2.0


@dataclass(slots=True)
class _Slot:
    task: asyncio.Task[ProbeView] | None = None
    answer: ProbeView | None = None
    at: float = 0.0


class Prober:
    def __init__(self, runtime: Runtime, pool: ReaderPool, *, timeout_s: float = TIMEOUT_S,
                 keep_s: float = KEEP_S) -> None:
        self.runtime = runtime
        self.pool = pool
        self.timeout_s = timeout_s
        self.keep_s = keep_s
        self._slots: dict[tuple[Component, str], _Slot] = {}

    async def state_db(self) -> ProbeView:
        return await self._probe(Component.STATE_DB, "state_db",
                                 self.pool.engine.dialect.name, self._ping_state)

    async def stores(self) -> list[ProbeView]:
        names = sorted(self.runtime.config.stores)
        return list(await asyncio.gather(*(
            self._probe(Component.STORE, n, self.runtime.config.stores[n].type,
                        lambda n=n: self.runtime.store(n).check())  # type: ignore[misc]
            for n in names)))

    def _ping_state(self) -> None:
        with self.pool.reader() as reader:
            reader.ping_ms()

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
            await asyncio.to_thread(call)
            answer = ProbeView(name, kind, type_, True,
                               round((time.perf_counter() - start) * 1000, 2), None)
        except Exception as exc:
            answer = ProbeView(name, kind, type_, False,
                               round((time.perf_counter() - start) * 1000, 2),
                               describe_db_error(exc))
        slot.answer, slot.at, slot.task = answer, time.monotonic(), None
        return answer
