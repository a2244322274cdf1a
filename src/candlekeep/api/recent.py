"""Answers kept for a moment: the routes that monitors poll hard (``/ingestion/status``)
compute once per key and second, however many requests arrive, and concurrent askers
of the same key share one computation. Errors are never kept. ``keep_s`` 0 turns both off:
every request computes its own answer (what a benchmark of the work itself needs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable

MAX_KEYS = 256
"""Distinct parameter sets kept at once; beyond it the oldest answers go first."""


class Recent:
    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._kept: dict[Hashable, tuple[float, bytes]] = {}
        self._pending: dict[Hashable, asyncio.Future[bytes]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[bytes]]) -> bytes:
        if self.keep_s <= 0:
            return await make()
        hit = self._kept.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.keep_s:
            return hit[1]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(make())
            self._pending[key] = pending
            pending.add_done_callback(lambda f: self._done(key, f))
        return await asyncio.shield(pending)

    def _done(self, key: Hashable, fut: asyncio.Future[bytes]) -> None:
        self._pending.pop(key, None)
        if fut.cancelled() or fut.exception() is not None:
            return
        if len(self._kept) >= MAX_KEYS:
            for old in sorted(self._kept, key=lambda k: self._kept[k][0])[:MAX_KEYS // 4]:
                del self._kept[old]
        self._kept[key] = (time.monotonic(), fut.result())
