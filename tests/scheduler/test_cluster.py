"""Several real daemon processes on one PostgreSQL, tried the way an operator runs them:
a node whose clock is off, a node stalled past its lease, a node killed or stopped while a
retry waits, nodes whose configs disagree, and a job whose output PostgreSQL cannot store.

Each test reproduces a defect of the first scheduler (see the cluster-safety issue) and
waits by polling the state DB or a log against a deadline.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from candlekeep.state.db import StateDB
from candlekeep.state.rows import RunRow
from candlekeep.state.scheduler_tables import scheduler_nodes
from tests.scheduler.procs import Daemon, cli, faketime, runs, wait_for, write_config

pytestmark = pytest.mark.slow


def _live(rows: list[RunRow], job: str) -> list[RunRow]:
    return [r for r in rows if r.job == job and r.status == "running"]


def _running_nodes(state: StateDB) -> set[str]:
    with state.engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(scheduler_nodes.c.node).where(
            scheduler_nodes.c.status == "running"))}


def _no_overlap(rows: list[RunRow], job: str) -> None:
    """Runs of a max_concurrent=1 job that really executed never overlap in time."""
    spans = sorted((r.started_at or 0, r.finished_at or 0, r.node, r.id) for r in rows
                   if r.job == job and r.status in ("success", "failed", "cancelled",
                                                    "timed_out") and r.started_at)
    for a, b in itertools.pairwise(spans):
        assert b[0] >= a[1], f"overlap: run {a[3]} on {a[2]} until {a[1]}, run {b[3]} on " \
                             f"{b[2]} from {b[0]}"


def test_a_node_whose_clock_is_20s_ahead_refuses_to_start(
        tmp_path: Path, pg_url: str, daemons: list[Daemon]) -> None:
    prefix = faketime("+20s")
    jobs = [{"name": "nap", "type": "sleep", "schedule": "* * * * * *",
             "params": {"seconds": 2}, "max_concurrent": 1}]
    a = Daemon(write_config(tmp_path / "a", jobs, state=pg_url, node="node-a"))
    daemons.append(a)
    state = StateDB(pg_url)
    try:
        wait_for("node-a running naps", lambda: _live(runs(state), "nap"))
        b = Daemon(write_config(tmp_path / "b", jobs, state=pg_url, node="node-b"),
                   prefix=prefix)
        daemons.append(b)
        code = wait_for("node-b to refuse", lambda: b.proc.poll(), 30)
        assert code == 2
        assert "clock skew" in b.output() and "node-b" in b.output()
        wait_for("a few more naps", lambda: len([r for r in runs(state, "nap")
                                                 if r.status == "success"]) >= 2)
        rows = runs(state)
    finally:
        state.dispose()
    assert {r.node for r in rows} == {"node-a"}
    _no_overlap(rows, "nap")


def test_a_stalled_node_loses_its_run_and_never_rewrites_history(
        tmp_path: Path, pg_url: str, daemons: list[Daemon]) -> None:
    jobs = [{"name": "nap", "type": "sleep", "schedule": "* * * * * *",
             "params": {"seconds": 2.5}, "max_concurrent": 1}]
    nodes = {n: Daemon(write_config(tmp_path / n, jobs, state=pg_url, node=n))
             for n in ("node-a", "node-b")}
    daemons.extend(nodes.values())
    state = StateDB(pg_url)
    try:
        wait_for("both nodes registered", lambda: _running_nodes(state) == set(nodes))
        (held,) = wait_for("a running nap", lambda: _live(runs(state), "nap"))
        stalled, other = nodes[held.node], nodes[next(n for n in nodes if n != held.node)]
        stalled.proc.send_signal(19)  # SIGSTOP: the node stalls past its 3 s lease
        wait_for("the stalled run abandoned", lambda: [
            r for r in runs(state, "nap") if r.id == held.id and r.status == "abandoned"])
        wait_for("the other node running the job", lambda: [
            r for r in _live(runs(state), "nap") if r.node == other.cfg.parent.name])
        stalled.proc.send_signal(18)  # SIGCONT
        wait_for("the stalled node noticing", lambda: "not recorded" in stalled.log(), 20)
        wait_for("two more naps done", lambda: len([
            r for r in runs(state, "nap") if r.status == "success"
            and r.id > held.id]) >= 2, 30)
        rows = runs(state)
    finally:
        state.dispose()
    (after,) = [r for r in rows if r.id == held.id]
    assert after.status == "abandoned", after
    _no_overlap(rows, "nap")


@pytest.mark.parametrize("how", ["kill9", "term"])
def test_a_retry_waiting_out_its_backoff_survives_its_node(
        tmp_path: Path, pg_url: str, daemons: list[Daemon], how: str) -> None:
    jobs = [{"name": "flaky", "type": "sleep", "schedule": "* * * * * *",
             "params": {"seconds": 0, "fail": True}, "max_concurrent": 1,
             "retries": {"attempts": 2, "backoff": "4s", "max_backoff": "4s"}}]
    a = Daemon(write_config(tmp_path / "a", jobs, state=pg_url, node="node-a"),
               "--stop-timeout", "1s")
    daemons.append(a)
    state = StateDB(pg_url)
    try:
        (waiting,) = wait_for("a retry waiting", lambda: [
            r for r in runs(state, "flaky") if r.status == "waiting"])
        if how == "kill9":
            a.kill9()
        else:
            assert a.term() == 0
        b = Daemon(write_config(tmp_path / "b", jobs, state=pg_url, node="node-b"))
        daemons.append(b)
        (second,) = wait_for("attempt 2 run by node-b", lambda: [
            r for r in runs(state, "flaky") if r.scheduled_for == waiting.scheduled_for
            and r.attempt == 2 and r.status == "failed"], 30)
        first = next(r for r in runs(state, "flaky")
                     if r.scheduled_for == waiting.scheduled_for and r.attempt == 1)
    finally:
        state.dispose()
    assert second.node == "node-b" and first.node == "node-a" and first.status == "failed"
    assert second.started_at is not None and first.finished_at is not None
    assert second.started_at >= first.finished_at + 4000  # the backoff was kept


def test_nodes_that_disagree_on_a_job_do_not_both_claim_it(
        tmp_path: Path, pg_url: str, daemons: list[Daemon]) -> None:
    every_s = [{"name": "j", "type": "noop", "schedule": "* * * * * *"}]
    every_2s = [{"name": "j", "type": "noop", "schedule": "*/2 * * * * *"}]
    a_cfg = write_config(tmp_path / "a", every_s, state=pg_url, node="node-a")
    a = Daemon(a_cfg)
    daemons.append(a)
    state = StateDB(pg_url)
    try:
        wait_for("node-a running j", lambda: len(runs(state, "j")) >= 2)
        b = Daemon(write_config(tmp_path / "b", every_2s, state=pg_url, node="node-b"))
        daemons.append(b)
        wait_for("node-a saying its spec differs", lambda: "spec differs" in a.log(), 30)
        since = int(time.time() * 1000) + 1500
        wait_for("node-b running j", lambda: len([
            r for r in runs(state, "j") if r.scheduled_for > since]) >= 3)
        rows = [r for r in runs(state, "j") if r.scheduled_for > since]
        listing = json.loads(cli(a_cfg, "list", "--json").stdout)
        status = json.loads(cli(a_cfg, "status", "--json").stdout)
    finally:
        state.dispose()
    assert {r.node for r in rows} == {"node-b"}
    assert all(r.scheduled_for % 2000 == 0 for r in rows)
    (job,) = listing["jobs"]
    assert job["spec_matches"] is False and job["spec_set_by"] == "node-b"
    assert {"node": "node-a", "jobs": ["j"]} in listing["health"]["disagreements"]
    assert next(n for n in status["nodes"] if n["node"] == "node-a")["conflicts"] == ["j"]


def test_output_postgres_cannot_store_does_not_block_other_runs(
        tmp_path: Path, pg_url: str, daemons: list[Daemon]) -> None:
    jobs = [{"name": "bin", "type": "command", "schedule": "* * * * * *",
             "params": {"argv": ["sh", "-c", r"printf 'a\000b\n' >&2; exit 1"]}},
            {"name": "beat", "type": "noop", "schedule": "* * * * * *"}]
    daemons.append(Daemon(write_config(tmp_path, jobs, state=pg_url, node="n")))
    state = StateDB(pg_url)
    try:
        (failed, *_) = wait_for("a failed bin run", lambda: [
            r for r in runs(state, "bin") if r.status == "failed"])
        wait_for("beats recorded after it", lambda: len([
            r for r in runs(state, "beat") if r.status == "success"
            and r.scheduled_for > failed.scheduled_for]) >= 3)
        bins = [r for r in runs(state, "bin") if r.status != "running"]
    finally:
        state.dispose()
    assert bins and all(r.status == "failed" for r in bins)
    assert all("\x00" not in (r.error or "") and "a" in (r.error or "") for r in bins)
