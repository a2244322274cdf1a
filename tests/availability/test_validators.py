"""The validators: each verdict on plain inputs, then each warning and error through a run
against the sim (HTTP 451 from exchangeInfo among them), and the core flow on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from candlekeep.availability.validators import (
    LiveSymbols,
    Severity,
    Validator,
    completeness,
    continuity,
    cross_check,
    settled_until,
)
from candlekeep.sim.archive import ArchiveFault, FaultKind
from tests.availability.tracker_sim import Bench, key, rows, run, statuses

D = dt.date(2025, 2, 1)


def day(n: int) -> dt.date:
    return D + dt.timedelta(days=n)


def history(spec: dict[str, dict[int, str]]) -> pa.Table:
    out: dict[str, list[object]] = {"symbol": [], "date": [], "status": []}
    for sym, statuses_ in spec.items():
        for n, status in statuses_.items():
            out["symbol"].append(sym)
            out["date"].append(day(n))
            out["status"].append(status)
    return pa.table({"symbol": pa.array(out["symbol"], pa.string()),
                     "date": pa.array(out["date"], pa.date32()),
                     "status": pa.array(out["status"], pa.string())})


# ---------------------------------------------------------------------- pure verdicts


def test_continuity_finds_holes_between_first_and_last_file() -> None:
    h = history({
        "AAA": {0: "available", 1: "missing", 2: "error", 4: "available"},  # 3 unprobed
        "BBB": {0: "missing", 1: "available", 2: "available", 3: "missing"},  # no hole
        "CCC": {0: "available", 8: "missing", 9: "available"},  # 9 after settled
    })
    f = continuity(h, settled=day(8))
    assert f.validator is Validator.CONTINUITY and f.severity is Severity.WARNING
    gaps = {g["symbol"]: g["missing"] for g in f.details["gaps"]}
    assert gaps["AAA"] == [day(n).isoformat() for n in (1, 2, 3)]
    assert "BBB" not in gaps
    # CCC's holes count up to the settled date only: its files may still come
    assert gaps["CCC"] == [day(n).isoformat() for n in range(1, 9)]
    assert f.message.startswith("2 of 3 symbols miss 11 dates")
    assert continuity(history({"AAA": {0: "available", 1: "available"}}),
                      settled=day(9)).severity is Severity.OK
    assert continuity(history({"AAA": {0: "missing"}}),
                      settled=day(9)).severity is Severity.SKIPPED


def test_completeness_judges_settled_dates_only() -> None:
    dates = [day(n) for n in range(6)]
    counts = {day(0): 5, day(1): 2, day(2): 5, day(3): 5, day(4): 0, day(5): 0}
    settled = settled_until(day(6), 3)  # day(3): days 4 and 5 are inside the buffer
    f = completeness(counts, dates, min_symbols=3, settled=settled)
    assert f.severity is Severity.ERROR
    assert [s["date"] for s in f.details["short"]] == [day(1).isoformat()]
    assert "2 newer dates inside the publication buffer not judged" in f.message
    ok = completeness(counts, dates, min_symbols=2, settled=settled)
    assert ok.severity is Severity.OK and "fewest 2" in ok.message
    none = completeness(counts, [day(5)], min_symbols=2, settled=settled)
    assert none.severity is Severity.SKIPPED


def test_cross_check_share_and_unknown_lists() -> None:
    live = LiveSymbols(frozenset(f"S{i:02d}" for i in range(40)))
    all_but_one = {f"S{i:02d}" for i in range(1, 40)}
    ok = cross_check(live, all_but_one, day(0), minimum=0.95)
    assert ok.severity is Severity.OK and ok.details["share"] == 0.975
    bad = cross_check(live, all_but_one - {"S01", "S02"}, day(0), minimum=0.95)
    assert bad.severity is Severity.ERROR and bad.details["absent"] == ["S00", "S01", "S02"]
    assert "not above 95%" in bad.message
    # exactly the minimum is not a pass: the match must be above it
    twenty = LiveSymbols(frozenset(f"S{i:02d}" for i in range(20)))
    edge = cross_check(twenty, {f"S{i:02d}" for i in range(1, 20)}, day(0), minimum=0.95)
    assert edge.severity is Severity.ERROR and edge.details["share"] == 0.95
    geo = cross_check(LiveSymbols(None, "HTTP 451", geo_blocked=True), set(), day(0),
                      minimum=0.95)
    assert geo.severity is Severity.WARNING and "geo-blocked" in geo.message
    down = cross_check(LiveSymbols(None, "HTTP 503"), set(), day(0), minimum=0.95)
    assert down.severity is Severity.ERROR and "could not be read: HTTP 503" in down.message
    assert cross_check(live, set(), None, minimum=0.95).severity is Severity.SKIPPED


# ---------------------------------------------------------------------- through a run


def findings(res: object) -> dict[str, dict[str, object]]:
    return {f["validator"]: f for f in res.details["validators"]}  # type: ignore[attr-defined]


async def test_a_clean_run_passes_every_validator(bench: Bench) -> None:
    bench.serve()
    res = await run(bench.runtime(min_symbols=3))
    assert res.ok and not res.warnings, (res.errors, res.warnings)
    f = findings(res)
    assert {v["severity"] for v in f.values()} == {"ok"}
    # live trading: BTC, ETH, NEW and 币安人生 (OLD is SETTLING, GONE not listed at all)
    assert f["cross_check"]["live"] == 4 and f["cross_check"]["date"] == "2025-02-26"


async def test_continuity_warning(bench: Bench) -> None:
    bench.serve(ArchiveFault(FaultKind.MISSING, key("ETHUSDT", "2025-02-12")))
    res = await run(bench.runtime())
    assert res.ok
    (w,) = [w for w in res.warnings if w.startswith("continuity")]
    assert "ETHUSDT (2025-02-12)" in w
    assert statuses(bench.runtimes[0], "ETHUSDT")["2025-02-12"] == "missing"


async def test_completeness_error_outside_the_buffer_only(bench: Bench) -> None:
    # files per date: 5 up to the 14th (OLD delisted on the 15th), 4 up to the 17th (GONE
    # on the 18th), 3 on the 18th and 19th, 4 from the 20th (NEW listed)
    bench.serve()
    res = await run(bench.runtime(min_symbols=5))
    assert not res.ok
    (e,) = res.errors
    assert e.startswith("completeness: 12 of 18 settled dates have fewer than 5 files: "
                        "2025-02-15 (4), 2025-02-16 (4), 2025-02-17 (4), 2025-02-18 (3)")
    assert "2 newer dates inside the publication buffer not judged" in e


async def test_cross_check_error_when_live_symbols_lack_files(bench: Bench) -> None:
    bench.serve(ArchiveFault(FaultKind.MISSING, key("NEWUSDT", "2025-02-26")),
                ArchiveFault(FaultKind.MISSING, key("ETHUSDT", "2025-02-26")))
    res = await run(bench.runtime(lookback=3))
    assert not res.ok
    (e,) = [e for e in res.errors if e.startswith("cross_check")]
    assert "2 of 4 live trading symbols (50.0%) have a file on 2025-02-26" in e
    assert "without one: ETHUSDT, NEWUSDT" in e
    # lowering the bar passes the same data
    res = await run(bench.runtimes[0], lookback=3, cross_check_min=0.49)
    assert res.ok


async def test_geo_blocked_exchange_list_is_a_warning(bench: Bench) -> None:
    bench.serve()
    assert bench.exchange is not None
    bench.exchange.force("451", 3, endpoint="exchangeInfo")
    rt = bench.runtime(lookback=2)
    res = await run(rt)
    assert res.ok, res.errors
    (w,) = [w for w in res.warnings if w.startswith("cross_check")]
    assert "geo-blocked" in w and "HTTP 451" in w
    # the archive's listing still names every symbol with files
    assert res.details["exchange_symbols"] == 0 and res.details["symbols"] == 6
    assert rows(rt)[("BTCUSDT", "2025-02-28")]["status"] == "available"


async def test_unreadable_exchange_list_is_an_error(bench: Bench) -> None:
    bench.serve()
    assert bench.exchange is not None
    bench.exchange.force("503", 10, endpoint="exchangeInfo")
    res = await run(bench.runtime(lookback=1))
    assert not res.ok
    (e,) = [e for e in res.errors if e.startswith("cross_check")]
    assert "could not be read" in e and "503" in e
    assert res.details["probes"] == 6  # the listing's symbols were probed all the same


async def test_core_flow_on_postgresql(bench: Bench, pg_url: str) -> None:
    bench.serve(ArchiveFault(FaultKind.ERROR, key("ETHUSDT", "2025-02-27")))
    rt = bench.runtime({"type": "postgresql", "dsn": pg_url}, lookback=3, volumes=True)
    res = await run(rt)
    assert res.ok, res.errors
    got = rows(rt)
    assert got[("ETHUSDT", "2025-02-27")]["status"] == "error"
    assert got[("BTCUSDT", "2025-02-27")]["volume"] is not None
    res = await run(rt, lookback=3)  # a re-probe without volumes keeps them
    assert rows(rt)[("BTCUSDT", "2025-02-27")]["volume"] == got[("BTCUSDT",
                                                                 "2025-02-27")]["volume"]
    assert statuses(rt, "OLDUSDT") == dict.fromkeys(
        ("2025-02-26", "2025-02-27", "2025-02-28"), "missing")
