"""Recognising and ending what a dead daemon's run left behind, against real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from candlekeep.jobs.procgroup import ProcessIdentity, end_recorded_group, identify

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process identities need /proc")


def gone(pid: int) -> bool:
    """Not running (absent or a zombie: nothing reaps orphans in some containers)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return True
    return stat.rpartition(b")")[2].split()[0] == b"Z"


@pytest.fixture
def run_group() -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """A shell leading a new session with two background sleeps, as a command job runs
    one; whatever is left of the group is killed at the end."""
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 300 >/dev/null & echo $!; sleep 300 >/dev/null & echo $!; wait"],
        stdout=subprocess.PIPE, start_new_session=True)
    assert leader.stdout is not None
    children = [int(leader.stdout.readline()) for _ in range(2)]
    yield leader, children
    for pid in [leader.pid, *children]:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)
    leader.wait()
    leader.stdout.close()


def test_identity_text_round_trips_and_garbage_is_refused(
        run_group: tuple[subprocess.Popen[bytes], list[int]]) -> None:
    leader, _ = run_group
    identity = identify(leader.pid)
    assert identity is not None and identity.pgid == leader.pid
    assert ProcessIdentity.from_text(identity.to_text()) == identity
    for bad in ("", "12:34", "0:34:abc", "x:1:abc", "12:34:abc:d", "-5:34:abc"):
        with pytest.raises(ValueError, match="process identity"):
            ProcessIdentity.from_text(bad)


def test_identify_needs_a_group_leader(
        run_group: tuple[subprocess.Popen[bytes], list[int]]) -> None:
    _, children = run_group
    assert identify(children[0]) is None
    assert identify(2**22 + 12345) is None  # above any pid_max: no such process


async def test_a_command_name_with_spaces_and_parentheses_is_parsed(tmp_path: Path) -> None:
    odd = tmp_path / "a) 1 2 (b"
    odd.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(odd), "300"], start_new_session=True)
    try:
        identity = identify(proc.pid)
        assert identity is not None and identity.pgid == proc.pid
        assert await end_recorded_group(identity.to_text()) == 1
        assert proc.wait() == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


async def test_ends_the_leftovers_of_a_group_whose_leader_died(
        run_group: tuple[subprocess.Popen[bytes], list[int]]) -> None:
    leader, children = run_group
    identity = identify(leader.pid)
    assert identity is not None
    leader.kill()  # as PR_SET_PDEATHSIG does when the daemon dies: the children stay
    leader.wait()
    assert not any(gone(pid) for pid in children)
    assert await end_recorded_group(identity.to_text()) == 2
    assert all(gone(pid) for pid in children)


@pytest.mark.parametrize("mismatch", ["another boot", "a later leader", "the pid reused"])
async def test_leaves_processes_that_are_not_that_groups_leftovers(
        run_group: tuple[subprocess.Popen[bytes], list[int]], mismatch: str) -> None:
    leader, children = run_group
    identity = identify(leader.pid)
    assert identity is not None
    if mismatch == "another boot":
        recorded = replace(identity, boot_id=str(uuid.uuid4()))
    elif mismatch == "a later leader":  # the group was recorded after these processes began
        recorded = replace(identity, start_ticks=identity.start_ticks + 10**9)
    else:  # the leader is alive but is not the recorded one: its pid was reused
        recorded = replace(identity, start_ticks=identity.start_ticks - 1)
    if mismatch != "the pid reused":
        leader.kill()
        leader.wait()
    assert await end_recorded_group(recorded.to_text()) == 0
    assert not any(gone(pid) for pid in children)
