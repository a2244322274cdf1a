"""The built-in report sections: freshness, runs, gaps, coverage, errors.

Each reads through the shared read model (``candlekeep.queries``) where it has the answer,
and through its own SQL on the state DB otherwise (runs with their durations, errors).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from candlekeep.reports.chart import Chart, Stack, stacked_bars
from candlekeep.reports.sections import (
    Column,
    Format,
    Row,
    Section,
    SectionInput,
    query,
    register_section,
    sql_rows,
)
from candlekeep.state.statuses import FreshnessStatus, RunStatus

FAILED = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED)
ENDED = (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.TIMED_OUT)
"""Runs whose duration means something (an abandoned run's end is when it was found dead)."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- freshness ------------------------------------------------------------------------------

_WORST_FIRST = {FreshnessStatus.ERROR: 0, FreshnessStatus.MISSING: 1,
                FreshnessStatus.STALE: 2, FreshnessStatus.OK: 3}


def _freshness_rows(inp: SectionInput) -> list[Row]:
    from candlekeep.queries.freshness import freshness

    views = sorted(freshness(inp.reader), key=lambda v: (_WORST_FIRST[v.status], v.subject))
    return [(v.subject, v.store, v.status.value, v.newest_ms, v.age_ms, v.threshold_ms,
             v.status_since, v.detail) for v in views]


def _freshness_headline(rows: Sequence[Row]) -> str | None:
    counts = {s: sum(1 for r in rows if r[2] == s.value) for s in _WORST_FIRST}
    bad = [f"{counts[s]} {s.value}" for s in _WORST_FIRST if s != FreshnessStatus.OK
           and counts[s]]
    return f"freshness {', '.join(bad)}" if bad else None


FRESHNESS = Section(
    name="freshness", title="Freshness",
    columns=(Column("series / dataset"), Column("store"), Column("status", Format.STATUS),
             Column("newest", Format.TIME), Column("age", Format.DURATION),
             Column("allowed", Format.DURATION), Column("since", Format.TIME),
             Column("detail", max_chars=200)),
    rows=_freshness_rows, note="The last freshness check's verdicts, worst first.",
    empty="No freshness verdicts yet: add a job of type freshness.",
    limit=100, headline=_freshness_headline)


# -- runs -------------------------------------------------------------------------------------

_RUNS_SQL = ("SELECT job, status, started_at, finished_at FROM runs "
             "WHERE scheduled_for >= :since AND scheduled_for <= :now")


def _runs_rows(inp: SectionInput) -> list[Row]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    durations: dict[str, list[int]] = defaultdict(list)
    for job, status, started, finished in query(
            inp.reader, _RUNS_SQL, {"since": inp.since_ms, "now": inp.now_ms}):
        assert isinstance(job, str)
        c = counts[job]
        c[0 if status == RunStatus.SUCCESS else 1 if status in FAILED else 2] += 1
        if status in ENDED and isinstance(started, int) and isinstance(finished, int):
            durations[job].append(finished - started)
    rows: list[Row] = []
    for job, (ok, failed, other) in counts.items():
        d = durations[job]
        rows.append((job, ok, failed, other, int(statistics.median(d)) if d else None,
                     max(d) if d else None))
    rows.sort(key=lambda r: (-int(r[2] or 0), str(r[0])))
    return rows


def _runs_headline(rows: Sequence[Row]) -> str | None:
    failed = sum(int(r[2] or 0) for r in rows)
    return _plural(failed, "failed run") if failed else None


def _runs_chart(rows: Sequence[Row], inp: SectionInput) -> Chart | None:
    if not rows:
        return None
    shown = rows[:30]

    def col(i: int) -> list[float]:
        return [float(r[i] or 0) for r in shown]

    jobs = [str(r[0]) for r in shown]
    return stacked_bars(
        f"Runs per job, last {inp.window}", jobs,
        [Stack("succeeded", "#2da44e", col(1)), Stack("failed", "#cf222e", col(2)),
         Stack("other", "#8c959f", col(3))],
        alt="Runs per job: " + "; ".join(
            f"{r[0]} {r[1]} ok, {r[2]} failed" for r in shown))


RUNS = Section(
    name="runs", title="Runs",
    columns=(Column("job"), Column("succeeded", Format.COUNT), Column("failed", Format.COUNT),
             Column("other", Format.COUNT), Column("p50", Format.DURATION),
             Column("max", Format.DURATION)),
    rows=_runs_rows, note="Attempts scheduled in the window, per job; failed counts timed "
    "out and abandoned runs, other counts skipped, cancelled and live ones.",
    empty="No runs in the window.", limit=100, headline=_runs_headline, chart=_runs_chart)


# -- gaps ---------------------------------------------------------------------------------------

def _gaps_rows(inp: SectionInput) -> list[Row]:
    from candlekeep.queries.gaps import gaps

    found = [g for status in ("open", "failed") for g in gaps(inp.reader, status=status).items]
    found.sort(key=lambda g: (-g.gap_start, g.series))
    return [(g.series, g.gap_start, g.gap_end, g.candles, g.status, g.attempts, g.last_error)
            for g in found]


def _gaps_headline(rows: Sequence[Row]) -> str | None:
    return _plural(len(rows), "open gap") if rows else None


GAPS = Section(
    name="gaps", title="Open gaps",
    columns=(Column("series"), Column("from", Format.TIME), Column("to", Format.TIME),
             Column("candles", Format.COUNT), Column("status", Format.STATUS),
             Column("attempts", Format.COUNT), Column("last error", max_chars=200)),
    rows=_gaps_rows, note="Missing ranges not repaired yet (failed: given up after "
    "repeated errors), newest first.",
    empty="No open gaps.", limit=50, headline=_gaps_headline)


# -- coverage ------------------------------------------------------------------------------------


def _coverage_rows(inp: SectionInput) -> list[Row]:
    from candlekeep.queries.coverage import coverage

    rows: list[Row] = [
        (c.series, c.store, c.first_ms, c.last_ms, c.stored, c.missing, c.confirmed_empty,
         c.coverage_pct if c.expected else None, c.open_gaps)
        for c in coverage(inp.reader, inp.runtime.plans())]
    rows.sort(key=lambda r: (r[7] if isinstance(r[7], float) else -1.0, str(r[0])))
    return rows


COVERAGE = Section(
    name="coverage", title="Coverage",
    columns=(Column("series"), Column("store"), Column("first", Format.TIME),
             Column("last", Format.TIME), Column("stored", Format.COUNT),
             Column("missing", Format.COUNT), Column("confirmed empty", Format.COUNT),
             Column("coverage", Format.PERCENT), Column("open gaps", Format.COUNT)),
    rows=_coverage_rows, note="Stored candles against the grid between each series' first "
    "and last (as of the last freshness check, plus what was written since); ranges the "
    "exchange has no candles for count as covered. Lowest first.",
    empty="No series configured.", limit=100)


# -- errors -------------------------------------------------------------------------------------

ERRORS = Section(
    name="errors", title="Top errors",
    columns=(Column("job"), Column("runs", Format.COUNT), Column("last", Format.TIME),
             Column("error", max_chars=300)),
    rows=sql_rows(
        "SELECT job, COUNT(*), MAX(finished_at), error FROM runs "
        "WHERE scheduled_for >= :since AND scheduled_for <= :now "
        "AND status IN ('failed', 'timed_out', 'abandoned') AND error IS NOT NULL "
        "GROUP BY job, error ORDER BY COUNT(*) DESC, MAX(finished_at) DESC"),
    note="Failed runs in the window, grouped by job and error text.",
    empty="No failed runs in the window.", limit=10)


for _section in (FRESHNESS, RUNS, GAPS, COVERAGE, ERRORS):
    register_section(_section, builtin=True)
