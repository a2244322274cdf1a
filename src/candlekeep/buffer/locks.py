"""The two OS file locks of a buffer folder.

``NameClock`` hands out file sequence numbers: writers in any process take the next number
and rename their file under one lock, so the order of names is the order in which files
became visible, even across processes and a wall clock stepping back. ``exclusive`` keeps
two flushes (the daemon's job and a CLI command) off one folder at a time.

Both are ``fcntl.flock`` locks, which the kernel drops when their holder dies: a process
killed with SIGKILL never leaves a buffer locked.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

NAMES_LOCK = ".names.lock"
FLUSH_LOCK = ".flush.lock"

_POLL_MAX_S = 0.1


class NameClock:
    """Strictly increasing sequence numbers near ``time.time_ns()``, shared by every process
    writing one folder: the last number handed out lives in the lock file itself."""

    def __init__(self, folder: Path, seed: Callable[[], int]) -> None:
        """``seed`` gives the highest number already used in the folder, for a lock file
        that is new (or lost)."""
        self._path = folder / NAMES_LOCK
        self._seed = seed
        self._thread_lock = threading.Lock()  # flock does not exclude threads of one process
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        # A forked child shares the parent's open file, and with it the flock: reopen.
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def claim(self) -> Iterator[int]:
        """The next number, held until the block ends: do the rename inside it."""
        with self._locked() as fd:
            seq = max(time.time_ns(), self._last(fd) + 1)
            os.pwrite(fd, seq.to_bytes(8, "big"), 0)
            yield seq

    def mark(self) -> int:
        """The last number handed out. Every file named with a number up to it is already
        in the folder (or its writer died before the rename): numbers are taken and files
        renamed under one lock, and this reads under that lock."""
        with self._locked() as fd:
            return self._last(fd)

    @contextmanager
    def _locked(self) -> Iterator[int]:
        with self._thread_lock:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield fd
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _last(self, fd: int) -> int:
        raw = os.pread(fd, 8, 0)
        return int.from_bytes(raw, "big") if len(raw) == 8 else self._seed()

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


@contextmanager
def exclusive(folder: Path, wait_s: float) -> Iterator[int | None]:
    """Hold the folder's flush lock; yields None when held, or the holder's pid (0 when
    unknown) if it stayed taken for ``wait_s``."""
    fd = os.open(folder / FLUSH_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    yield _holder(fd)
                    return
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, _POLL_MAX_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield None
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0) or b"0")
    except ValueError:
        return 0
