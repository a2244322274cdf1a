"""A scan run's files and store rows: ``signals.csv``, ``explain.json`` (and ``premove.csv``
for the premove profile) under ``<artifacts>/scans/<universe>/<profile>/<YYYYmmddTHHMMSSZ>/``,
and the SCAN_SIGNALS rows.

A run's folder appears whole or not at all: its files are written and synced in a hidden
sibling (``.<name>.tmp-<random>``) that is renamed to the final name at the end, so a reader
never sees half a run. An existing run folder is never reused (two runs of one universe and
profile in one second: the second gets ``<name>-2``, then ``-3``...). A write that fails
removes the temporary folder and raises ``ArtifactWriteError`` naming the path that failed;
the run fails with it and records nothing.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import shutil
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
        super().__init__(f"cannot write artifact {path}: {err.strerror or err}")


def run_dirname(ts_ms: int) -> str:
    """A run's folder name: its UTC time, ``20260101T131712Z`` (names sort by time). The
    one format of every artifact run folder (scans and regime)."""
    return ms_to_datetime(ts_ms).strftime("%Y%m%dT%H%M%SZ")


def run_folder(root: Path, universe: str, profile: str, run_ts_ms: int) -> Path:
    """``<root>/scans/<universe>/<profile>/<UTC time>``: where a run's folder goes (with a
    ``-2``, ``-3``... suffix when that name is taken)."""
    return root / "scans" / universe / profile / run_dirname(run_ts_ms)


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


def explain(result: ScanResult, run_ts_ms: int, universe: str) -> dict[str, Any]:
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
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _land(tmp: Path, final: Path) -> Path:
    """Rename the finished ``tmp`` folder to ``final``, or ``final-2``, ``-3``... when a run
    folder of that name exists (a rename onto a non-empty folder fails, so two writers
    racing for a name both land, in different folders)."""
    for n in range(1, 1000):
        target = final if n == 1 else final.with_name(f"{final.name}-{n}")
        if target.exists():
            continue
        try:
            os.rename(tmp, target)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            raise ArtifactWriteError(target, err) from err
        return target
    raise ArtifactWriteError(final, OSError(errno.EEXIST, "999 run folders of that name"))


def write_run_folder(final: Path, files: dict[str, bytes]) -> Path:
    """``files`` in a new run folder named ``final`` (or ``final-2``… when taken), whole
    or not at all: written and synced in a hidden temporary sibling, renamed into place,
    the parent synced. Returns the folder; ArtifactWriteError naming the path that failed,
    with nothing left behind. Scans and the regime write their runs through it."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ArtifactWriteError(final.parent, err) from err
    tmp = final.with_name(f".{final.name}.tmp-{secrets.token_hex(4)}")
    path = tmp
    try:
        tmp.mkdir()
        for name, data in files.items():
            path = tmp / name
            _write(path, data)
        path = tmp
        fsync_path(tmp)
        folder = _land(tmp, final)
        path = folder.parent
        fsync_path(folder.parent)
    except OSError as err:
        raise ArtifactWriteError(path, err) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already once renamed
    return folder


def write_artifacts(root: Path, result: ScanResult, run_ts_ms: int, universe: str) -> Path:
    """Write the run's files into a new run folder (see ``write_run_folder``) and return
    it; ArtifactWriteError naming the path when any of it cannot be written, with nothing
    left behind."""
    files = {SIGNALS_FILE: _csv(signals_table(result, run_ts_ms)),
             EXPLAIN_FILE: (_json_lines(explain(result, run_ts_ms, universe)) + "\n").encode()}
    if result.premove is not None:
        files[PREMOVE_FILE] = _csv(premove_table(result, run_ts_ms))
    return write_run_folder(run_folder(root, universe, result.profile, run_ts_ms), files)


def scan_signal_rows(result: ScanResult, run_ts_ms: int, ingested_ms: int,
                     universe: str) -> pa.Table:
    """SCAN_SIGNALS rows of the run, one per symbol (the store's copy of signals.csv,
    with every factor)."""
    f = result.factors
    n = f.num_rows

    def const(value: object, type_: pa.DataType) -> pa.Array:
        return pa.array([value] * n, type_)

    return pa.table({
        "universe": const(universe, pa.string()),
        "profile": const(result.profile, pa.string()),
        "run_ts": const(run_ts_ms, pa.int64()).cast(TS_TYPE),
        "symbol": f["symbol"], "source": f["source"],
        "regime": const(result.regime, pa.string()),
        "score": _floats(result.scores),
        **{name: f[name] for name in (*FACTOR_NAMES, "vadr", "spread_bps", "depth_usd",
                                      "fresh")},
        "passed": pa.array(result.passed, pa.bool_()),
        "reason": pa.array(result.why, pa.string()),
        "ingested_at": const(ingested_ms, pa.int64()).cast(TS_TYPE),
    }).cast(SCAN_SIGNALS.schema)


__all__ = ["EXPLAIN_FILE", "PREMOVE_FILE", "SIGNALS_FILE", "ArtifactWriteError", "explain",
           "premove_table", "run_dirname", "run_folder", "scan_signal_rows", "signals_table",
           "write_artifacts", "write_run_folder"]
