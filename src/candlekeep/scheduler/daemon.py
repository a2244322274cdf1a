"""The daemon process: PID file, log file, signals, detaching, and one engine.

The PID file (``data_dir/candlekeep.pid``) is held under an exclusive ``flock`` for the
daemon's whole life. The lock, not the PID inside, says whether a daemon runs: the kernel
drops it when the process dies however it dies, so a stale file after ``kill -9`` is
recognised and replaced, and a recycled PID can never be mistaken for a live daemon.
The state DB is checked too: a live node of the same name (by default the host name)
refuses a second daemon on the same state DB from this host, whatever its data_dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import logging.handlers
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from candlekeep.config.models import Config
from candlekeep.core.errors import CandlekeepError
from candlekeep.jobs.runtime import Runtime
from candlekeep.logs import TEXT_FORMAT, JsonFormatter
from candlekeep.scheduler.engine import Engine, EngineOptions
from candlekeep.scheduler.localproc import is_candlekeep, pid_alive
from candlekeep.scheduler.records import Owner
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.store import LEASE_FACTOR, SchedulerStore
from candlekeep.state.db import StateDB

log = logging.getLogger("candlekeep.scheduler")

PID_NAME = "candlekeep.pid"
STOP_NAME = "candlekeep.stop"
LOG_NAME = "candlekeep.log"
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5


ACQUIRE_WAIT_S = 2.0
"""How long a starting daemon waits for a reader ('status') to let go of the PID file."""


def _shared_lock_possible(fh: IO[str]) -> bool:
    """Whether the lock we could not take exclusively is only held shared (by readers)."""
    try:
        fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fh, fcntl.LOCK_UN)
    return True


class DaemonError(CandlekeepError):
    """The daemon cannot start (or be reached) for a reason the user can fix."""


def default_node(config: Config) -> str:
    """The daemon's node name: configured, or this host's name (one daemon per host)."""
    return config.node or socket.gethostname()


def redact_url(url: str) -> str:
    """The state URL without a password, for files and screens."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def log_path(config: Config) -> Path:
    return config.data_dir / "logs" / LOG_NAME


# -- PID file -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PidInfo:
    pid: int
    node: str
    host: str
    started_at: int
    state: str
    config: str
    log: str
    detached: bool = False
    ready: bool = False
    """Set once the engine has started (state DB reached, jobs registered)."""


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    running: bool
    info: PidInfo | None
    stale: bool


class PidFile:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / PID_NAME
        self._fh: IO[str] | None = None

    def read(self) -> PidInfo | None:
        try:
            raw = json.loads(self.path.read_text() or "{}")
            return PidInfo(**raw) if raw else None
        except (OSError, ValueError, TypeError):
            return None

    def status(self) -> DaemonStatus:
        """Running means some process holds the lock; a file nobody locks is stale."""
        info = self.read()
        try:
            fh = self.path.open("r")
        except FileNotFoundError:
            return DaemonStatus(False, None, False)
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return DaemonStatus(True, info, False)
            fcntl.flock(fh, fcntl.LOCK_UN)
        return DaemonStatus(False, info, True)

    def acquire(self, info: PidInfo) -> PidInfo | None:
        """Take the lock and write ``info``; returns a stale predecessor's info if one was
        replaced. DaemonError when a live daemon holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + ACQUIRE_WAIT_S
        while True:
            fh = self.path.open("a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # A shared holder is a reader ('candlekeep status' for an instant), not a
                # daemon: wait it out. An exclusive holder is a daemon.
                reader = _shared_lock_possible(fh)
                fh.close()
                if reader and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                other = self.read()
                who = f" (pid {other.pid}, node {other.node})" if other else ""
                raise DaemonError(
                    f"a candlekeep daemon is already running on this data_dir{who}; "
                    "'candlekeep stop' first, or 'candlekeep status'") from None
            try:
                same = os.fstat(fh.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous owner unlinked it between our open and lock
                fh.close()
                if time.monotonic() < deadline:
                    continue
                raise DaemonError(f"could not lock {self.path}")
            fh.seek(0)
            stale = self.read()
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(asdict(info)))
            fh.flush()
            os.fsync(fh.fileno())
            self._fh = fh
            return stale if stale and stale.pid != info.pid else None

    def mark_ready(self) -> None:
        """Rewrite our content with ``ready: true`` (we hold the lock: no one else writes)."""
        fh = self._fh
        if fh is None:
            return
        info = self.read()
        if info is None:
            return
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({**asdict(info), "ready": True}))
        fh.flush()

    def release(self) -> None:
        if self._fh is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._fh.close()
        self._fh = None


def write_stop_request(data_dir: Path, pid: int, timeout_s: float) -> None:
    (data_dir / STOP_NAME).write_text(json.dumps({"pid": pid, "timeout": timeout_s}))


def read_stop_request(data_dir: Path, pid: int) -> float | None:
    path = data_dir / STOP_NAME
    try:
        raw = json.loads(path.read_text())
        path.unlink()
    except (OSError, ValueError):
        return None
    if isinstance(raw, dict) and raw.get("pid") == pid:
        try:
            return float(raw["timeout"])
        except (KeyError, TypeError, ValueError):
            return None
    return None


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
    """The state DB, retried with backoff while it is unreachable (logged, not fatal)."""
    delay = 0.5
    while not stop.is_set():
        try:
            return runtime.state
        except Exception as exc:
            log.error("state DB unreachable url=%s error=%r retry_in=%.1fs",
                      redact_url(runtime.config.state_url), exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(30.0, delay * 2)
    return None


async def serve(config: Config, specs: Sequence[JobSpec], options: EngineOptions,
                node: str, pidfile: PidFile | None = None) -> None:
    """Run the engine until SIGTERM/SIGINT; the stop request file may set the timeout."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    engine: Engine | None = None
    pid = os.getpid()

    def on_signal(signame: str) -> None:
        timeout = read_stop_request(config.data_dir, pid)
        log.info("signal received signal=%s stop_timeout=%s", signame,
                 timeout if timeout is not None else "default")
        stop.set()
        if engine is not None:
            engine.request_stop(timeout)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    runtime = Runtime(config, node=node)
    store: SchedulerStore | None = None
    try:
        state = await _connect(runtime, stop)
        if state is None:
            return
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
        if store is not None:
            store.dispose()
        await runtime.aclose()


def run_daemon(config: Config, specs: Sequence[JobSpec], options: EngineOptions, *,
               json_logs: bool = False, console: bool = True, detached: bool = False) -> None:
    """Hold the PID file and serve; raises DaemonError if another daemon holds it."""
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
        asyncio.run(serve(config, specs, options, node, pidfile))
    finally:
        pidfile.release()


def detach(config: Config, argv: list[str], wait_s: float = 30.0) -> tuple[PidInfo, bool]:
    """Start ``candlekeep <argv> --detached`` in a new session and wait until its engine has
    started; its early output goes to ``logs/daemon.out``. Returns the PID file's content
    and whether the daemon became ready in time (it keeps retrying an unreachable state DB
    in the background)."""
    pidfile = PidFile(config.data_dir)
    st = pidfile.status()
    if st.running:
        who = f" (pid {st.info.pid})" if st.info else ""
        raise DaemonError(f"a candlekeep daemon is already running{who}")
    out_path = log_path(config).parent / "daemon.out"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "candlekeep", *argv], stdin=subprocess.DEVNULL,
            stdout=out, stderr=out, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + wait_s
    info: PidInfo | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _tail(out_path, 20)
            raise DaemonError(f"the daemon exited at start (status {proc.returncode}):\n{tail}")
        st = pidfile.status()
        if st.running and st.info is not None and st.info.pid == proc.pid:
            info = st.info
            if info.ready:
                return info, True
        time.sleep(0.05)
    if info is not None:
        return info, False
    raise DaemonError(f"the daemon did not start within {wait_s:.0f}s; see {out_path}")


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_daemon(config: Config, timeout_s: float, wait_extra_s: float = 30.0) -> PidInfo | None:
    """SIGTERM the daemon after leaving it the stop timeout; wait until it is gone.
    None if no daemon was running (a stale PID file is removed)."""
    pidfile = PidFile(config.data_dir)
    st = pidfile.status()
    if not st.running:
        if st.stale:
            with contextlib.suppress(FileNotFoundError):
                pidfile.path.unlink()
        return None
    assert st.info is not None, "a locked PID file always has content"
    here = socket.gethostname()
    if st.info.host != here:
        raise DaemonError(
            f"{pidfile.path} was written by a daemon on host {st.info.host} (pid "
            f"{st.info.pid}), not on {here}: a PID from another machine means nothing here; "
            f"run 'candlekeep stop' on {st.info.host}")
    write_stop_request(config.data_dir, st.info.pid, timeout_s)
    try:
        os.kill(st.info.pid, signal.SIGTERM)
    except ProcessLookupError:
        return st.info
    deadline = time.monotonic() + timeout_s + wait_extra_s
    while time.monotonic() < deadline:
        if not pidfile.status().running:
            return st.info
        time.sleep(0.1)
    raise DaemonError(f"daemon pid {st.info.pid} did not stop within "
                      f"{timeout_s + wait_extra_s:.0f}s; 'kill -9 {st.info.pid}' if it hangs")


def info_dict(info: PidInfo | None) -> dict[str, Any] | None:
    return None if info is None else asdict(info)
