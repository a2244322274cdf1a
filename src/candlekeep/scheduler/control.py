"""Controlling a daemon from outside: its PID file, starting it detached, stopping it.

The PID file (``data_dir/candlekeep.pid``) is held under an exclusive ``flock`` for the
daemon's whole life. The lock, not the PID inside, says whether a daemon runs: the kernel
drops it when the process dies however it dies, so a stale file after ``kill -9`` is
recognised and replaced, and a recycled PID can never be mistaken for a live daemon.

Light on purpose: ``status`` and ``list`` read the PID file without loading the engine.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from candlekeep.core.errors import CandlekeepError

if TYPE_CHECKING:
    from candlekeep.config.models import Config

PID_NAME = "candlekeep.pid"
STOP_NAME = "candlekeep.stop"
LOG_NAME = "candlekeep.log"


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
