"""Serving the API with uvicorn: the exposure rule, the listening socket, and a server
that can live inside the daemon's event loop.

The socket is bound before anything else starts, so a busy port or a bad address is one
clear error at start-up rather than a log line after the daemon is already running.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from candlekeep.core.errors import CandlekeepError

log = logging.getLogger("candlekeep.api")


class ExposureError(CandlekeepError):
    """A non-loopback address without a token."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(host: str, has_token: bool, insecure: bool) -> None:
    """Refuse to serve the API beyond this host without a token, unless told to."""
    if is_loopback(host) or has_token or insecure:
        return
    raise ExposureError(
        f"refusing to serve the API on {host} without a token: anyone who can reach it "
        "could read it. Set api.token in the config (e.g. token: ${CANDLEKEEP_API_TOKEN}), "
        "bind 127.0.0.1, or pass --insecure (api.insecure: true) when a proxy in front "
        "authenticates")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise CandlekeepError(f"cannot serve the API on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CandlekeepError(f"cannot serve the API on {host}:{port}: {exc.strerror or exc}"
                              " (is another server using the port?)") from None
    sock.set_inheritable(True)
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server(app: FastAPI, *, access_log: bool) -> uvicorn.Server:
    """uvicorn with our logging (``log_config=None``: its records go to the ``uvicorn``
    loggers, which ``share_logging`` wires to candlekeep's handlers). Access lines hold
    method, path and status, never headers, so no token reaches a log."""
    cfg = uvicorn.Config(app, log_config=None, access_log=access_log, server_header=False,
                         proxy_headers=False, lifespan="on", timeout_graceful_shutdown=5)
    return uvicorn.Server(cfg)


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server inside a loop that owns the signals (the daemon's): it installs
    no handlers of its own and stops when ``should_exit`` is set."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def embedded(app: FastAPI, *, access_log: bool) -> EmbeddedServer:
    base = server(app, access_log=access_log)
    return EmbeddedServer(base.config)


def share_logging(level: int) -> None:
    """uvicorn's loggers write where candlekeep's do, at ``level``."""
    ours = logging.getLogger("candlekeep")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [] if name != "uvicorn" else list(ours.handlers)
        lg.setLevel(level)
        lg.propagate = name != "uvicorn"
