"""Loopback plumbing the benchmarks share: a free port, and waiting for a server process."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, timeout_s: float = 30.0) -> None:
    """Until something accepts connections on 127.0.0.1:``port`` (a server process that
    has started), else exit naming the port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the server did not start listening on port {port}")
