"""What to do with the ticks of one job that are due now: the misfire policy, as a pure function.

Called inside the claim transaction with the job's last accounted tick read under its lock,
so every node reaches the same decision and only one of them carries it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

from candlekeep.core.timeutil import fmt_duration, fmt_ms
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.triggers import CronTrigger


@dataclass(slots=True)
class Decision:
    run: list[int] = field(default_factory=list)
    """Ticks to claim now, oldest first."""
    skip: list[tuple[int, str]] = field(default_factory=list)
    """Ticks to record as ``skipped`` (at most ``max_rows``), with the reason."""
    skipped_total: int = 0
    """All ticks given up, including those beyond the recorded rows."""
    last_tick: int = 0
    """The new accounted-through tick."""
    pending: bool = False
    """Due ticks remain that wait for a free slot (``max_concurrent`` reached)."""


DISABLED = "skipped: the job is disabled"


def decide(spec: JobSpec, last_tick: int, now_ms: int, free_slots: int,
           max_rows: int = 1000) -> Decision:
    trigger = spec.trigger
    assert trigger is not None, "only scheduled jobs are claimed"
    grace = spec.effective_grace_ms
    # Late means older than the grace: ticks at or before ``cutoff``.
    cutoff = None if grace is None else now_ms - grace - 1
    d = Decision(last_tick=last_tick)

    first = trigger.next_after(last_tick)
    if first > now_ms:
        return d
    if not spec.enabled:
        # Recorded under the claim lock like any other tick, so history and SLOs see it.
        latest = trigger.last_between(last_tick, now_ms)
        assert latest is not None, "first is due"
        _record(d, trigger, last_tick, latest, max_rows, lambda _t: DISABLED)
        d.last_tick = latest
        return d
    if trigger.next_after(first) > now_ms:
        # The common case: exactly one tick due.
        if cutoff is not None and first <= cutoff:
            d.skip.append((first, _late_reason(now_ms - first, grace)))
            d.skipped_total = 1
            d.last_tick = first
        elif free_slots > 0:
            d.run.append(first)
            d.last_tick = first
        else:
            d.pending = True
        return d

    acc = last_tick
    if cutoff is not None and cutoff > acc:
        late_last = trigger.last_between(acc, cutoff)
        if late_last is not None:
            _record(d, trigger, acc, late_last, max_rows,
                    lambda t: _late_reason(now_ms - t, grace))
            acc = late_last
            d.last_tick = acc
    latest = trigger.last_between(acc, now_ms)
    if latest is None:
        return d
    if free_slots <= 0:
        d.pending = True
        return d
    if spec.misfire == "catch_up":
        d.run = list(islice(trigger.ticks(acc, now_ms), free_slots))
        d.last_tick = d.run[-1]
        d.pending = d.last_tick < latest
        return d
    # coalesce and skip: one run, for the latest tick; the earlier ones fold into it.
    before_latest = trigger.last_between(acc, latest - 1)
    if before_latest is not None:
        if spec.misfire == "coalesce":
            reason = f"coalesced into the run for {fmt_ms(latest)}"
        else:
            reason = f"superseded by the tick at {fmt_ms(latest)} (misfire: skip)"
        _record(d, trigger, acc, before_latest, max_rows, lambda _t: reason)
    d.run.append(latest)
    d.last_tick = latest
    return d


def _record(d: Decision, trigger: CronTrigger, after: int, until: int, max_rows: int,
            reason: Callable[[int], str]) -> None:
    """Skip the ticks in ``(after, until]``: rows for the first ones, a count for the rest."""
    room = max(0, max_rows - len(d.skip))
    rows = [(t, reason(t)) for t in islice(trigger.ticks(after, until), room)]
    total = len(rows) if len(rows) < room else trigger.count_between(after, until)
    more = total - len(rows)
    if more > 0:
        note = f"; {more} more ticks up to {fmt_ms(until)} skipped too (not listed)"
        target = rows if rows else d.skip
        if target:
            t, why = target[-1]
            target[-1] = (t, why + note)
    d.skip.extend(rows)
    d.skipped_total += total


def _late_reason(late_ms: int, grace_ms: int | None) -> str:
    g = "" if grace_ms is None else f" (misfire_grace {fmt_duration(grace_ms)})"
    return f"missed: {fmt_duration(late_ms)} late{g}"
