"""Stores from the command line: the demo pointed at PostgreSQL by one config edit, and
``candlekeep datasets`` listing what each store holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pyarrow as pa
import yaml

from candlekeep.config import load_config
from candlekeep.core.datasets import Dataset
from candlekeep.jobs.runtime import Runtime
from tests.cli.conftest import cli, cli_json

TS = pa.timestamp("ms", tz="UTC")
NOTES = Dataset("ck_notes", pa.schema([pa.field("k", pa.string(), nullable=False),
                                       pa.field("ts", TS, nullable=False)]), ("k",), time="ts")


def demo(folder: Path) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-m", "candlekeep", "demo", "--json", "--days", "0.3"],
                         cwd=folder, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_demo_runs_on_postgresql_after_one_config_edit(tmp_path: Path, pg_url: str) -> None:
    cfg_path = tmp_path / "candlekeep-demo" / "candlekeep.yaml"
    cfg_path.parent.mkdir()
    # the one edit a user makes to an earlier demo's config
    cfg_path.write_text(yaml.safe_dump(
        {"stores": {"main": {"type": "postgresql", "dsn": pg_url, "schema": "demo"}}}))
    first = demo(tmp_path)
    assert first["ok"] and first["rows_written"] > 0
    assert all(c["coverage_pct"] == 100.0 for c in first["coverage"])
    kept = yaml.safe_load(cfg_path.read_text())
    assert kept["stores"]["main"]["type"] == "postgresql"
    with psycopg.connect(pg_url) as conn:
        (stored, distinct), = conn.execute(
            "SELECT count(*), count(DISTINCT (source, symbol, timeframe, ts)) "
            "FROM demo.candles").fetchall()
    assert stored == distinct == sum(c["stored"] for c in first["coverage"])
    assert not (cfg_path.parent / "data" / "candles.duckdb").exists()

    listed = cli_json(cfg_path, "datasets")
    assert [(d["store"], d["dataset"]) for d in listed] == [("main", "candles")]
    assert listed[0]["newest_ms"] == max(c["last_ms"] for c in first["coverage"])
    assert listed[0]["rows"] == stored or not listed[0]["rows_exact"]


def test_datasets_lists_every_store_and_names_an_unknown_one(tmp_path: Path) -> None:
    cfg_path = tmp_path / "candlekeep.yaml"
    cfg_path.write_text(yaml.safe_dump({"stores": {
        "a": {"type": "duckdb", "path": "a.duckdb"},
        "b": {"type": "duckdb", "path": "b.duckdb"},
        "buf": {"type": "buffer", "path": "buffer", "targets": ["a", "b"]},
    }}))
    rt = Runtime(load_config(cfg_path))
    rt.store("a").upsert(NOTES, pa.table({"k": ["x", "y"], "ts": pa.array([5, 9], TS)}))
    rt.store("b").upsert(NOTES, pa.table({"k": ["z"], "ts": pa.array([7], TS)}))
    listed = cli_json(cfg_path, "datasets")
    assert [(d["store"], d["dataset"], d["rows"], d["newest_ms"]) for d in listed] == [
        ("a", "candles", 0, None), ("a", "ck_notes", 2, 9),  # DuckDB makes candles up front
        ("b", "candles", 0, None), ("b", "ck_notes", 1, 7),
    ]  # the buffer is not listed: its data is its targets'
    out = cli(cfg_path, "datasets", "--store", "nope")
    assert out.returncode == 2 and "unknown store 'nope'" in out.stderr
    table = cli(cfg_path, "datasets", "--store", "a", check=True).stdout
    assert "ck_notes" in table and "│ a " in table and "│ b " not in table


def test_check_reaches_every_store_and_names_what_is_wrong(tmp_path: Path,
                                                           pg_url: str) -> None:
    closed_port = pg_url.replace("127.0.0.1:5432", "127.0.0.1:9").replace(
        "postgresql://postgres@", "postgresql://postgres:s3cret@")
    cfg_path = tmp_path / "candlekeep.yaml"
    cfg_path.write_text(yaml.safe_dump({"stores": {
        "local": {"type": "duckdb", "path": "a.duckdb"},
        "pg": {"type": "postgresql", "dsn": pg_url, "schema": "md"},
        "down": {"type": "postgresql", "dsn": closed_port},
        "buf": {"type": "buffer", "path": "buffer", "targets": ["local", "pg"]},
    }}))
    out = cli(cfg_path, "check", "--json")
    assert out.returncode == 1, out.stderr
    got = {r["store"]: r for r in json.loads(out.stdout)}
    assert {n for n, r in got.items() if r["ok"]} == {"local", "pg", "buf"}
    assert "stores.down.dsn" in got["down"]["error"]
    assert "s3cret" not in out.stdout + out.stderr
    ok = cli(cfg_path, "check", "--store", "local", "--store", "pg")
    assert ok.returncode == 0 and "pg (postgresql): ok" in ok.stdout
