"""The ``flush`` job type through the run path, and the ``candlekeep buffer`` commands as a
user runs them (a real process on a config file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from candlekeep.buffer.store import BufferStore
from candlekeep.jobs.flush import FlushParams
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.manual import run_adhoc
from candlekeep.state import tables as t
from tests.buffer.conftest import OpenRuntime, WriteConfig
from tests.buffer.data import assert_exactly, overlapping_batches


def _runs(rt: Runtime) -> list[tuple[str, str, int]]:
    with rt.state.engine.connect() as conn:
        rows = conn.execute(sa.select(t.runs.c.job, t.runs.c.status, t.runs.c.rows_written))
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_the_job_reports_rows_and_files_per_target(buf: BufferStore, rt: Runtime) -> None:
    batches = overlapping_batches(count=4, rows=30, step=30)
    for b in batches:
        buf.upsert_candles(b)
    res = await run_adhoc(rt, "flush", FlushParams())
    assert res.ok, res.errors
    targets = res.details["buffers"]["buf"]["targets"]
    assert {n: (x["files"], x["rows"]) for n, x in targets.items()} == \
        {"a": (4, 120), "b": (4, 120)}
    assert res.rows_written == 240
    assert _runs(rt) == [("flush", "success", 240)]
    for target in ("a", "b"):
        assert_exactly(rt.store(target), batches)


async def test_a_target_that_is_down_fails_the_job_naming_it(
        write_config: WriteConfig, open_runtime: OpenRuntime, tmp_path: Path) -> None:
    blocker = tmp_path / "down"
    blocker.write_text("")
    rt = open_runtime(write_config(b={"type": "duckdb", "path": str(blocker / "b.duckdb")}))
    batches = overlapping_batches(count=3, rows=10, step=10)
    for b in batches:
        rt.store("buf").upsert_candles(b)
    res = await run_adhoc(rt, "flush", FlushParams())
    assert not res.ok
    (error,) = res.errors
    assert error.startswith("buffer buf: target store b failed: ")
    assert error.endswith("(3 file(s), 30 rows wait for it)")
    assert_exactly(rt.store("a"), batches)
    assert [(job, status) for job, status, _ in _runs(rt)] == [("flush", "failed")]


async def test_a_broken_buffer_does_not_stop_the_others(
        write_config: WriteConfig, open_runtime: OpenRuntime, tmp_path: Path) -> None:
    config = write_config()
    raw = yaml.safe_load(config.read_text())
    (tmp_path / "blocker").write_text("")
    raw["stores"] = {"broken": {"type": "buffer", "path": str(tmp_path / "blocker" / "buf"),
                                "targets": ["a"]}, **raw["stores"]}
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    rt = open_runtime(config)
    rt.store("buf").upsert_candles(overlapping_batches(count=1, rows=10, step=10)[0])
    res = await run_adhoc(rt, "flush", FlushParams())
    (error,) = res.errors
    assert error == (f"buffer broken: cannot list {tmp_path / 'blocker' / 'buf'}: "
                     "Not a directory [ENOTDIR]")
    assert list(res.details["buffers"]) == ["buf"] and res.rows_written == 20


async def test_a_dry_run_says_what_it_would_flush(buf: BufferStore, rt: Runtime) -> None:
    for b in overlapping_batches(count=3, rows=10, step=10):
        buf.upsert_candles(b)
    res = await run_adhoc(rt, "flush", FlushParams(target="b"), dry_run=True)
    assert res.warnings == ["would flush 3 file(s), 30 rows, from buffer buf to b"]
    assert len(buf.folder.pending()) == 3 and rt.store("b").spans() == []


@pytest.mark.parametrize(("params", "error"), [
    ({"buffer": "a"}, "'a' is not a buffer store (buffer stores: buf)"),
    ({"target": "c"}, "'c' is not a target of any buffer store"),
])
async def test_bad_params_are_clear_errors(rt: Runtime, params: dict[str, Any],
                                           error: str) -> None:
    res = await run_adhoc(rt, "flush", FlushParams(**params))
    assert res.errors == [error]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CANDLEKEEP_CONFIG"}
    return subprocess.run([sys.executable, "-m", "candlekeep", "--config", str(config), *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def cli_json(config: Path, *args: str) -> Any:
    out = cli(config, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_status_flush_and_quarantine_from_the_command_line(
        write_config: WriteConfig, open_runtime: OpenRuntime) -> None:
    config = write_config()
    buf = open_runtime(config).store("buf")
    assert isinstance(buf, BufferStore)
    batches = overlapping_batches(count=3, rows=10, step=10)
    for b in batches:
        buf.upsert_candles(b)
    bad = buf.folder.pending()[1]
    good = (buf.folder.path / bad.name).read_bytes()
    (buf.folder.path / bad.name).write_bytes(b"not parquet")

    (status,) = cli_json(config, "buffer", "status")
    assert (status["name"], status["files"], status["rows"]) == ("buf", 3, 30)
    assert status["targets"] == {"a": {"files": 3, "rows": 30}, "b": {"files": 3, "rows": 30}}
    assert status["oldest_age_s"] >= 0 and status["bytes"] > 0

    flushed = cli_json(config, "buffer", "flush")
    assert flushed["ok"] and flushed["rows_written"] == 40
    assert list(flushed["details"]["buffers"]["buf"]["quarantined"]) == [bad.name]
    (held,) = cli_json(config, "buffer", "quarantine", "list")
    assert held["file"] == bad.name and "unreadable Parquet" in held["reason"]
    listed = cli(config, "buffer", "quarantine", "list")
    assert bad.name in listed.stdout and "unreadable" in listed.stdout

    missing = cli(config, "buffer", "quarantine", "retry", "nope.parquet")
    assert missing.returncode == 2 and "nope.parquet" in missing.stderr
    (buf.folder.path / "quarantine" / bad.name).write_bytes(good)
    assert cli_json(config, "buffer", "quarantine", "retry", bad.name) == {"buf": [bad.name]}
    out = cli(config, "buffer", "flush")
    assert out.returncode == 0, out.stderr
    assert "flush" in out.stdout and "rows=20" in out.stdout
    (status,) = cli_json(config, "buffer", "status")
    assert (status["files"], status["quarantined"]) == (0, 0)


def test_commands_without_a_buffer_store_say_so(tmp_path: Path) -> None:
    config = tmp_path / "plain.yaml"
    config.write_text("stores: {main: {type: duckdb, path: data/m.duckdb}}\n")
    out = cli(config, "buffer", "status")
    assert out.returncode == 2 and "no buffer store is configured" in out.stderr
