"""A scan's files parsed back, its store rows, and a failed write naming the path."""

from __future__ import annotations

import csv
import json
import resource
from pathlib import Path

import pyarrow as pa
import pytest

from candlekeep.config.scans import ScansConfig
from candlekeep.core.timeutil import to_ms
from candlekeep.scans.artifacts import (
    ArtifactWriteError,
    run_folder,
    scan_signal_rows,
    write_artifacts,
)
from candlekeep.scans.datasets import SCAN_SIGNALS
from candlekeep.scans.factors import FACTORS_SCHEMA
from candlekeep.scans.scoring import ScanResult, evaluate

RUN = to_ms("2024-03-01T12:34:56Z")


def result(profile: str = "hot") -> ScanResult:
    rows = [
        {"symbol": "GOOD/USDT", "source": "sim", "venue": "simbook", "momentum": 90.0,
         "technical": 80.0, "volume": 70.0, "quality": 60.0, "vadr": 1.8, "spread_bps": 50.0,
         "depth_usd": 100_000.0, "fresh": True},
        {"symbol": "NONE/USDT", "reason": "no candles; no order book", "bars": 0,
         "fresh": False},
    ]
    base = {"bars": 100, "fresh_candles": True, "fresh_book": True}
    table = pa.Table.from_pylist([base | r for r in rows], schema=FACTORS_SCHEMA)
    return evaluate(table, profile, "normal", ScansConfig())


def test_signals_and_explain_parse_back(tmp_path: Path) -> None:
    folder = write_artifacts(tmp_path, result(), RUN, universe="top")
    assert folder == tmp_path / "scans" / "top" / "hot" / "20240301T123456Z"
    assert sorted(p.name for p in folder.iterdir()) == ["explain.json", "signals.csv"]
    with open(folder / "signals.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:11] == ["timestamp", "symbol", "score", "momentum", "vadr",
                                  "spread_bps", "depth_usd", "regime", "fresh", "venue",
                                  "sources"]
    good, none = rows
    assert good["timestamp"] == "2024-03-01T12:34:56.000Z"
    assert float(good["score"]) == pytest.approx(0.35 * 90 + 0.25 * 80 + 0.25 * 70 + 0.15 * 60)
    assert (good["vadr"], good["spread_bps"], good["depth_usd"]) == ("1.8", "50", "100000")
    assert (good["regime"], good["fresh"], good["venue"]) == ("normal", "true", "simbook")
    assert good["sources"] == "candles:sim;orderbook:simbook"
    assert (good["passed"], good["reason"]) == ("true", "")
    assert (none["score"], none["sources"], none["passed"]) == ("", "", "false")
    assert none["reason"] == "no candles; no order book"

    text = (folder / "explain.json").read_text()
    doc = json.loads(text)
    assert (doc["profile"], doc["regime"], doc["universe"]) == ("hot", "normal", "top")
    lines = text.splitlines()  # the run's fields, then one gate, one symbol a line
    assert lines[0] == '{"profile": "hot",'
    records = [json.JSONDecoder().raw_decode(line.strip().removeprefix('"symbols": ['))[0]
               for line in lines if '"symbol": ' in line]
    assert records == doc["symbols"]
    assert doc["weights"] == {"momentum": 0.35, "technical": 0.25, "volume": 0.25,
                              "quality": 0.15}
    assert [g["name"] for g in doc["gates"]] == ["min_score", "min_vadr", "max_spread_bps",
                                                 "min_depth_usd"]
    first, second = doc["symbols"]
    assert first["gates"][1] == {"name": "min_vadr", "input": "vadr", "value": 1.8,
                                 "op": ">=", "threshold": 1.8, "status": "pass"}
    assert first["passed"] is True and first["top_reasons"][0].startswith("momentum 90.0")
    assert second["score"] is None and second["reason"] == "no candles; no order book"
    assert {g["status"] for g in second["gates"]} == {"missing"}
    assert not list(folder.glob(".*.tmp"))


def test_premove_csv(tmp_path: Path) -> None:
    folder = write_artifacts(tmp_path, result("premove"), RUN, "top")
    with open(folder / "premove.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["symbol"] for r in rows] == ["GOOD/USDT", "NONE/USDT"]
    good = rows[0]
    assert (good["funding_z"], good["funding"]) == ("", "missing")
    assert (good["squeeze"], good["accumulation"]) == ("fail", "fail")  # quality 60, volume 70
    assert (good["alert"], good["status"], good["passed"]) == ("false", "no alert", "0")
    assert rows[1]["status"] == "undetermined" and rows[1]["missing"] == "3"
    assert json.loads((folder / "explain.json").read_text())["premove"]["groups"] == [
        "funding", "squeeze", "accumulation"]


def test_scan_signal_rows_fit_the_dataset() -> None:
    rows = scan_signal_rows(result(), RUN, RUN + 5, universe="top")
    assert rows.schema == SCAN_SIGNALS.schema
    got = rows.to_pylist()
    assert [r["passed"] for r in got] == [True, False]
    assert got[1]["score"] is None and got[1]["reason"] == "no candles; no order book"
    assert got[0]["universe"] == "top" and got[0]["quality"] == 60.0


def test_runs_of_other_universes_or_the_same_second_never_share_a_folder(
        tmp_path: Path) -> None:
    first = write_artifacts(tmp_path, result(), RUN, "majors")
    other = write_artifacts(tmp_path, result(), RUN, "alts")
    again = write_artifacts(tmp_path, result(), RUN, "majors")
    third = write_artifacts(tmp_path, result(), RUN, "majors")
    assert other == tmp_path / "scans" / "alts" / "hot" / "20240301T123456Z"
    assert (again.name, third.name) == ("20240301T123456Z-2", "20240301T123456Z-3")
    for folder, universe in ((first, "majors"), (other, "alts"), (again, "majors")):
        assert json.loads((folder / "explain.json").read_text())["universe"] == universe
        assert sorted(p.name for p in folder.iterdir()) == ["explain.json", "signals.csv"]
    assert sorted(p.name for p in first.parent.iterdir()) == [
        "20240301T123456Z", "20240301T123456Z-2", "20240301T123456Z-3"]  # no temp folder


def test_an_empty_folder_of_the_name_holds_no_run_and_is_taken(tmp_path: Path) -> None:
    empty = run_folder(tmp_path, "majors", "hot", RUN)
    empty.mkdir(parents=True)
    (empty.parent / f"{empty.name}-2").mkdir()  # skipped too: taken is taken
    folder = write_artifacts(tmp_path, result(), RUN, "majors")
    assert folder.name == "20240301T123456Z-3"
    assert not list(empty.iterdir())


def test_unwritable_folder_fails_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "scans").write_text("a file where the folder goes")
    with pytest.raises(ArtifactWriteError, match=str(tmp_path / "scans" / "top" / "hot")):
        write_artifacts(tmp_path, result(), RUN, "top")


def test_a_file_failing_midway_leaves_no_run_folder(tmp_path: Path) -> None:
    """signals.csv fits under the process's file-size limit and explain.json does not
    (EFBIG; Python ignores SIGXFSZ): the error names explain.json, and neither the run
    folder nor the temporary one with signals.csv in it is left behind."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
    try:
        with pytest.raises(ArtifactWriteError, match=r"explain\.json") as err:
            write_artifacts(tmp_path, result(), RUN, "top")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert err.value.path.name == "explain.json"
    assert err.value.path.parent.name.startswith(".20240301T123456Z.tmp-")
    assert list((tmp_path / "scans" / "top" / "hot").iterdir()) == []

