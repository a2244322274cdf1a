"""Process groups a run owns: ending one, and recognising what a dead daemon's run left.

A ``command`` run starts its program as the leader of a new session and process group
(pgid = the leader's pid), so "everything the run started" is "the group", and ending the
run means ending the group. If the daemon dies first (kill -9, OOM killer), the leader dies
with it (PR_SET_PDEATHSIG) but its children do not; so the run records the group's
``ProcessIdentity`` and the restarted daemon calls ``end_recorded_group``. A pgid is only a
number that the kernel hands out again, hence the identity also holds the leader's start
time and the boot id: together they tell a leftover of that group from a process that got
the same numbers later. Recognising processes needs Linux's /proc; elsewhere nothing is
recorded and nothing is ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

KILL_GRACE_S = 5.0
"""After SIGTERM, how long a process group gets before SIGKILL."""
KILL_SETTLE_S = 1.0
"""After SIGKILL, how long to wait for the group to be gone (a process stuck in
uninterruptible sleep dies only when it wakes up; we stop waiting for it then)."""
POLL_S = 0.05
"""How often to look whether a signalled group is gone: nothing can be awaited for
processes that are not our children."""

_IDENTITY = re.compile(r"([1-9][0-9]*):([0-9]+):([0-9a-f-]+)")


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """A process group as one boot of one machine knows it: a pgid can be reused, a (pgid,
    leader start time, boot id) triple cannot."""

    pgid: int
    start_ticks: int
    """The leader's start time, in clock ticks since boot (/proc/<pid>/stat field 22)."""
    boot_id: str
    """/proc/sys/kernel/random/boot_id: start times count from that boot only."""

    def to_text(self) -> str:
        """A compact form for a run row: ``pgid:start_ticks:boot_id``."""
        return f"{self.pgid}:{self.start_ticks}:{self.boot_id}"

    @classmethod
    def from_text(cls, text: str) -> ProcessIdentity:
        """The inverse of ``to_text``; ValueError for anything else (never a pgid of 0,
        which would mean "our own group" to kill())."""
        match = _IDENTITY.fullmatch(text)
        if match is None:
            raise ValueError(f"not a process identity: {text!r}")
        return cls(int(match[1]), int(match[2]), match[3])


@dataclass(frozen=True, slots=True)
class _Stat:
    """The fields of /proc/<pid>/stat this module needs."""

    pid: int
    state: str
    pgrp: int
    start_ticks: int

    @property
    def running(self) -> bool:
        """Not dead: a zombie cannot be signalled away, only reaped by its parent."""
        return self.state not in ("Z", "X")


def identify(pid: int) -> ProcessIdentity | None:
    """The identity of the process group that ``pid`` leads; None when it leads none, is
    gone, or this is not Linux."""
    if sys.platform != "linux":
        return None
    stat = _read_stat(pid)
    if stat is None or stat.pgrp != pid:
        return None
    return ProcessIdentity(pid, stat.start_ticks, _boot_id())


async def end_group(pgid: int, grace_s: float = KILL_GRACE_S) -> signal.Signals | None:
    """Ends our own process group: SIGTERM, up to ``grace_s`` for it to go, then SIGKILL.

    Returns the last signal it took, or None when nothing in the group was running.
    """
    return await _escalate(functools.partial(_signal_group, pgid),
                           functools.partial(_group_running, pgid), grace_s)


async def end_recorded_group(text: str, grace_s: float = KILL_GRACE_S) -> int:
    """Ends what is left of the group a dead daemon's run recorded (``to_text``), and only
    that; returns how many processes it signalled (0 off Linux).

    A leftover has the recorded pgid, started at or after the recorded leader, on the
    same boot. While any process is in a group, the kernel gives no new process that
    group's number as its pid; so a group with this pgid that is *not* the recorded one
    has a leader whose start time differs, and when a process with pid == pgid exists,
    its start time must be the recorded one. Each process is signalled through a pidfd
    opened before its start time is checked again, so a pid reused meanwhile is spared.
    """
    recorded = ProcessIdentity.from_text(text)
    if sys.platform != "linux" or recorded.boot_id != _boot_id():
        return 0
    signalled: set[tuple[int, int]] = set()

    def send(sig: signal.Signals) -> None:
        for stat in _leftovers(recorded):
            if _signal_if_same(stat, sig):
                signalled.add((stat.pid, stat.start_ticks))

    await _escalate(send, lambda: bool(_leftovers(recorded)), grace_s)
    return len(signalled)


async def _escalate(send: Callable[[signal.Signals], None], running: Callable[[], bool],
                    grace_s: float) -> signal.Signals | None:
    """SIGTERM, up to ``grace_s`` for everything to exit, then SIGKILL."""
    if not running():
        return None
    send(signal.SIGTERM)
    if await _gone_within(running, grace_s):
        return signal.SIGTERM
    send(signal.SIGKILL)
    await _gone_within(running, KILL_SETTLE_S)
    return signal.SIGKILL


async def _gone_within(running: Callable[[], bool], seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while running():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_running(pgid: int) -> bool:
    """Whether any process of the group still runs. kill(0) alone also counts zombies,
    and where nothing reaps orphans (a container whose init does not) a dead member
    would keep the group "running" for ever; so on Linux a live group is looked at."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform != "linux":
        return True
    return any(s.pgrp == pgid and s.running for s in _all_stats())


def _leftovers(recorded: ProcessIdentity) -> list[_Stat]:
    """The running processes that belong to the recorded group (see end_recorded_group)."""
    stats = list(_all_stats())
    leader = next((s for s in stats if s.pid == recorded.pgid), None)
    if leader is not None and leader.start_ticks != recorded.start_ticks:
        return []  # the pid was reused: the recorded group is gone, this one is another
    return [s for s in stats if s.pgrp == recorded.pgid and s.running
            and s.start_ticks >= recorded.start_ticks]


def _signal_if_same(stat: _Stat, sig: signal.Signals) -> bool:
    """Signals the process ``stat`` was read from, not one that took its pid since."""
    try:
        with _pidfd(stat.pid) as pidfd:
            now = _read_stat(stat.pid)
            if now is None or now.start_ticks != stat.start_ticks:
                return False
            if pidfd is None:
                os.kill(stat.pid, sig)
            else:
                signal.pidfd_send_signal(pidfd, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@contextlib.contextmanager
def _pidfd(pid: int) -> Iterator[int | None]:
    """A pidfd for ``pid``: signals sent through it reach that process or none. None on
    kernels before 5.3, which have no pidfds (a pid could then be reused between the
    check and the kill; the window is microseconds)."""
    try:
        fd: int | None = os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
        fd = None
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def _all_stats() -> Iterator[_Stat]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _read_stat(int(name))
            if stat is not None:
                yield stat


def _read_stat(pid: int) -> _Stat | None:
    """/proc/<pid>/stat, or None once the process is gone. The command name (field 2) is
    in parentheses and may hold spaces, parentheses and any bytes: the fields this needs
    come after its *last* closing parenthesis."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw.rpartition(b")")[2].split()
    # fields[0] is field 3 (state); field n is fields[n - 3]
    return _Stat(pid=pid, state=fields[0].decode(), pgrp=int(fields[2]),
                 start_ticks=int(fields[19]))


@functools.cache
def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
