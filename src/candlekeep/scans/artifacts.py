"""A scan run's files and store rows: ``signals.csv``, ``explain.json`` (and ``premove.csv``
for the premove profile) under ``<artifacts>/scans/<profile>/<YYYYmmddTHHMMSSZ>/``, and the
SCAN_SIGNALS rows.

Each file is written whole or not at all (a synced temporary file renamed into place, then
the folder synced), so a reader never sees half a CSV; a write that fails raises
``ArtifactWriteError`` naming the path, and the run fails with it.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from candlekeep.core.errors import CandlekeepError
from candlekeep.core.fsync import fsync_path
from candlekeep.core.schema import TS_TYPE
from candlekeep.core.timeutil import iso_ms, ms_to_datetime
from candlekeep.scans.datasets import SCAN_SIGNALS
from candlekeep.scans.factors import FACTOR_NAMES
from candlekeep.scans.scoring import ScanResult

SIGNALS_FILE, EXPLAIN_FILE, PREMOVE_FILE = "signals.csv", "explain.json", "premove.csv"


class ArtifactWriteError(CandlekeepError):
    """An artifact could not be written; the message names the path."""

    def __init__(self, path: Path, err: OSError) -> None:
        self.path = path
        super().__init__(f"cannot write scan artifact {path}: {err.strerror or err}")


def run_folder(root: Path, profile: str, run_ts_ms: int) -> Path:
    """``<root>/scans/<profile>/<UTC time as YYYYmmddTHHMMSSZ>``."""
    return root / "scans" / profile / ms_to_datetime(run_ts_ms).strftime("%Y%m%dT%H%M%SZ")


def _floats(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float64(), mask=np.isnan(values))


def _stamp(run_ts_ms: int, n: int) -> pa.Array:
    return pa.array([iso_ms(run_ts_ms)] * n, pa.string())


def signals_table(result: ScanResult, run_ts_ms: int) -> pa.Table:
    """signals.csv's rows: the issue's columns (timestamp … sources), then ``passed`` and
    ``reason``. ``sources`` names where the inputs came from (``candles:<source>`` and
    ``orderbook:<venue>``)."""
    f = result.factors
    n = f.num_rows
    candles = pc.fill_null(pc.binary_join_element_wise("candles:", f["source"], ""), "")
    book = pc.fill_null(pc.binary_join_element_wise("orderbook:", f["venue"], ""), "")
    sources = pc.if_else(pc.and_(pc.not_equal(candles, ""), pc.not_equal(book, "")),
                         pc.binary_join_element_wise(candles, book, ";"),
                         pc.binary_join_element_wise(candles, book, ""))
    return pa.table({
        "timestamp": _stamp(run_ts_ms, n),
        "symbol": f["symbol"],
        "score": _floats(result.scores),
        "momentum": f["momentum"], "vadr": f["vadr"],
        "spread_bps": f["spread_bps"], "depth_usd": f["depth_usd"],
        "regime": pa.array([result.regime] * n, pa.string()),
        "fresh": f["fresh"], "venue": f["venue"],
        "sources": pc.if_else(pc.equal(sources, ""), pa.scalar(None, pa.string()), sources),
        "passed": pa.array(result.passed, pa.bool_()),
        "reason": pa.array(result.why, pa.string()),
    })


def premove_table(result: ScanResult, run_ts_ms: int) -> pa.Table:
    """premove.csv's rows: each gate's value, each group's status, the counts and the
    verdict (``alert``, ``no alert`` or ``undetermined`` when missing inputs could decide)."""
    pm = result.premove
    if pm is None:
        raise ValueError(f"profile {result.profile!r} has no pre-movement gates")
    n = result.factors.num_rows
    return pa.table({
        "timestamp": _stamp(run_ts_ms, n),
        "symbol": result.factors["symbol"],
        "regime": pa.array([result.regime] * n, pa.string()),
        **{gate.name: _floats(gate.values) for gate in pm.gates},
        **{name: pa.array(status, pa.string()) for name, status in pm.groups.items()},
        "volume_confirmation": pa.array(pm.confirmation, pa.string()),
        "passed": pa.array(pm.passed, pa.int64()),
        "missing": pa.array(pm.missing, pa.int64()),
        "alert": pa.array(pm.alert, pa.bool_()),
        "status": pa.array(pm.status, pa.string()),
    })


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def explain(result: ScanResult, run_ts_ms: int, universe: str | None = None) -> dict[str, Any]:
    """explain.json: the regime and weights used, each gate's rule, and per symbol its
    score, factors, every gate (value, op, threshold, status) and top reasons."""
    f = result.factors
    factors = {name: f[name].to_pylist() for name in (*FACTOR_NAMES, "vadr", "vadr_note")}
    symbols = []
    for i, symbol in enumerate(f["symbol"].to_pylist()):
        symbols.append({
            "symbol": symbol,
            "score": _num(result.scores[i]),
            "passed": bool(result.passed[i]),
            "reason": result.why[i],
            "factors": {name: values[i] for name, values in factors.items()},
            "gates": [{"name": g.name, "input": g.input, "value": _num(g.values[i]),
                       "op": g.op, "threshold": g.threshold, "status": str(g.status[i])}
                      for g in result.gates],
            "top_reasons": result.reasons[i],
        })
    doc: dict[str, Any] = {
        "profile": result.profile, "run_ts": iso_ms(run_ts_ms), "universe": universe,
        "regime": result.regime, "weights": result.weights.model_dump(),
        "gates": [{"name": g.name, "input": g.input, "op": g.op, "threshold": g.threshold}
                  for g in result.gates],
        "symbols": symbols,
    }
    if result.premove is not None:
        doc["premove"] = {"groups": list(result.premove.groups),
                          "volume_confirmation": result.regime == "volatile"}
    return doc


def _json_lines(value: Any, depth: int = 0) -> str:
    """JSON laid out one item a line two levels deep: the run's fields, then one gate, one
    symbol a line (``grep SYMBOL explain.json`` shows its whole record). ``json.dumps`` with
    ``indent`` runs the pure-Python encoder (~11 ms for 300 symbols); this lets the C
    encoder write each line (~4 ms)."""
    if depth == 2 or not value or not isinstance(value, dict | list):
        return json.dumps(value)
    sep = ",\n" + " " * (depth + 1)
    if isinstance(value, dict):
        items = (f"{json.dumps(k)}: {_json_lines(v, depth + 1)}" for k, v in value.items())
        return "{" + sep.join(items) + "}"
    return "[" + sep.join(_json_lines(v, depth + 1) for v in value) + "]"


def _csv(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(quoting_style="needed"))
    return bytes(sink.getvalue().to_pybytes())


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise ArtifactWriteError(path, err) from err
    finally:
        tmp.unlink(missing_ok=True)


def write_artifacts(root: Path, result: ScanResult, run_ts_ms: int,
                    universe: str | None = None) -> Path:
    """Write the run's files under ``run_folder`` and return that folder;
    ArtifactWriteError naming the path when any of them cannot be written."""
    folder = run_folder(root, result.profile, run_ts_ms)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ArtifactWriteError(folder, err) from err
    files = {SIGNALS_FILE: _csv(signals_table(result, run_ts_ms)),
             EXPLAIN_FILE: (_json_lines(explain(result, run_ts_ms, universe)) + "\n").encode()}
    if result.premove is not None:
        files[PREMOVE_FILE] = _csv(premove_table(result, run_ts_ms))
    for name, data in files.items():
        _write(folder / name, data)
    try:
        fsync_path(folder)
    except OSError as err:
        raise ArtifactWriteError(folder, err) from err
    return folder


def scan_signal_rows(result: ScanResult, run_ts_ms: int, ingested_ms: int,
                     universe: str | None = None) -> pa.Table:
    """SCAN_SIGNALS rows of the run, one per symbol (the store's copy of signals.csv,
    with every factor)."""
    f = result.factors
    n = f.num_rows

    def const(value: object, type_: pa.DataType) -> pa.Array:
        return pa.array([value] * n, type_)

    return pa.table({
        "profile": const(result.profile, pa.string()),
        "run_ts": const(run_ts_ms, pa.int64()).cast(TS_TYPE),
        "symbol": f["symbol"], "source": f["source"],
        "universe": const(universe, pa.string()),
        "regime": const(result.regime, pa.string()),
        "score": _floats(result.scores),
        **{name: f[name] for name in (*FACTOR_NAMES, "vadr", "spread_bps", "depth_usd",
                                      "fresh")},
        "passed": pa.array(result.passed, pa.bool_()),
        "reason": pa.array(result.why, pa.string()),
        "ingested_at": const(ingested_ms, pa.int64()).cast(TS_TYPE),
    }).cast(SCAN_SIGNALS.schema)


__all__ = ["EXPLAIN_FILE", "PREMOVE_FILE", "SIGNALS_FILE", "ArtifactWriteError", "explain",
           "premove_table", "run_folder", "scan_signal_rows", "signals_table",
           "write_artifacts"]
