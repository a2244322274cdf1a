"""Real daemon processes on seconds schedules: start/stop/status, SIGTERM draining,
kill -9 and restart, refusing a second daemon, and two nodes on one PostgreSQL.

Waiting is always polling the state DB (or the PID file) against a deadline.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path

import pytest

from candlekeep.scheduler.daemon import PidFile
from candlekeep.state.db import StateDB
from tests.scheduler.procs import Daemon, cli, runs, wait_for, write_config

pytestmark = pytest.mark.slow


def test_start_status_stop_on_a_seconds_schedule(tmp_path: Path,
                                                 daemons: list[Daemon]) -> None:
    cfg = write_config(tmp_path, [
        {"name": "echo", "type": "command", "schedule": "* * * * * *",
         "params": {"argv": ["sh", "-c", "echo tick"]}},
        {"name": "slowcmd", "type": "command", "schedule": "*/2 * * * * *", "timeout": "1s",
         "params": {"argv": ["sh", "-c", "echo $$ >> pids; exec sleep 30"]}},
    ])
    daemons.append(Daemon(cfg))
    state = StateDB(f"sqlite:///{tmp_path / 'data' / 'state.db'}")
    ok = wait_for("three successful runs",
                  lambda: [r for r in runs(state, "echo") if r.status == "success"][2:])
    assert all(r.scheduled_for % 1000 == 0 and r.trigger == "schedule" for r in ok)
    timed_out = wait_for("a timed-out command", lambda: [
        r for r in runs(state, "slowcmd") if r.status == "timed_out"])
    assert timed_out[0].error == "timed out after 1.0s"
    pid = int((tmp_path / "pids").read_text().split()[0])
    wait_for("the timed-out process group to be gone", lambda: not Path(
        f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2])

    status = json.loads(cli(cfg, "status", "--json").stdout)
    assert status["running"] is True and status["pid"] == daemons[0].proc.pid
    assert [t["job"] for t in status["next_ticks"]][:1] in (["echo"], ["slowcmd"])
    stopped = cli(cfg, "stop", "--timeout", "5s")
    assert stopped.returncode == 0 and "daemon stopped" in stopped.stdout
    assert daemons[0].proc.wait(30) == 0
    assert not (tmp_path / "data" / "candlekeep.pid").exists()
    assert json.loads(cli(cfg, "status", "--json").stdout)["running"] is False
    ticks = [r.scheduled_for for r in runs(state, "echo")]
    assert ticks == list(range(ticks[0], ticks[-1] + 1, 1000))  # none lost, none twice
    assert "daemon starting" in (tmp_path / "data" / "logs" / "candlekeep.log").read_text()


@pytest.mark.parametrize(("stop_timeout", "status"), [("10s", "success"), ("0.5s", "cancelled")])
def test_sigterm_drains_running_jobs_up_to_the_stop_timeout(
        tmp_path: Path, daemons: list[Daemon], stop_timeout: str, status: str) -> None:
    cfg = write_config(tmp_path, [{"name": "nap", "type": "sleep", "schedule": "* * * * * *",
                                   "params": {"seconds": 2}}])
    daemons.append(Daemon(cfg))
    state = StateDB(f"sqlite:///{tmp_path / 'data' / 'state.db'}")
    wait_for("a running nap", lambda: [r for r in runs(state) if r.status == "running"])
    assert cli(cfg, "stop", "--timeout", stop_timeout).returncode == 0
    rows = runs(state)
    assert rows and rows[-1].status == status
    assert not [r for r in rows if r.status in ("running", "waiting")]


def test_kill_9_then_restart_abandons_and_applies_misfire(tmp_path: Path,
                                                          daemons: list[Daemon]) -> None:
    cfg = write_config(tmp_path, [
        {"name": "nap", "type": "sleep", "schedule": "* * * * * *", "params": {"seconds": 60}},
        {"name": "beat", "type": "noop", "schedule": "* * * * * *", "misfire": "coalesce"},
    ])
    first = Daemon(cfg, "--stop-timeout", "1s")
    daemons.append(first)
    state = StateDB(f"sqlite:///{tmp_path / 'data' / 'state.db'}")
    wait_for("beats", lambda: [r for r in runs(state, "beat") if r.status == "success"][1:])
    first.kill9()
    killed_at = time.time()
    assert runs(state, "nap")[0].status == "running"  # left dangling by the dead process
    st = PidFile(tmp_path / "data").status()
    assert not st.running and st.stale
    last_before = max(r.scheduled_for for r in runs(state, "beat"))
    # Downtime: the daemon is down for at least three ticks.
    time.sleep(max(0.0, killed_at + 3.2 - time.time()))
    daemons.append(Daemon(cfg, "--stop-timeout", "1s"))
    wait_for("beats after the restart", lambda: [
        r for r in runs(state, "beat") if r.status == "success" and r.scheduled_for >
        last_before + 4000])
    nap = runs(state, "nap")[0]
    assert nap.status == "abandoned" and "restarted" in (nap.error or "")
    beat = runs(state, "beat")
    ticks = [r.scheduled_for for r in beat]
    assert ticks == list(range(ticks[0], ticks[-1] + 1, 1000))  # every tick accounted once
    missed = [r for r in beat if last_before < r.scheduled_for < last_before + 3000]
    assert missed and all(r.status == "skipped" for r in missed)
    assert daemons[1].term() == 0


def test_second_daemon_is_refused_and_a_stale_pid_file_replaced(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    cfg = write_config(tmp_path, [{"name": "beat", "type": "noop",
                                   "schedule": "* * * * * *"}])
    out = cli(cfg, "start", "--detach", "--heartbeat", "1s")
    assert out.returncode == 0, out.stderr
    info = PidFile(tmp_path / "data").read()
    assert info is not None
    again = cli(cfg, "start")
    assert again.returncode == 2 and "already running" in again.stderr
    # Another data_dir, same state DB and node name: refused by the state DB check.
    other = write_config(tmp_path / "other", [],
                         state=f"sqlite:///{tmp_path / 'data' / 'state.db'}")
    clash = cli(other, "start")
    assert clash.returncode == 2 and "already running on host" in clash.stderr
    os.kill(info.pid, signal.SIGKILL)
    wait_for("the lock to drop", lambda: not PidFile(tmp_path / "data").status().running)
    status = json.loads(cli(cfg, "status", "--json").stdout)
    assert status["running"] is False and status["stale_pid_file"] is True
    restarted = cli(cfg, "start", "--detach", "--heartbeat", "1s")
    assert restarted.returncode == 0, restarted.stderr
    new = PidFile(tmp_path / "data").read()
    assert new is not None and new.pid != info.pid
    assert "replaced a stale PID file" in (tmp_path / "data/logs/candlekeep.log").read_text()
    assert cli(cfg, "stop").returncode == 0


def test_two_daemons_on_postgres_share_ticks_and_survive_a_node_kill(
        tmp_path: Path, pg_url: str, daemons: list[Daemon]) -> None:
    jobs = [{"name": f"beat{i}", "type": "noop", "schedule": "* * * * * *"} for i in range(3)]
    jobs.append({"name": "nap", "type": "sleep", "schedule": "* * * * * *",
                 "params": {"seconds": 1.5}, "max_concurrent": 1})
    a = Daemon(write_config(tmp_path / "a", jobs, state=pg_url, node="node-a"))
    b = Daemon(write_config(tmp_path / "b", jobs, state=pg_url, node="node-b"))
    daemons += [a, b]
    state = StateDB(pg_url)
    try:
        wait_for("both nodes working", lambda: {r.node for r in runs(state)
                                                if r.status == "success"} >= {"node-a",
                                                                              "node-b"})
        wait_for("a few seconds of ticks", lambda: len(runs(state, "beat0")) >= 6)
        a.kill9()
        killed_at = int(time.time() * 1000)
        wait_for("node-b carrying on", lambda: [
            r for r in runs(state, "beat0") if r.scheduled_for > killed_at + 5000], 40)
        wait_for("node-a's nap to be abandoned or finished", lambda: not [
            r for r in runs(state, "nap") if r.status in ("running", "waiting")
            and r.node == "node-a"], 30)
        assert b.term() == 0
        rows = runs(state)
    finally:
        state.dispose()
    for i in range(3):
        ticks = [r.scheduled_for for r in rows if r.job == f"beat{i}"]
        assert ticks == list(range(ticks[0], ticks[-1] + 1, 1000)), f"beat{i}"
    after = {r.node for r in rows if r.job == "beat0" and r.scheduled_for > killed_at + 3000}
    assert after == {"node-b"}
    # No overlap of the max_concurrent=1 job across nodes. A dead node's run ended at the
    # latest one heartbeat after its last heartbeat.
    naps = sorted((r for r in rows if r.job == "nap" and r.started_at is not None),
                  key=lambda r: r.started_at or 0)
    ends = []
    for r in naps:
        assert r.status in ("success", "abandoned", "cancelled"), r
        end = r.finished_at if r.status != "abandoned" else None
        if end is None:
            hb = _heartbeat(pg_url, r.id)
            end = hb + 1000
        ends.append((r.started_at or 0, end, r.node))
    for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(ends):
        assert s2 >= e1, f"overlap: {n1} until {e1}, {n2} from {s2}"


def _heartbeat(url: str, run_id: int) -> int:
    import sqlalchemy as sa

    from candlekeep.state import tables as t

    db = StateDB(url)
    try:
        with db.engine.connect() as conn:
            return int(conn.execute(sa.select(t.runs.c.heartbeat_at).where(
                t.runs.c.id == run_id)).scalar_one())
    finally:
        db.dispose()


def test_unreachable_state_db_is_retried_not_fatal(tmp_path: Path,
                                                   daemons: list[Daemon]) -> None:
    cfg = write_config(tmp_path, [{"name": "beat", "type": "noop",
                                   "schedule": "* * * * * *"}],
                       state="postgresql://postgres@127.0.0.1:1/nowhere")
    d = Daemon(cfg)
    daemons.append(d)
    log = tmp_path / "data" / "logs" / "candlekeep.log"
    wait_for("two logged connection attempts", lambda: log.exists() and log.read_text()
             .count("state DB unreachable") >= 2)
    assert d.proc.poll() is None  # still alive, still trying
    assert d.term() == 0


def test_pid_file_acquire_waits_out_a_status_reader(tmp_path: Path) -> None:
    """``status`` takes a shared lock for an instant; a daemon starting just then retries
    instead of reporting a daemon that is not there."""
    import fcntl
    import threading

    from candlekeep.scheduler.daemon import PidInfo

    pidfile = PidFile(tmp_path)
    pidfile.path.write_text("")
    reader = pidfile.path.open("r")
    fcntl.flock(reader, fcntl.LOCK_SH)

    def let_go() -> None:
        fcntl.flock(reader, fcntl.LOCK_UN)
        reader.close()

    threading.Timer(0.3, let_go).start()
    info = PidInfo(pid=os.getpid(), node="n", host="h", started_at=0, state="s", config="c",
                   log="l")
    assert pidfile.acquire(info) is None
    assert pidfile.status().running
    pidfile.release()


def test_stop_refuses_a_pid_file_written_on_another_host(tmp_path: Path) -> None:
    """A data_dir on a shared volume: the PID inside names a process on another machine;
    signalling that number here would hit an unrelated process."""
    import fcntl
    import subprocess
    import sys
    from dataclasses import asdict

    from candlekeep.scheduler.daemon import PidInfo

    cfg = write_config(tmp_path, [])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_path = tmp_path / "data" / "candlekeep.pid"
        info = PidInfo(pid=bystander.pid, node="far", host="far-away-host", started_at=0,
                       state="s", config=str(cfg), log="l", ready=True)
        pid_path.write_text(json.dumps(asdict(info)))
        with pid_path.open("r") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # "the daemon" holds it (as NFS locks would)
            out = cli(cfg, "stop", "--timeout", "1s")
        assert out.returncode == 2
        assert "far-away-host" in out.stderr and bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_restarted_node_ends_what_its_killed_predecessor_left_running(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    """kill -9 of the daemon: its command dies with it (PR_SET_PDEATHSIG), and what that
    command had started in the background is ended by the next daemon, from the process
    group recorded in the run row."""
    script = "sleep 300 & echo $! > grandchild; echo $$ > child; wait"
    cfg = write_config(tmp_path, [{"name": "cmd", "type": "command",
                                   "schedule": "* * * * * *", "max_concurrent": 1,
                                   "params": {"argv": ["sh", "-c", script]}}])
    first = Daemon(cfg)
    daemons.append(first)
    state = StateDB(f"sqlite:///{tmp_path / 'data' / 'state.db'}")
    try:
        wait_for("the run to record its process group", lambda: [
            r for r in runs(state, "cmd") if r.status == "running"] and _process(state))
        child, grandchild = (int(_written(tmp_path / f)) for f in ("child", "grandchild"))
        first.kill9()
        wait_for("the command to die with the daemon", lambda: _gone(child), 10)
        assert not _gone(grandchild)  # a background child outlives it: a leftover
        daemons.append(Daemon(cfg))
        wait_for("the leftover to be ended", lambda: _gone(grandchild), 30)
        (old, *_) = runs(state, "cmd")
        assert old.status == "abandoned" and "restarted" in (old.error or "")
    finally:
        state.dispose()


def _written(path: Path) -> str:
    return wait_for(f"{path.name} to be written",
                    lambda: path.read_text().strip() if path.exists() else None)


def _process(state: StateDB) -> str | None:
    import sqlalchemy as sa

    from candlekeep.state import tables as t

    with state.engine.connect() as conn:
        return conn.execute(sa.select(t.runs.c.process).where(
            t.runs.c.process.is_not(None))).scalar()
