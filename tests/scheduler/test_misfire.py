"""The misfire policy as a pure function: what runs and what is skipped after downtime."""

from candlekeep.scheduler.misfire import decide
from tests.scheduler.helpers import ms, spec

MIN = 60_000
T0 = ms("2025-01-01T00:00:00")


def test_nothing_due() -> None:
    d = decide(spec("j", "*/5 * * * *"), T0, T0 + 4 * MIN, free_slots=1)
    assert d.run == [] and d.skip == [] and d.last_tick == T0 and not d.pending


def test_one_tick_due_runs() -> None:
    d = decide(spec("j", "*/5 * * * *"), T0, T0 + 5 * MIN + 30, free_slots=1)
    assert d.run == [T0 + 5 * MIN] and d.last_tick == T0 + 5 * MIN


def test_no_free_slot_leaves_the_tick_pending() -> None:
    d = decide(spec("j", "*/5 * * * *"), T0, T0 + 5 * MIN, free_slots=0)
    assert d.run == [] and d.pending and d.last_tick == T0


def test_coalesce_runs_the_latest_and_records_the_rest() -> None:
    d = decide(spec("j", "*/5 * * * *"), T0, T0 + 62 * MIN, free_slots=1)
    assert d.run == [T0 + 60 * MIN]
    assert [t for t, _ in d.skip] == [T0 + k * 5 * MIN for k in range(1, 12)]
    assert all("coalesced" in why for _, why in d.skip)
    assert d.skipped_total == 11 and d.last_tick == T0 + 60 * MIN


def test_catch_up_runs_every_missed_tick_as_slots_allow() -> None:
    s = spec("j", "*/5 * * * *", misfire="catch_up", max_concurrent=2)
    d = decide(s, T0, T0 + 22 * MIN, free_slots=2)
    assert d.run == [T0 + 5 * MIN, T0 + 10 * MIN]
    assert d.pending and d.last_tick == T0 + 10 * MIN and d.skip == []
    d2 = decide(s, d.last_tick, T0 + 22 * MIN, free_slots=2)
    assert d2.run == [T0 + 15 * MIN, T0 + 20 * MIN] and not d2.pending


def test_grace_skips_older_ticks_and_says_how_late() -> None:
    s = spec("j", "*/5 * * * *", misfire="catch_up", grace_s=600)
    d = decide(s, T0, T0 + 60 * MIN, free_slots=5)
    # 00:05 … 00:45 are older than 10 minutes: skipped; 00:50, 00:55, 01:00 run.
    assert [t for t, _ in d.skip] == [T0 + k * 5 * MIN for k in range(1, 10)]
    assert "55m00s late" in d.skip[0][1] and "misfire_grace 10m" in d.skip[0][1]
    assert d.run == [T0 + 50 * MIN, T0 + 55 * MIN, T0 + 60 * MIN]


def test_skip_runs_only_an_on_time_tick() -> None:
    s = spec("j", "*/5 * * * *", misfire="skip")
    late = decide(s, T0, T0 + 61 * MIN, free_slots=1)
    assert late.run == [] and late.skipped_total == 12 and late.last_tick == T0 + 60 * MIN
    on_time = decide(s, T0, T0 + 60 * MIN + 2_000, free_slots=1)
    assert on_time.run == [T0 + 60 * MIN] and on_time.skipped_total == 11


def test_skipped_rows_are_capped_but_all_are_counted() -> None:
    s = spec("j", "* * * * * *", misfire="coalesce", grace_s=60)
    d = decide(s, T0, T0 + 86_400_000, free_slots=1, max_rows=100)
    assert len(d.skip) == 100
    assert d.skipped_total == 86_400 - 1
    assert "not listed" in d.skip[-1][1]
    assert d.run == [T0 + 86_400_000]
