"""Warnings that every request would repeat during an outage (the state DB down, each of
hundreds of requests a second failing the same way) are written once per interval, with how
many were held back: a flood would rotate the daemon's own log lines out of its log files.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

EVERY_S = 60.0


class Throttled:
    """``warning(kind, …)`` logs the first of a kind, then at most one per ``every_s``."""

    def __init__(self, logger: logging.Logger, every_s: float = EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every_s = every_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()  # reader threads and the loop both warn

    def warning(self, kind: str, msg: str, *args: object) -> None:
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.every_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            msg, args = f"{msg} held_back=%d", (*args, held)
        self.logger.warning(msg, *args)
