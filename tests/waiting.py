"""Waiting on real things without sleeping blindly, and loopback ports for them."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released): a server that is down,
    or the port a test starts one on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(cond: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll ``cond`` (sync, or returning an awaitable) until it is truthy and return its
    value; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.005)
