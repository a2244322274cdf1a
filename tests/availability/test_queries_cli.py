"""``candlekeep availability snapshot | timeline | range | new-listings | delistings |
summary`` in-process through typer's runner, on a DuckDB store seeded as the tracker writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from candlekeep.availability import queries as q
from candlekeep.queries.encode import plain
from candlekeep.stores.duckdb_store import DuckDBStore
from tests.availability.seed import seed

runner = CliRunner()


def _app() -> typer.Typer:
    """The real CLI once the tracker's ``availability`` sub-app is there; until then a
    root with the same global options and the query commands on a sub-app of their own."""
    from candlekeep.cli import main

    try:
        import candlekeep.cli.availability_cmds  # noqa: F401
    except ModuleNotFoundError:
        from candlekeep.cli.availability_query_cmds import add_commands

        root = typer.Typer()
        root.callback()(main.main)
        sub = typer.Typer()
        add_commands(sub)
        root.add_typer(sub, name="availability")
        return root
    return main.app


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    path = tmp_path / "candlekeep.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", "stores": {
        "main": {"type": "duckdb", "path": "data/main.duckdb"},
        "other": {"type": "duckdb", "path": "data/other.duckdb"}}}))
    return path


@pytest.fixture
def seeded(cfg: Path) -> Path:
    store = DuckDBStore("main", cfg.parent / "data" / "main.duckdb")
    seed(store)
    store.close()
    return cfg


def invoke(cfg: Path, *args: str) -> Any:
    return runner.invoke(_app(), ["--config", str(cfg), "availability", *args])


def test_summary_text_and_json(seeded: Path) -> None:
    out = invoke(seeded, "summary")
    assert out.exit_code == 0, out.output
    assert "availability: futures/um (store main)" in out.stdout
    assert "2024-01-01 .. 2024-01-20 (20 probed)" in out.stdout
    assert "5 on 2024-01-17" in out.stdout and "6 seen, 6 ever available" in out.stdout
    assert "error 2024-01-10 ETHUSDT: HTTP 503 after 3 attempts" in out.stdout
    assert "availability: spot" in out.stdout
    data = json.loads(invoke(seeded, "summary", "--json", "--market", "futures/um").stdout)
    store = DuckDBStore("main", seeded.parent / "data" / "main.duckdb")
    expected = json.loads(json.dumps(plain(q.summary(store, "futures/um")), default=str))
    assert data == expected
    assert data["markets"][0]["counts"] == {"available": 91, "missing": 26, "error": 1}


def test_snapshot_timeline_range_listings_delistings_json(seeded: Path) -> None:
    snap = json.loads(invoke(seeded, "snapshot", "2024-01-10", "--json").stdout)
    assert snap["date"] == "2024-01-10" and snap["counts"]["error"] == 1
    assert len(snap["symbols"]) == 6
    missing = json.loads(invoke(seeded, "snapshot", "2024-01-10", "--status", "missing",
                                "--json").stdout)
    assert [s["symbol"] for s in missing["symbols"]] == ["NEWUSDT"]
    tl = json.loads(invoke(seeded, "timeline", "OLDUSDT", "--json").stdout)
    assert [(r["status"], r["first"], r["days"]) for r in tl["runs"]] == [
        ("available", "2024-01-01", 10), ("missing", "2024-01-11", 10)]
    rng = json.loads(invoke(seeded, "range", "2024-01-19", "2024-01-20", "--json").stdout)
    assert [(d["date"], d["available"], d["missing"]) for d in rng["days"]] == [
        ("2024-01-19", 4, 2), ("2024-01-20", 4, 2)]
    new = json.loads(invoke(seeded, "new-listings", "2024-01-16", "--days", "3",
                            "--json").stdout)
    assert new["symbols"] == [{"symbol": "NEWUSDT", "first_available": "2024-01-15"}]
    gone = json.loads(invoke(seeded, "delistings", "--json").stdout)
    assert [(s["symbol"], s["last_available"]) for s in gone["symbols"]] == [
        ("OLDUSDT", "2024-01-10")]
    text = invoke(seeded, "timeline", "GAPUSDT")
    assert text.exit_code == 0 and "unprobed" in text.stdout and "2024-01-06" in text.stdout


def test_market_option_reads_that_market(seeded: Path) -> None:
    out = invoke(seeded, "range", "2024-01-01", "2024-01-06", "--market", "spot", "--json")
    assert [d["available"] for d in json.loads(out.stdout)["days"]] == [1, 1, 1, 1, 1, 0]


def test_errors_name_the_thing_and_the_fix(seeded: Path) -> None:
    bad = invoke(seeded, "snapshot", "2024-13-01")
    assert bad.exit_code == 2 and "not a date: '2024-13-01'; use YYYY-MM-DD" in bad.output
    backwards = invoke(seeded, "range", "2024-01-05", "2024-01-01")
    assert backwards.exit_code == 2 and "2024-01-01 is before FROM 2024-01-05" in backwards.output
    unknown = invoke(seeded, "summary", "--store", "nope")
    assert unknown.exit_code == 2
    assert "stores.nope: unknown store (defined: main, other)" in unknown.output
    empty = invoke(seeded, "summary", "--store", "other")
    assert empty.exit_code == 2
    assert "store other holds no availability data; run `candlekeep availability update` " \
        "first" in empty.output
    market = invoke(seeded, "delistings", "--market", "futures/cm")
    assert market.exit_code == 2 and "markets with data: futures/um, spot" in market.output
