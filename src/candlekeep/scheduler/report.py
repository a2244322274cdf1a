"""What ``list`` and ``status`` show, from the read model (readmodel.py) and the triggers.

Plain dicts out, so the CLI renders them as Rich tables or JSON alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from candlekeep.core.timeframes import parse_timeframe
from candlekeep.core.timeutil import fmt_duration, fmt_ms
from candlekeep.scheduler.describe import describe
from candlekeep.scheduler.spec import JobSpec
from candlekeep.state.reader import Reader

if TYPE_CHECKING:
    from candlekeep.jobs.runtime import Runtime

DAY_MS = 86_400_000
FAILING = ("failed", "timed_out", "abandoned")


def relative(ts_ms: int | None, now_ms: int) -> str:
    if ts_ms is None:
        return "-"
    d = ts_ms - now_ms
    return f"in {fmt_duration(d)}" if d >= 0 else f"{fmt_duration(-d)} ago"


def job_overview(specs: Sequence[JobSpec], reader: Reader,
                 now_ms: int) -> list[dict[str, Any]]:
    names = [s.name for s in specs]
    last = reader.last_runs(names)
    rates = reader.success_rates(names, now_ms - 7 * DAY_MS)
    rows = reader.job_rows()
    out = []
    for s in specs:
        trig = s.trigger
        nxt = trig.next_after(now_ms) if trig is not None and s.enabled else None
        r = last.get(s.name)
        ok, done = rates.get(s.name, (0, 0))
        duration = (r.finished_at - r.started_at
                    if r is not None and r.finished_at and r.started_at else None)
        jr = rows.get(s.name)
        known = jr is not None and jr.spec_hash is not None
        out.append({
            "name": s.name, "type": s.type, "schedule": trig.expr if trig else None,
            "timezone": trig.timezone if trig else None,
            "schedule_words": describe(trig.expr, trig.timezone) if trig else "manual only",
            "enabled": s.enabled, "next_run": nxt, "next_run_utc": fmt_ms(nxt) if nxt else None,
            "next_run_relative": relative(nxt, now_ms) if nxt else None,
            "last_status": r.status if r is not None else None,
            "last_scheduled_for": r.scheduled_for if r is not None else None,
            "last_duration_ms": duration,
            "success_rate_7d": (ok / done) if done else None, "runs_7d": done,
            "description": s.description,
            "spec_matches": (jr.spec_hash == s.digest) if known and jr else None,
            "spec_set_by": jr.spec_by if jr is not None else None,
            "spec_set_at": jr.spec_at if jr is not None else None,
        })
    return out


def live_nodes(reader: Reader, now_ms: int) -> list[dict[str, Any]]:
    return [{"node": n.node, "host": n.host, "pid": n.pid, "instance": n.instance,
             "status": n.status, "alive": n.alive(now_ms), "started_at": n.started_at,
             "heartbeat_at": n.heartbeat_at, "skew_ms": n.skew_ms,
             "conflicts": list(n.conflicts)} for n in reader.nodes()]


def stale_series(runtime: Runtime, now_ms: int) -> int | None:
    """Configured open-ended series more than two candles behind; None when unknown.

    It reads every store (DuckDB and all), so ``status`` shows it and ``list``, which must
    answer at once, does not."""
    try:
        plans = [p for p in runtime.plans() if p.end_ms is None]
        latest: dict[Any, int] = {}
        for store_name in {p.store for p in plans}:
            for span in runtime.store(store_name).spans():
                latest[span.series] = span.last_ms
    except Exception:
        return None
    stale = 0
    for p in plans:
        tf = parse_timeframe(p.key.timeframe)
        last = latest.get(p.key)
        if last is None or tf.last_closed_open(now_ms) - last > 2 * tf.ms:
            stale += 1
    return stale


def health(reader: Reader, overview: Sequence[dict[str, Any]], daemon_up: bool,
           now_ms: int) -> dict[str, Any]:
    nodes = live_nodes(reader, now_ms)
    try:
        open_gaps: int | None = reader.open_gaps()
    except Exception:
        open_gaps = None
    return {
        "daemon_up": daemon_up or any(n["alive"] for n in nodes),
        "daemon_local": daemon_up,
        "live_nodes": [n["node"] for n in nodes if n["alive"]],
        "state_db_ms": round(reader.ping_ms(), 2),
        "failing_jobs": [o["name"] for o in overview if o["last_status"] in FAILING],
        "open_gaps": open_gaps,
        "disagreements": [{"node": n["node"], "jobs": n["conflicts"]} for n in nodes
                          if n["alive"] and n["conflicts"]],
        "config_differs": [o["name"] for o in overview if o["spec_matches"] is False],
    }
