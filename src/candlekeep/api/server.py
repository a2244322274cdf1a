"""Serving the API with uvicorn: the listening socket, the exposure rule judged on what was
bound, and one server object that ``candlekeep serve`` runs alone and the daemon runs in its
own event loop (it implements ``scheduler.daemon.Service``; the CLI builds it, so the
scheduler never imports the web stack).

The socket is bound before anything else starts, so a busy port or a bad address is one
clear error at start-up rather than a log line after the daemon is already running. The
exposure rule judges the address the socket got, not the name asked for: ``localhost`` is
whatever it resolves to, ``::ffff:127.0.0.1`` is loopback, ``[::1]`` binds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterator, Sequence

import uvicorn
from fastapi import FastAPI

from candlekeep.config.models import Config
from candlekeep.config.ops import ApiConfig, is_loopback
from candlekeep.core.errors import CandlekeepError
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.spec import JobSpec

log = logging.getLogger("candlekeep.api")

MIN_TOKEN = 16
"""Characters an ``api.token`` needs before the API serves beyond this host."""
STOP_S = 10.0
"""How long the daemon's API gets to finish its requests once the engine has drained."""


class ExposureError(CandlekeepError):
    """A non-loopback address without a (long enough) token."""


class ApiStopped(CandlekeepError):
    """The API server inside the daemon ended without being asked to."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one; ``[::1]`` as written
    in a URL works too)."""
    name = host.strip("[]")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
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


def bound_address(sock: socket.socket) -> str:
    """The address ``sock`` listens on, an IPv4-mapped IPv6 one as its IPv4 address."""
    host: str = sock.getsockname()[0]
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return host


def check_exposure(sock: socket.socket, asked: str, token: str | None,
                   insecure: bool) -> bool:
    """Refuse to serve beyond this host without a token (unless told to) or with a short
    one; True when the bound address is beyond this host."""
    where = bound_address(sock)
    if is_loopback(where):
        return False
    shown = asked if asked.strip("[]") == where else f"{asked} ({where})"
    if token is None and not insecure:
        raise ExposureError(
            f"refusing to serve the API on {shown} without a token: anyone who can reach it "
            "could read it. Set api.token in the config (e.g. token: "
            "${CANDLEKEEP_API_TOKEN}), bind 127.0.0.1, or pass --insecure (api.insecure: "
            "true) when a proxy in front authenticates")
    if token is not None and len(token) < MIN_TOKEN:
        raise ExposureError(
            f"refusing to serve the API on {shown}: api.token has {len(token)} characters, "
            f"and a token guarded only by itself beyond this host needs at least {MIN_TOKEN} "
            "characters (e.g. the output of 'openssl rand -hex 24')")
    return True


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def host_header(host: str) -> str:
    """``host`` as a Host header names it (IPv6 in brackets)."""
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


def _uvicorn_config(app: FastAPI, *, access_log: bool) -> uvicorn.Config:
    """uvicorn with our logging (``log_config=None``: its records go to the ``uvicorn``
    loggers, which ``share_logging`` wires to candlekeep's handlers). Access lines hold
    method, path and status, never headers, so no token reaches a log."""
    return uvicorn.Config(app, log_config=None, access_log=access_log, server_header=False,
                          proxy_headers=False, lifespan="on", timeout_graceful_shutdown=5)


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server inside a loop that owns the signals (the daemon's): it installs
    no handlers of its own and stops when ``should_exit`` is set."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    """The API of ``config`` on one socket: bound, judged and built by ``open``, then run
    alone (``run``) or in the daemon's loop (``start``/``stop``)."""

    def __init__(self, config: Config, specs: Sequence[JobSpec], *, host: str | None = None,
                 port: int | None = None, insecure: bool = False, access_log: bool = False,
                 keep_s: float | None = None) -> None:
        api = config.api or ApiConfig()
        self.config = config
        self.specs = list(specs)
        self.host = host or api.host
        self.port = api.port if port is None else port
        self.insecure = insecure or api.insecure
        self.token = api.token.get_secret_value() if api.token else None
        self.access_log = access_log
        self.keep_s = keep_s
        self.sock: socket.socket | None = None
        self.app: FastAPI | None = None
        self.url = ""
        self.server: uvicorn.Server | None = None
        """uvicorn, while the daemon runs it."""
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def open(self, runtime: Runtime | None = None) -> str:
        """Bind, judge the bound address and build the app (on ``runtime``, else one of
        its own); the URL served. Nothing stays bound when any step fails."""
        from candlekeep.api.app import Binding, create_app

        sock = bind(self.host, self.port)
        try:
            public = check_exposure(sock, self.host, self.token, self.insecure)
            hosts = {host_header(self.host), host_header(bound_address(sock))}
            self.app = create_app(self.config, self.specs, runtime,
                                  binding=Binding(public=public, hosts=tuple(sorted(hosts))),
                                  keep_s=self.keep_s)
        except BaseException:
            sock.close()
            raise
        self.sock, self.url = sock, address(sock)
        return self.url

    def run(self) -> None:
        """Serve until Ctrl-C/SIGTERM (uvicorn's own signal handling): ``candlekeep serve``."""
        assert self.app is not None and self.sock is not None, "open() first"
        try:
            uvicorn.Server(_uvicorn_config(self.app, access_log=self.access_log)).run(
                sockets=[self.sock])
        finally:
            self.sock.close()

    def start(self, runtime: Runtime, on_exit: Callable[[BaseException], None]) -> None:
        """Open on the daemon's ``runtime`` and serve in the running loop; ``on_exit``
        hears it if the server ends without ``stop``."""
        share_logging(logging.INFO)
        self.open(runtime)
        assert self.app is not None and self.sock is not None
        self.server = EmbeddedServer(_uvicorn_config(self.app, access_log=self.access_log))
        self._task = asyncio.ensure_future(self._serve(self.server, self.sock))

        def ended(task: asyncio.Task[None]) -> None:
            if self._stopping or task.cancelled():
                return
            on_exit(task.exception() or ApiStopped("the API server stopped by itself"))

        self._task.add_done_callback(ended)
        log.info("api serving url=%s", self.url)

    @staticmethod
    async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits the process when the app cannot start
            raise ApiStopped(f"the API server could not start (exit status {exc.code}); "
                             "its log lines above say why") from None

    async def stop(self) -> None:
        self._stopping = True
        if self.server is not None:
            self.server.should_exit = True
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(self._task, STOP_S)
            except Exception as exc:  # a stuck connection must not hold the daemon's exit
                log.warning("api did not stop cleanly error=%r", exc)
        if self.sock is not None:
            self.sock.close()


def share_logging(level: int) -> None:
    """uvicorn's loggers write where candlekeep's do, at ``level``."""
    ours = logging.getLogger("candlekeep")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [] if name != "uvicorn" else list(ours.handlers)
        lg.setLevel(level)
        lg.propagate = name != "uvicorn"
