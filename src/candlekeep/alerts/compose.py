"""The words of each alert: one function per rule and state, from what the run path and the
state DB know. Titles name the job or series and what happened; bodies carry the error
(truncated), run, node, time in UTC and where to look next."""

from __future__ import annotations

import ipaddress
import shlex
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from candlekeep.alerts.message import AlertState, Message, RuleKind, Subject
from candlekeep.config.ops import ApiConfig
from candlekeep.core.text import clean_text
from candlekeep.core.timeutil import fmt_duration, fmt_ms
from candlekeep.queries.providers import ProviderView
from candlekeep.state.rows import FreshnessRow, GapRow
from candlekeep.state.statuses import FreshnessStatus, RunStatus

ERROR_CHARS = 1500
"""An error longer than this is cut: a stack of nested causes helps nobody in a chat."""

_ENDED = {RunStatus.FAILED: "failed", RunStatus.TIMED_OUT: "timed out",
          RunStatus.ABANDONED: "was abandoned"}


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What a job alert says about the run that raised or cleared it."""

    job: str
    status: RunStatus
    run_id: int | None
    attempts: int
    error: str | None
    finished_at: int
    node: str


@dataclass(frozen=True, slots=True)
class Where:
    """Where people look next: the dashboard, when the config serves one."""

    dashboard: str | None = None

    @classmethod
    def serving(cls, api: ApiConfig | None) -> Where:
        """The dashboard's address for a reader elsewhere: a wildcard bind (0.0.0.0, ::)
        is no address to browse to, so this machine's name stands for it; no ``api:``,
        no dashboard."""
        if api is None:
            return cls()
        try:
            wildcard = ipaddress.ip_address(api.host).is_unspecified
        except ValueError:
            wildcard = False  # a host name
        return cls(f"http://{socket.getfqdn()}:{api.port}/" if wildcard
                   else f"http://{api.listen}/")

    def hint(self, command: str) -> str:
        more = f"; dashboard: {self.dashboard}" if self.dashboard else ""
        return f"More: {command}{more}"


def job_key(rule: RuleKind, job: str, count: int | None = None) -> str:
    """``job_failed:JOB``; ``consecutive_failures:N:JOB`` (two rules with other counts are
    other alerts)."""
    return f"{rule}:{job}" if count is None else f"{rule}:{count}:{job}"


def _run_subject(key: str, run: RunFacts) -> Subject:
    return Subject(key, {"job": run.job, "status": run.status.value, "run_id": run.run_id,
                         "attempts": run.attempts, "node": run.node,
                         "error": clean_text(run.error, ERROR_CHARS)})


def _run_facts(run: RunFacts) -> tuple[tuple[str, str], ...]:
    return (("Job", run.job), ("Run", f"{run.run_id} (attempt {run.attempts})"),
            ("Node", run.node), ("Time", f"{fmt_ms(run.finished_at)} UTC"))


def _history(job: str) -> str:
    return f"candlekeep history {shlex.quote(job)}"


def job_failed(run: RunFacts, where: Where) -> Message:
    ended = _ENDED.get(run.status, str(run.status))
    tries = f" after {run.attempts} attempts" if run.attempts > 1 else ""
    return Message(
        RuleKind.JOB_FAILED, AlertState.FIRING, f"job {run.job} {ended}{tries}",
        f"Job {run.job} {ended}{tries} on node {run.node} at "
        f"{fmt_ms(run.finished_at)} UTC.",
        (_run_subject(job_key(RuleKind.JOB_FAILED, run.job), run),), run.finished_at,
        run.node, clean_text(run.error, ERROR_CHARS), _run_facts(run),
        where.hint(_history(run.job)))


def consecutive_failures(run: RunFacts, count: int, where: Where) -> Message:
    ended = _ENDED.get(run.status, str(run.status))
    return Message(
        RuleKind.CONSECUTIVE_FAILURES, AlertState.FIRING,
        f"job {run.job} failed {count} times in a row",
        f"The last {count} runs of job {run.job} failed; the latest {ended} on node "
        f"{run.node} at {fmt_ms(run.finished_at)} UTC.",
        (_run_subject(job_key(RuleKind.CONSECUTIVE_FAILURES, run.job, count), run),),
        run.finished_at, run.node, clean_text(run.error, ERROR_CHARS), _run_facts(run),
        where.hint(_history(run.job)))


def job_recovered(rule: RuleKind, key: str, run: RunFacts, since: int | None,
                  where: Where) -> Message:
    failing = f", failing since {fmt_ms(since)} UTC" if since is not None else ""
    what = "failures" if rule is RuleKind.JOB_FAILED else "failures in a row"
    return Message(
        rule, AlertState.RESOLVED, f"job {run.job} recovered",
        f"Job {run.job} succeeded again on node {run.node} at "
        f"{fmt_ms(run.finished_at)} UTC after {what}{failing}.",
        (_run_subject(key, run),), run.finished_at, run.node, None, _run_facts(run),
        where.hint(_history(run.job)))


# -- freshness ------------------------------------------------------------------------------


def freshness_key(row: FreshnessRow) -> str:
    """``freshness:STORE:SUBJECT`` (a series' subject is ``source:symbol:timeframe``)."""
    return f"freshness:{row.store}:{row.subject}"


_SAYS = {FreshnessStatus.OK: "ok", FreshnessStatus.STALE: "stale",
         FreshnessStatus.MISSING: "missing", FreshnessStatus.ERROR: "unreadable"}
"""A verdict as a message words it: an error verdict is a store that could not be read."""


def _says(row: FreshnessRow) -> str:
    return _SAYS[FreshnessStatus(row.status)]


def _freshness_line(row: FreshnessRow) -> str:
    if row.newest_ms is not None:
        newest = f"newest {fmt_ms(row.newest_ms)} UTC"
    else:
        newest = "newest unknown" if row.status == FreshnessStatus.ERROR else "no data"
    age = f", age {fmt_duration(row.age_ms)}" if row.age_ms is not None else ""
    allowed = f", allowed {fmt_duration(row.threshold_ms)}"
    detail = f" ({row.detail})" if row.detail and row.status != FreshnessStatus.STALE else ""
    return f"{row.store} {row.kind} {row.subject}: {_says(row).upper()}, {newest}{age}" \
        f"{allowed}{detail}"


def _either(rows: Sequence[FreshnessRow]) -> str:
    """``stale``, ``stale or missing``, ``stale, missing or unreadable``."""
    words = [w for w in _SAYS.values() if w in {_says(r) for r in rows}]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _freshness_subject(row: FreshnessRow) -> Subject:
    return Subject(freshness_key(row), {
        "kind": row.kind, "store": row.store, "subject": row.subject, "status": row.status,
        "newest_ms": row.newest_ms, "age_ms": row.age_ms, "threshold_ms": row.threshold_ms,
        "status_since": row.status_since, "detail": row.detail}, _freshness_line(row))


def freshness(rows: Sequence[FreshnessRow], state: AlertState, job: str, node: str,
              now_ms: int, where: Where) -> Message:
    firing = state is AlertState.FIRING
    if len(rows) == 1:
        r = rows[0]
        title = (f"{r.kind} {r.subject} in {r.store} is {_says(r)}" if firing
                 else f"{r.kind} {r.subject} in {r.store} is fresh again")
    else:
        title = (f"{len(rows)} series or datasets are {_either(rows)}" if firing
                 else f"{len(rows)} series or datasets are fresh again")
    summary = (f"The freshness check (job {job}, node {node}) at {fmt_ms(now_ms)} UTC found "
               + (f"data that is {_either(rows)}:" if firing else "these current again:"))
    return Message(RuleKind.FRESHNESS, state, title, summary,
                   tuple(_freshness_subject(r) for r in rows), now_ms, node,
                   hint=where.hint("candlekeep freshness"))


# -- gaps -------------------------------------------------------------------------------------


def gap_key(gap: GapRow) -> str:
    s = gap.series
    return f"gap_failed:{s.source}:{s.symbol}:{s.timeframe}:{gap.gap_start}"


def _gap_subject(gap: GapRow) -> Subject:
    s = gap.series
    error = clean_text(gap.last_error, 300)
    line = (f"{s.source} {s.symbol} {s.timeframe}: {fmt_ms(gap.gap_start)} → "
            f"{fmt_ms(gap.gap_end)} UTC, {gap.attempts} attempts"
            + (f"; last error: {error}" if error else ""))
    return Subject(gap_key(gap), {
        "source": s.source, "symbol": s.symbol, "timeframe": s.timeframe,
        "gap_start": gap.gap_start, "gap_end": gap.gap_end, "attempts": gap.attempts,
        "last_error": error}, line)


def gaps_failed(gaps: Sequence[GapRow], job: str, node: str, now_ms: int,
                where: Where) -> Message:
    n = len(gaps)
    title = f"{n} gap{'s' if n != 1 else ''} could not be repaired"
    summary = (f"Job {job} on node {node} gave up on {'these gaps' if n != 1 else 'this gap'}"
               f" at {fmt_ms(now_ms)} UTC (status failed):")
    return Message(RuleKind.GAP_FAILED, AlertState.FIRING, title, summary,
                   tuple(_gap_subject(g) for g in gaps), now_ms, node,
                   hint=where.hint("candlekeep gaps list --status failed"))


# -- providers --------------------------------------------------------------------------------


def provider_key(view: ProviderView) -> str:
    return f"provider_degraded:{view.source}"


def _provider_subject(v: ProviderView) -> Subject:
    why = "; ".join(v.reasons) or f"score {v.score:.2f}"
    line = (f"{v.source} ({v.type}): {v.status.upper()}, circuit {v.circuit}, {why}"
            if v.unwell else f"{v.source} ({v.type}): up again, score {v.score:.2f}")
    return Subject(provider_key(v), {
        "source": v.source, "type": v.type, "status": v.status.value,
        "circuit": v.circuit.value, "reasons": "; ".join(v.reasons) or None,
        "checked_at": v.checked_at, "node": v.node}, line)


def providers(views: Sequence[ProviderView], state: AlertState, job: str, node: str,
              now_ms: int, where: Where) -> Message:
    firing = state is AlertState.FIRING
    if len(views) == 1:
        v = views[0]
        title = f"provider {v.source} is {v.status}" if firing else \
            f"provider {v.source} is up again"
    else:
        title = (f"{len(views)} providers are degraded or down" if firing
                 else f"{len(views)} providers are up again")
    summary = (f"The providers health check (job {job}, node {node}) at {fmt_ms(now_ms)} UTC "
               + ("found:" if firing else "found these up again:"))
    return Message(RuleKind.PROVIDER_DEGRADED, state, title, summary,
                   tuple(_provider_subject(v) for v in views), now_ms, node,
                   hint=where.hint("candlekeep providers"))


@dataclass(frozen=True, slots=True)
class PremoveHit:
    """A symbol a pre-movement scan alerted on (or, resolving, no longer does)."""

    universe: str
    symbol: str
    score: float | None
    folder: str | None
    """The run's artifacts (premove.csv, explain.json say which gates passed)."""
    needed: int | None = None
    """Gates of three an alert needs (``scans.premove.needed``; None from an older run)."""


def premove_key(hit: PremoveHit) -> str:
    return f"premove:{hit.universe}:{hit.symbol}"


def premove(hits: Sequence[PremoveHit], state: AlertState, job: str, node: str,
            now_ms: int, where: Where) -> Message:
    firing = state is AlertState.FIRING
    names = ", ".join(h.symbol for h in hits)
    title = (f"pre-movement alert: {names}" if firing
             else f"pre-movement alert over: {names}")
    needed = hits[0].needed if hits else None
    passing = ("the pre-movement gates passing" if needed is None
               else f"at least {needed} of 3 gates passing")
    summary = (f"The pre-movement scan (job {job}, node {node}) at {fmt_ms(now_ms)} UTC "
               + (f"found {passing} for:" if firing else "no longer alerts on:"))

    def subject(h: PremoveHit) -> Subject:
        score = "not scored" if h.score is None else f"score {h.score:.1f}"
        where_ = f"; see {h.folder}" if h.folder else ""
        return Subject(premove_key(h), {
            "universe": h.universe, "symbol": h.symbol,
            "score": None if h.score is None else f"{h.score:.2f}", "artifacts": h.folder},
                       f"{h.symbol} ({h.universe}): {score}{where_}")

    return Message(RuleKind.PREMOVE, state, title, summary,
                   tuple(subject(h) for h in hits), now_ms, node,
                   hint=where.hint("candlekeep scan run premove"))

