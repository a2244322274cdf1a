"""The daemon process itself: its log file, signals, and one engine (the PID file and
the commands that steer a daemon from outside live in control.py).

Besides the PID file's lock, the state DB is checked: a live node of the same name (by
default the host name) refuses a second daemon on the same state DB from this host,
whatever its data_dir.

What else the daemon serves in its loop (the HTTP API) comes in as a ``Service`` built by
the CLI: the scheduler never imports the web stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from candlekeep.config.models import Config
from candlekeep.core.text import redact_url
from candlekeep.jobs.runtime import Runtime
from candlekeep.logs import TEXT_FORMAT, JsonFormatter
from candlekeep.scheduler.control import (
    DaemonError,
    PidFile,
    PidInfo,
    default_node,
    log_path,
    read_stop_request,
)
from candlekeep.scheduler.engine import Engine, EngineOptions
from candlekeep.scheduler.localproc import is_candlekeep, pid_alive
from candlekeep.scheduler.records import Owner
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.store import LEASE_FACTOR, SchedulerStore
from candlekeep.state.db import StateDB

log = logging.getLogger("candlekeep.scheduler")
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5


# -- logging --------------------------------------------------------------------------


class SafeRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A log file whose failures (disk full, deleted folder) never reach the daemon's loop:
    they are reported on stderr at most once a minute, and writing resumes by itself."""

    _last_complaint = 0.0

    def handleError(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now - self._last_complaint >= 60:
            self._last_complaint = now
            exc = sys.exc_info()[1]
            with contextlib.suppress(Exception):
                sys.stderr.write(f"candlekeep: cannot write log file {self.baseFilename}: "
                                 f"{exc!r}\n")
        with contextlib.suppress(Exception):
            if self.stream is not None:
                self.stream.close()
        self.stream = None  # type: ignore[assignment]  # reopened on the next record


def setup_daemon_logging(config: Config, *, json_lines: bool, console: bool) -> Path:
    path = log_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = SafeRotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS,
                                      encoding="utf-8")
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("candlekeep")
    console_level = root.level or logging.WARNING
    for h in list(root.handlers):
        if console:
            h.setLevel(console_level)
        else:
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(min(logging.INFO, console_level))
    return path


# -- running --------------------------------------------------------------------------


def _check_node(store: SchedulerStore, node: str) -> None:
    row = store.get_node(node)
    if row is None or row.status != "running":
        return
    now = int(time.time() * 1000)
    if not row.alive(now):
        return
    host = socket.gethostname()
    if row.host == host and (row.pid == os.getpid() or not pid_alive(row.pid)
                             or not is_candlekeep(row.pid)):
        return  # our own predecessor, gone without saying so
    raise DaemonError(
        f"node {node!r} is already running on host {row.host} (pid {row.pid}) against this "
        "state DB; stop it first, or give this daemon another name with 'node:' in the "
        "config")


async def _connect(runtime: Runtime, stop: asyncio.Event) -> StateDB | None:
    """The state DB, retried with backoff while it is unreachable (logged, not fatal).
    Connecting (and upgrading the schema) runs in a thread: a database that accepts and
    never answers holds that thread, not the loop the API answers in; a stop request
    ends the wait at once."""
    delay = 0.5
    while not stop.is_set():
        attempt = asyncio.ensure_future(asyncio.to_thread(lambda: runtime.state))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([attempt, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not attempt.done():
            attempt.add_done_callback(_discard)  # its thread ends within the connect timeout
            return None
        exc = attempt.exception()
        if exc is None:
            return attempt.result()
        log.error("state DB unreachable url=%s error=%r retry_in=%.1fs",
                  redact_url(runtime.config.state_url), exc, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(30.0, delay * 2)
    return None


def _discard(fut: asyncio.Future[StateDB]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "never retrieved" warning at exit


class Service(Protocol):
    """Something served in the daemon's loop beside the engine: the HTTP API
    (``candlekeep.api.server.ApiServer``, which the ``start`` command builds)."""

    def start(self, runtime: Runtime, on_exit: Callable[[BaseException], None]) -> None:
        """Begin serving in the running loop on the daemon's ``runtime``; raise, naming
        the cause, when it cannot (a busy port). ``on_exit`` hears of an end that
        ``stop`` did not ask for."""

    async def stop(self) -> None:
        """Finish (bounded: a stuck connection never holds the daemon's exit)."""


async def serve(config: Config, specs: Sequence[JobSpec], options: EngineOptions,
                node: str, pidfile: PidFile | None = None, api: Service | None = None
                ) -> None:
    """Run the engine (and ``api``, when given) until SIGTERM/SIGINT; the stop request
    file may set the timeout.

    If the API ends by itself, the daemon logs why, drains its running jobs and stops
    with an error rather than running on unwatched: /health and /metrics would be gone
    while the process looks alive. A supervisor (systemd's Restart=on-failure) starts it
    afresh; restarting the API inside a process in an unknown state would hide a failure
    that may recur at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    engine: Engine | None = None
    pid = os.getpid()
    failed: list[BaseException] = []

    def on_signal(signame: str) -> None:
        timeout = read_stop_request(config.data_dir, pid)
        log.info("signal received signal=%s stop_timeout=%s", signame,
                 timeout if timeout is not None else "default")
        stop.set()
        if engine is not None:
            engine.request_stop(timeout)

    def on_api_exit(exc: BaseException) -> None:
        log.error("api stopped unexpectedly, stopping the daemon error=%r", exc)
        failed.append(exc)
        stop.set()
        if engine is not None:
            engine.request_stop(options.stop_timeout_s)

    runtime = Runtime(config, node=node)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    store: SchedulerStore | None = None
    started_api = False
    try:
        if api is not None:  # before the state DB answers: /health and /system/health say so
            api.start(runtime, on_api_exit)
            started_api = True
        state = await _connect(runtime, stop)
        if state is not None:
            lease_ms = int(options.heartbeat_s * 1000) * LEASE_FACTOR
            store = SchedulerStore(state, Owner(node, runtime.instance, lease_ms),
                                   max_skip_rows=options.max_skip_rows, pooled=True,
                                   db_clock=options.db_clock)
            await asyncio.to_thread(_check_node, store, node)
            engine = Engine(runtime, specs, options, store=store)
            if stop.is_set():
                engine.request_stop(options.stop_timeout_s)
            running = asyncio.ensure_future(engine.run())
            started = asyncio.ensure_future(engine.started.wait())
            await asyncio.wait([running, started], return_when=asyncio.FIRST_COMPLETED)
            if started.done() and pidfile is not None:
                pidfile.mark_ready()
            started.cancel()
            await running
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if api is not None and started_api:
            await api.stop()
        if store is not None:
            store.dispose()
        await runtime.aclose()
    if failed:
        raise DaemonError(f"the HTTP API stopped unexpectedly ({failed[0]}); the daemon "
                          "stopped with it: see the log for the cause")


def run_daemon(config: Config, specs: Sequence[JobSpec], options: EngineOptions, *,
               json_logs: bool = False, console: bool = True, detached: bool = False,
               api: Service | None = None) -> None:
    """Hold the PID file and serve (with ``api`` beside the engine); raises DaemonError if
    another daemon holds it."""
    node = default_node(config)
    pidfile = PidFile(config.data_dir)
    info = PidInfo(pid=os.getpid(), node=node, host=socket.gethostname(),
                   started_at=int(time.time() * 1000), state=redact_url(config.state_url),
                   config=str(config.config_path or ""), log=str(log_path(config)),
                   detached=detached)
    stale = pidfile.acquire(info)
    try:
        path = setup_daemon_logging(config, json_lines=json_logs, console=console)
        if stale is not None:
            log.warning("replaced a stale PID file pid=%s node=%s", stale.pid, stale.node)
        log.info("daemon starting pid=%s node=%s state=%s log=%s jobs=%s", info.pid, node,
                 info.state, path, sum(1 for s in specs if s.scheduled))
        asyncio.run(serve(config, specs, options, node, pidfile, api))
    finally:
        pidfile.release()


