"""The availability job against the sim's archive over loopback HTTP, into a real store:
per-file verdicts, retries, late files, partial upserts, the symbol sources, quoting."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from candlekeep.availability.dataset import AVAILABILITY
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.archive import ArchiveFault, FaultKind
from tests.availability.tracker_sim import (
    IDS,
    NOW,
    ODD,
    Bench,
    key,
    rows,
    run,
    statuses,
)

DAY = 86_400_000


def days(first: str, last: str) -> list[str]:
    lo, hi = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(lo + dt.timedelta(days=i)).isoformat() for i in range((hi - lo).days + 1)]


async def test_each_file_gets_its_own_verdict(bench: Bench) -> None:
    bench.serve(
        ArchiveFault(FaultKind.ERROR, key("ETHUSDT", "2025-02-20"), status=503),
        ArchiveFault(FaultKind.ERROR, key("BTCUSDT", "2025-02-21"), times=2, status=502),
        ArchiveFault(FaultKind.ERROR, key("BTCUSDT", "2025-02-22"), times=1, status=403),
    )
    rt = bench.runtime()
    res = await run(rt)
    assert res.ok, res.errors
    d = res.details
    assert (d["from"], d["to"]) == ("2025-02-09", "2025-02-28")  # yesterday, 20 days
    # every symbol, listed by the exchange or only by the archive (paged 2 at a time)
    assert (d["symbols"], d["exchange_symbols"], d["listing_symbols"], d["archive_only"]) \
        == (6, 5, 6, 1)
    got = rows(rt)
    assert sorted({s for s, _ in got}) == IDS
    # a 5xx that never ends: an error for that file only, naming it
    eth = statuses(rt, "ETHUSDT")
    assert eth.pop("2025-02-20") == "error"
    assert set(eth.values()) == {"available"} and len(eth) == 19
    err = got[("ETHUSDT", "2025-02-20")]
    assert not err["available"] and err["size"] is None
    assert "HTTP 503" in err["error"] and "ETHUSDT-1h-2025-02-20.zip" in err["error"]
    assert "after 4 attempts" in err["error"]
    # 5xx twice, then 200; a 403 once, then 200
    assert got[("BTCUSDT", "2025-02-21")]["status"] == "available"
    assert got[("BTCUSDT", "2025-02-22")]["status"] == "available"
    assert d["error"] == 1 and d["available"] + d["missing"] + d["error"] == d["probes"]
    assert any("1 probes failed after retries" in w for w in res.warnings)


async def test_a_published_file_has_its_size_and_last_modified(bench: Bench) -> None:
    url = bench.serve()
    rt = bench.runtime(lookback=2, data_type="klines/1m")  # the default
    assert (await run(rt)).ok
    row = rows(rt)[("BTCUSDT", "2025-02-27")]
    zip_url = f"{url}/{key('BTCUSDT', '2025-02-27', '1m')}.zip"
    assert row["url"] == zip_url and row["data_type"] == "klines/1m"
    assert row["size"] == len(httpx.get(zip_url).content) > 10_000
    assert row["last_modified"].timestamp() * 1000 == to_ms("2025-02-28")  # when the day ended
    assert row["probed_at"].timestamp() * 1000 >= NOW
    assert row["error"] is None and row["volume"] is None


async def test_delisted_and_new_symbols(bench: Bench) -> None:
    bench.serve()
    rt = bench.runtime()
    assert (await run(rt)).ok
    # delisted on the 15th, still in exchangeInfo as SETTLING: files stop
    old = statuses(rt, "OLDUSDT")
    assert [d for d, s in old.items() if s == "available"] == days("2025-02-09", "2025-02-14")
    assert {old[d] for d in days("2025-02-15", "2025-02-28")} == {"missing"}
    # delisted on the 18th and gone from exchangeInfo: only the archive listing names it
    gone = statuses(rt, "GONEUSDT")
    assert [d for d, s in gone.items() if s == "available"] == days("2025-02-09", "2025-02-17")
    # listed on the 20th: earlier dates are not probed at all
    assert sorted(statuses(rt, "NEWUSDT")) == days("2025-02-20", "2025-02-28")
    assert set(statuses(rt, "NEWUSDT").values()) == {"available"}


async def test_non_ascii_symbol_is_percent_encoded(bench: Bench) -> None:
    url = bench.serve()
    rt = bench.runtime(lookback=1)
    assert (await run(rt)).ok
    row = rows(rt)[(f"{ODD}USDT", "2025-02-28")]
    assert row["status"] == "available"
    assert row["url"] == (f"{url}/data/futures/um/daily/klines/%E5%B8%81%E5%AE%89%E4%BA%BA"
                          "%E7%94%9FUSDT/1h/%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9FUSDT-1h-"
                          "2025-02-28.zip")
    assert httpx.head(row["url"]).status_code == 200


async def test_a_late_file_is_picked_up_by_the_next_runs_lookback(bench: Bench) -> None:
    late = ArchiveFault(FaultKind.MISSING, key("BTCUSDT", "2025-02-25"), until_ms=NOW + DAY)
    bench.serve(late)
    rt = bench.runtime(lookback=5)
    assert (await run(rt)).ok
    assert statuses(rt, "BTCUSDT")["2025-02-25"] == "missing"
    await bench.pass_days(1)  # the file arrives; the next daily run re-probes the window
    res = await run(rt)
    assert res.ok and (res.details["from"], res.details["to"]) == ("2025-02-25", "2025-03-01")
    row = rows(rt)[("BTCUSDT", "2025-02-25")]
    assert row["status"] == "available" and row["size"] > 0


async def test_an_error_does_not_unlearn_an_earlier_verdict(bench: Bench) -> None:
    bench.serve()
    rt = bench.runtime(lookback=3)
    assert (await run(rt)).ok
    before = rows(rt)[("BTCUSDT", "2025-02-27")]
    bench.serve(ArchiveFault(FaultKind.ERROR, key("BTCUSDT", "2025-02-27")),
                ArchiveFault(FaultKind.ERROR, key("BTCUSDT", "2025-02-25")))
    rt2 = bench.runtime(lookback=4)  # same store, the new server
    res = await run(rt2)
    after = rows(rt2)
    kept = after[("BTCUSDT", "2025-02-27")]
    assert kept["status"] == "available" and kept["size"] == before["size"]
    assert kept["probed_at"] == before["probed_at"]
    assert "HTTP 503" in kept["error"]
    # never probed before: recorded as an error
    assert after[("BTCUSDT", "2025-02-25")]["status"] == "error"
    assert res.details["kept_on_error"] == 1 and res.details["error"] == 2


async def test_volumes_come_from_1d_files_and_survive_reprobes(bench: Bench) -> None:
    bench.serve()
    rt = bench.runtime(lookback=2, volumes=True)
    res = await run(rt)
    assert res.ok, res.errors
    # the four trading symbols x 2 days (OLD and GONE were delisted before)
    assert res.details["volumes"] == 8
    assert bench.exchange is not None
    truth = bench.exchange.expected("BTC/USDT:USDT", "1d", to_ms("2025-02-27"),
                                    to_ms("2025-02-28")).to_pylist()[0]
    row = rows(rt)[("BTCUSDT", "2025-02-27")]
    assert (row["volume"], row["quote_volume"], row["trades"]) == (
        truth["volume"], truth["quote_volume"], truth["trades"])
    # a probe-only run rewrites the probe columns and keeps the volumes
    await bench.pass_days(1)
    res = await run(rt, volumes=False, lookback=3)
    assert res.ok and res.details["volumes"] == 0
    again = rows(rt)[("BTCUSDT", "2025-02-27")]
    assert again["probed_at"] > row["probed_at"]
    assert again["volume"] == row["volume"] and again["trades"] == row["trades"]
    assert rows(rt)[("BTCUSDT", "2025-02-28")]["volume"] is not None
    # with volumes on, only dates that lack them are fetched
    assert rows(rt)[("BTCUSDT", "2025-03-01")]["volume"] is None
    res = await run(rt, volumes=True, lookback=3)
    assert res.details["volumes"] == 4  # 2025-03-01's, new since the last volume run
    assert rows(rt)[("BTCUSDT", "2025-03-01")]["volume"] is not None


async def test_a_bad_1d_file_is_a_warning_naming_it(bench: Bench) -> None:
    bench.serve(ArchiveFault(FaultKind.BAD_NUMBER, key("ETHUSDT", "2025-02-28", "1d")))
    rt = bench.runtime(lookback=1, volumes=True)
    res = await run(rt)
    assert res.ok
    assert any("ETHUSDT-1d-2025-02-28.csv" in w and "volumes" in w for w in res.warnings)
    assert rows(rt)[("ETHUSDT", "2025-02-28")]["volume"] is None
    assert rows(rt)[("BTCUSDT", "2025-02-28")]["volume"] is not None


@pytest.mark.parametrize("times", [None, 1])
async def test_a_listing_page_cut_short(bench: Bench, times: int | None) -> None:
    """Cut every time: an error naming the page, the exchange's symbols still probed.
    Cut once: retried, nothing lost."""
    bench.serve(ArchiveFault(FaultKind.TRUNCATED, "data/futures/um/daily/klines/",
                             times=times, listing=True))
    rt = bench.runtime(lookback=1)
    res = await run(rt)
    symbols = {s for s, _ in rows(rt)}
    if times is None:
        assert not res.ok
        (err,) = [e for e in res.errors if "listing" in e]
        assert "data.binance.vision?prefix=data%2Ffutures%2Fum%2Fdaily%2Fklines%2F" in err
        assert "malformed XML" in err and "after 4 attempts" in err
        assert "GONEUSDT" not in symbols and "BTCUSDT" in symbols
    else:
        assert res.ok, res.errors
        assert "GONEUSDT" in symbols


async def test_params_must_name_a_source_of_the_market(bench: Bench) -> None:
    bench.serve()
    rt = bench.runtime()
    res = await run(rt, market="spot", source="um")
    assert not res.ok
    assert "market spot does not match source 'um'" in res.errors[0]
    assert "jobs.tracker.params.market" in res.errors[0]
    res = await run(rt, market="spot")
    assert "no ccxt Binance source for market spot" in res.errors[0]
    res = await run(rt, market="futures/um", source="nope")
    assert "unknown source 'nope'" in res.errors[0]
    res = await run(rt, date="2025-03-01")
    assert "has no daily file yet" in res.errors[0]
    # Files from a mirror (the sim) but the listing from the public bucket: refused.
    res = await run(rt, listing_url=None)
    assert "jobs.tracker.params.listing_url" in res.errors[0]
    assert "reads files from a mirror" in res.errors[0]


async def test_one_store_tracks_one_data_type_per_market(bench: Bench) -> None:
    bench.serve()
    rt = bench.runtime(lookback=1)
    assert (await run(rt)).ok
    res = await run(rt, data_type="klines/1d")
    assert not res.ok and "already tracks klines/1h for futures/um" in res.errors[0]


async def test_dry_run_probes_nothing(bench: Bench) -> None:
    from candlekeep.jobs.runner import build_params
    from candlekeep.scheduler.manual import run_adhoc

    bench.serve()
    rt = bench.runtime()
    job: Any = rt.config.job("tracker")
    res = await run_adhoc(rt, "availability", build_params("availability", job.params),
                          dry_run=True)
    assert res.ok and "for 2025-02-09 .. 2025-02-28 (20 dates)" in res.details["plan"]
    assert rt.store("main").read(AVAILABILITY).num_rows == 0
