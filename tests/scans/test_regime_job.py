"""The regime job over a DuckDB store filled by a real backfill from the in-process sim:
regime.json and the regimes row against indicators computed here with plain Python from
the sim's own candles, under the universe's own folder; a failed artifact write fails the
run naming the path and leaves neither file."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path

import pyarrow.compute as pc

from candlekeep.core.clock import FakeClock
from candlekeep.core.timeutil import iso_ms
from candlekeep.jobs.regime import latest_regime
from candlekeep.jobs.runtime import Runtime
from candlekeep.sim.exchange import SimExchange
from candlekeep.sources.sim_source import SimSource
from tests.jobs.conftest import NOW, make_config
from tests.jobs.test_pipeline import run

H = 3_600_000
SYMBOLS = ["BTC/USDT", "ETH/USDT", "BNB/USDT", "SOL/USDT"]


def runtime(tmp_path: Path, clock: FakeClock, ex: SimExchange) -> Runtime:
    cfg = make_config(tmp_path, [{"source": "sim", "symbols": SYMBOLS, "timeframes": ["1h"],
                                  "start": NOW - 9 * 24 * H}],
                      universes={"majors": {"source": "sim",
                                            "symbols": [*SYMBOLS, "NONE/USDT"]}})
    return Runtime(cfg, clock=clock, sources={"sim": SimSource("sim", exchange=ex,
                                                               clock=clock)})


def expected(ex: SimExchange) -> dict[str, object]:
    """The three indicators from the sim's candles, in plain Python."""
    as_of = NOW // H * H - H
    closes = {s: dict(zip(pc.cast(t["ts"], "int64").to_pylist(), t["close"].to_pylist(),
                          strict=True))
              for s in SYMBOLS
              for t in [ex.expected(s, "1h", as_of - 200 * H, as_of + H, source="sim")]}
    btc = [closes["BTC/USDT"][as_of - i * H] for i in range(168, -1, -1)]
    vol = statistics.stdev(math.log(b / a) for a, b in itertools.pairwise(btc)) \
        * math.sqrt(24 * 365)
    above = [c[as_of] > sum(c[as_of - i * H] for i in range(20)) / 20 for c in closes.values()]
    up = [c[as_of] > c[as_of - 24 * H] for c in closes.values()]
    return {"as_of": iso_ms(as_of), "vol": vol, "above": sum(above) / 4, "up": sum(up) / 4}


async def test_regime_job_records_what_plain_python_computes(tmp_path: Path) -> None:
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, {s: "2017-08-17" for s in SYMBOLS}, clock=FakeClock(NOW),
                     holes=None, transient=None)
    rt = runtime(tmp_path, clock, ex)
    try:
        assert (await run(rt, "backfill")).ok
        res = await run(rt, "regime", universe="majors")
        assert res.ok, res.errors
        want = expected(ex)
        run_file, latest = (Path(a) for a in res.artifacts)
        assert latest == tmp_path / "data" / "artifacts" / "regime" / "majors" / "latest.json"
        assert run_file.parent.parent == latest.parent and run_file.name == "regime.json"
        body = json.loads(run_file.read_text())
        assert json.loads(latest.read_text()) == body
        ind = body["indicators"]
        assert body["as_of"] == want["as_of"] and body["timeframe"] == "1h"
        assert abs(ind["btc_volatility"]["value"] - want["vol"]) < 1e-9
        assert ind["above_ma_share"]["value"] == want["above"]
        assert ind["breadth"]["value"] == want["up"]
        assert ind["above_ma_share"]["counted"] == ind["breadth"]["counted"] == 4
        assert body["excluded"] == {
            "NONE/USDT": f"no 1h candles in the window to {want['as_of']}"}
        votes = [ind[k]["vote"] for k in ("btc_volatility", "above_ma_share", "breadth")]
        majority = [v for v in votes if votes.count(v) > 1]
        assert (body["regime"], body["confidence"]) == (
            (majority[0], round(len(majority) / 3, 6)) if majority else ("normal", 0.333333))
        assert votes[0] == ("calm" if want["vol"] < 0.25 else
                            "volatile" if want["vol"] > 0.45 else "normal")
        assert set(body["weights"]) == {"momentum", "technical", "volume", "quality"}
        stored = latest_regime(rt.store("main"), "majors")
        assert stored is not None and stored.regime == body["regime"]
        assert iso_ms(stored.next_refresh) == body["next_refresh"]
        assert stored.volatility.value == ind["btc_volatility"]["value"]
        assert latest_regime(rt.store("main"), "other") is None
    finally:
        await rt.aclose()


async def test_failed_artifact_write_fails_the_run_naming_the_path(tmp_path: Path) -> None:
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, {s: "2017-08-17" for s in SYMBOLS}, clock=FakeClock(NOW),
                     holes=None, transient=None)
    rt = runtime(tmp_path, clock, ex)
    try:
        assert (await run(rt, "backfill")).ok
        blocker = tmp_path / "data" / "artifacts" / "regime"
        blocker.parent.mkdir(parents=True)
        blocker.write_text("a file where the folder goes")
        res = await run(rt, "regime", universe="majors")
        assert not res.ok
        assert any(str(blocker) in e and "cannot write artifact" in e for e in res.errors)
        assert latest_regime(rt.store("main"), "majors") is None  # nothing recorded
    finally:
        await rt.aclose()


async def test_a_failed_latest_json_leaves_no_run_file(tmp_path: Path) -> None:
    """latest.json cannot be replaced (a folder stands there): the run fails naming it,
    and the run's own regime.json, written first, is removed (both files or neither)."""
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, {s: "2017-08-17" for s in SYMBOLS}, clock=FakeClock(NOW),
                     holes=None, transient=None)
    rt = runtime(tmp_path, clock, ex)
    try:
        assert (await run(rt, "backfill")).ok
        folder = tmp_path / "data" / "artifacts" / "regime" / "majors"
        (folder / "latest.json" / "x").mkdir(parents=True)
        res = await run(rt, "regime", universe="majors")
        assert not res.ok
        assert any(f"cannot write artifact {folder / 'latest.json'}" in e for e in res.errors)
        assert sorted(p.name for p in folder.iterdir()) == ["latest.json"]  # no run folder
        assert latest_regime(rt.store("main"), "majors") is None
    finally:
        await rt.aclose()
