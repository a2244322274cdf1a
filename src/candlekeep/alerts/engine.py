"""The alert engine: told about every ended run by the run path (``RunHost`` observers), it
pings heartbeats, evaluates the rules (``alerts.rules``), claims each message in
``alert_state`` and delivers it to the rule's channels.

It never raises into the run path and never fails a job: a channel that fails is logged
(by name: URLs and passwords are secrets) and, when no channel delivered (or may have),
its claim released so the next evaluation tries again. Every channel is bounded by its
timeout and all are sent concurrently; the state DB is reached in threads.

Rules that watch the same thing share one alert: two ``job_failed`` rules for a job send
one message to the union of their channels, at most once per the shorter
``repeat_every``. ``consecutive_failures`` rules with another ``count`` are other alerts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from candlekeep.alerts import channels, claims, compose, reads
from candlekeep.alerts.compose import RunFacts, Where
from candlekeep.alerts.message import AlertState, Message, RuleKind
from candlekeep.config.models import Config
from candlekeep.config.ops import AlertRule, HeartbeatChannel
from candlekeep.core.clock import Clock
from candlekeep.core.timeutil import fmt_ms
from candlekeep.state.statuses import FRESHNESS_ALERTING, FreshnessStatus, RunStatus

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from candlekeep.jobs.runtime import Runtime
    from candlekeep.scheduler.runpath import RunOutcome
    from candlekeep.scheduler.spec import JobSpec
    from candlekeep.state.db import StateDB
    from candlekeep.state.rows import FreshnessRow

log = logging.getLogger("candlekeep.alerts")

T = TypeVar("T")

FRESHNESS_JOB = "freshness"
GAPS_REPAIR_JOB = "gaps_repair"
PROVIDERS_JOB = "providers_health"
SCAN_JOB = "scan"
_ALERTING = {s.value for s in FRESHNESS_ALERTING}


class Delivery(Enum):
    SENT = "sent"
    FAILED = "failed"
    MAYBE = "maybe"
    """Failed after the message went out: it may have arrived, so it is not sent again."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where one alert goes, merged over the rules that raise it."""

    channels: tuple[str, ...]
    repeat_ms: int


class AlertEngine:
    def __init__(self, config: Config, state: Callable[[], StateDB], clock: Clock,
                 node: str) -> None:
        """``state`` opens the state DB on first use (in a thread)."""
        self.config = config
        self.alerts = config.alerts
        self._state = state
        self.clock = clock
        self.node = node
        self.where = Where.serving(config.api)

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> AlertEngine:
        return cls(runtime.config, lambda: runtime.state, runtime.clock, runtime.node)

    # -- the observer ------------------------------------------------------------------

    async def after_run(self, outcome: RunOutcome, spec: JobSpec) -> None:
        """Everything the alerts have to do about one ended run; never raises."""
        await _all(f"job={spec.name} run_id={outcome.run_id}",
                   self._heartbeats(outcome, spec), self._evaluate(outcome, spec))

    async def _evaluate(self, outcome: RunOutcome, spec: JobSpec) -> None:
        if outcome.run_id is None:
            return  # a dry run
        work: list[Awaitable[None]] = []
        status = outcome.status
        if status is RunStatus.SUCCESS or status in reads.FAILING:
            if outcome.recorded:
                work.append(self._job_rules(outcome, spec))
            else:  # the cluster decides how it ends (a retry elsewhere, or the sweep)
                log.info("alerts: run not recorded as ours, not judged job=%s run_id=%s",
                         spec.name, outcome.run_id)
        if spec.type == FRESHNESS_JOB and self._rules(RuleKind.FRESHNESS, spec.name):
            work.append(self._freshness(spec))
        if spec.type == GAPS_REPAIR_JOB and self._rules(RuleKind.GAP_FAILED, spec.name):
            work.append(self._gaps(spec))
        if spec.type == PROVIDERS_JOB and self._rules(RuleKind.PROVIDER_DEGRADED, spec.name):
            work.append(self._providers(spec))
        premove = outcome.result.details.get("premove") if outcome.result else None
        if spec.type == SCAN_JOB and premove and self._rules(RuleKind.PREMOVE, spec.name):
            work.append(self._premove(spec, premove))
        await _all(f"job={spec.name}", *work)

    # -- rules --------------------------------------------------------------------------

    def _rules(self, kind: RuleKind, job: str) -> list[AlertRule]:
        return [r for r in self.alerts.rules
                if r.on == kind.value and (r.jobs is None or job in r.jobs)]

    def _route(self, rules: Sequence[AlertRule]) -> Route:
        names = tuple(dict.fromkeys(ch for r in rules for ch in r.channels))
        repeat = min(r.repeat_every if r.repeat_every is not None else self.alerts.repeat_every
                     for r in rules)
        return Route(names, int(repeat * 1000))

    async def _job_rules(self, outcome: RunOutcome, spec: JobSpec) -> None:
        run = RunFacts(spec.name, outcome.status, outcome.run_id, outcome.attempts,
                       outcome.error, outcome.finished_at, self.node)
        failed_rules = self._rules(RuleKind.JOB_FAILED, spec.name)
        streak_rules: dict[int, list[AlertRule]] = {}
        for r in self._rules(RuleKind.CONSECUTIVE_FAILURES, spec.name):
            streak_rules.setdefault(r.count, []).append(r)
        if not failed_rules and not streak_rules:
            return
        sends: list[Awaitable[None]] = []
        if outcome.status is RunStatus.SUCCESS:
            if failed_rules:
                key = compose.job_key(RuleKind.JOB_FAILED, spec.name)
                sends.append(self._recover(RuleKind.JOB_FAILED, key, run, failed_rules))
            for count, rules in streak_rules.items():
                key = compose.job_key(RuleKind.CONSECUTIVE_FAILURES, spec.name, count)
                sends.append(self._recover(RuleKind.CONSECUTIVE_FAILURES, key, run, rules))
            await _all(f"job={spec.name}", *sends)
            return
        if failed_rules:
            sends.append(self._fire(compose.job_failed(run, self.where),
                                    self._route(failed_rules)))
        if streak_rules:
            assert outcome.run_id is not None
            earlier = await self._db(reads.earlier_ticks, spec.name, outcome.run_id,
                                     max(streak_rules) - 1)
            for count, rules in streak_rules.items():
                before = earlier[:count - 1]
                if len(before) == count - 1 and all(s in reads.FAILING for s in before):
                    sends.append(self._fire(compose.consecutive_failures(run, count, self.where),
                                            self._route(rules)))
        await _all(f"job={spec.name}", *sends)

    async def _recover(self, rule: RuleKind, key: str, run: RunFacts,
                       rules: Sequence[AlertRule]) -> None:
        now = self.clock.now_ms()
        announced = await self._db(claims.resolve, [key], now)
        if key in announced:
            message = compose.job_recovered(rule, key, run, announced[key], self.where)
            await self._send(message, self._route(rules), _unresolve([key], now))

    async def _freshness(self, spec: JobSpec) -> None:
        route = self._route(self._rules(RuleKind.FRESHNESS, spec.name))
        rows: list[FreshnessRow] = await self._db(reads.freshness_rows)
        bad = {compose.freshness_key(r): r for r in rows if r.status in _ALERTING}
        ok = {compose.freshness_key(r): r for r in rows if r.status == FreshnessStatus.OK}
        details = {k: f"{r.status} since {fmt_ms(r.status_since)}" for k, r in bad.items()}
        await self._fire_and_resolve(RuleKind.FRESHNESS, route, spec, bad, ok, details,
                                     compose.freshness)

    async def _gaps(self, spec: JobSpec) -> None:
        route = self._route(self._rules(RuleKind.GAP_FAILED, spec.name))
        gaps = await asyncio.to_thread(lambda: self._state().list_gaps("failed"))
        if not gaps:
            return
        now = self.clock.now_ms()
        by_key = {compose.gap_key(g): g for g in gaps}
        details = {k: (g.last_error or "")[:500] or None for k, g in by_key.items()}
        claimed = await self._db(claims.fire, RuleKind.GAP_FAILED.value, details, now, None)
        if claimed:
            message = compose.gaps_failed([by_key[c.key] for c in claimed], spec.name,
                                          self.node, now, self.where)
            await self._send(message, route, _unfire(claimed))

    async def _providers(self, spec: JobSpec) -> None:
        """Sources found degraded or down fire (one message, repeats per the route);
        those up again that had fired are announced once."""
        route = self._route(self._rules(RuleKind.PROVIDER_DEGRADED, spec.name))
        views = await self._db(reads.provider_views)
        bad = {compose.provider_key(v): v for v in views if v.unwell}
        up = {compose.provider_key(v): v for v in views if not v.unwell}
        details = {k: f"{v.status}: {'; '.join(v.reasons)}"[:500] for k, v in bad.items()}
        await self._fire_and_resolve(RuleKind.PROVIDER_DEGRADED, route, spec, bad, up,
                                     details, compose.providers)

    async def _premove(self, spec: JobSpec, found: dict[str, Any]) -> None:
        """Symbols a pre-movement scan alerts on fire (per symbol, repeats per the route);
        those it alerted on before and no longer does are announced once. ``found`` is
        the run's ``premove`` detail (what it scored, not what a later run did)."""
        route = self._route(self._rules(RuleKind.PREMOVE, spec.name))

        def hit(row: dict[str, Any]) -> compose.PremoveHit:
            return compose.PremoveHit(found["universe"], row["symbol"], row.get("score"),
                                      found.get("folder"), found.get("needed"))

        bad = {compose.premove_key(h): h for h in map(hit, found["alert"])}
        quiet = {compose.premove_key(h): h for h in map(hit, found["quiet"])}
        details = {k: f"score {h.score}" for k, h in bad.items()}
        await self._fire_and_resolve(RuleKind.PREMOVE, route, spec, bad, quiet, details,
                                     compose.premove)

    async def _fire_and_resolve(self, kind: RuleKind, route: Route, spec: JobSpec,
                                bad: dict[str, T], well: dict[str, T],
                                details: Mapping[str, str | None],
                                message_of: Callable[..., Message]) -> None:
        """One state-like rule's round: claim and send what is bad (once per the route's
        repeat, across nodes), and announce once what had fired and is well again."""
        now = self.clock.now_ms()
        firing = await self._db(claims.firing, kind.value)
        sends: list[Awaitable[None]] = []
        if bad:
            claimed = await self._db(claims.fire, kind.value, details, now, route.repeat_ms)
            if claimed:
                message = message_of([bad[c.key] for c in claimed], AlertState.FIRING,
                                     spec.name, self.node, now, self.where)
                sends.append(self._send(message, route, _unfire(claimed)))
        recovered = firing & well.keys()
        if recovered:
            announced = await self._db(claims.resolve, recovered, now)
            if announced:
                message = message_of([well[k] for k in sorted(announced)],
                                     AlertState.RESOLVED, spec.name, self.node, now,
                                     self.where)
                sends.append(self._send(message, route, _unresolve(sorted(announced), now)))
        await _all(f"job={spec.name}", *sends)

    # -- claims and delivery ------------------------------------------------------------

    async def _fire(self, message: Message, route: Route) -> None:
        now = self.clock.now_ms()
        details = {s.key: message.title for s in message.subjects}
        claimed = await self._db(claims.fire, message.rule.value, details, now,
                                 route.repeat_ms)
        if claimed:
            await self._send(message, route, _unfire(claimed))
        else:
            log.info("alert suppressed (sent within repeat_every) rule=%s keys=%s",
                     message.rule, ",".join(message.keys))

    async def _send(self, message: Message, route: Route,
                    release: Callable[[Engine], None]) -> None:
        """Deliver to every channel of the route at once; when none delivered nor may
        have, ``release`` the claims so the next evaluation tries again."""
        results = await asyncio.gather(*(self._deliver(name, message) for name in route.channels))
        if all(r is Delivery.FAILED for r in results):
            await self._db(release)

    async def _deliver(self, name: str, message: Message) -> Delivery:
        channel = self.alerts.channels.get(name)
        try:
            if channel is None:
                raise channels.ChannelError(f"channel {name!r} is not configured")
            await channels.deliver(name, channel, message, self.config.smtp)
        except Exception as exc:  # ChannelError is safe to show; anything else is a bug
            maybe = isinstance(exc, channels.ChannelError) and exc.maybe_delivered
            log.warning("alert not delivered%s channel=%s rule=%s state=%s keys=%s error=%s",
                        " (maybe it was: counted as sent)" if maybe else "", name,
                        message.rule, message.state, ",".join(message.keys), _safe(exc))
            return Delivery.MAYBE if maybe else Delivery.FAILED
        log.info("alert sent channel=%s rule=%s state=%s keys=%s", name, message.rule,
                 message.state, ",".join(message.keys))
        return Delivery.SENT

    async def _heartbeats(self, outcome: RunOutcome, spec: JobSpec) -> None:
        ok = outcome.status is RunStatus.SUCCESS
        if not ok and (outcome.status not in reads.FAILING or not outcome.recorded):
            return  # a retry on its way (here or elsewhere), a cancelled or skipped run
        line = (f"job {spec.name} {outcome.status} run {outcome.run_id} node {self.node} "
                f"attempts {outcome.attempts}" + (f": {outcome.error}" if outcome.error else ""))
        pings = [(name, ch) for name, ch in self.alerts.channels.items()
                 if isinstance(ch, HeartbeatChannel) and spec.name in ch.jobs]
        await asyncio.gather(*(self._ping(name, ch, ok, line) for name, ch in pings))

    async def _ping(self, name: str, channel: HeartbeatChannel, ok: bool, line: str) -> None:
        try:
            await channels.ping(name, channel, ok, line[:2000])
        except Exception as exc:
            log.warning("heartbeat not delivered channel=%s ok=%s error=%s", name, ok,
                        _safe(exc))

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(state engine, *args)`` in a thread (opening the state DB, the first time,
        blocks too)."""
        return await asyncio.to_thread(lambda: fn(self._state().engine, *args))


def _unfire(claimed: list[claims.Claim]) -> Callable[[Engine], None]:
    return lambda engine: claims.release_fire(engine, claimed)


def _unresolve(keys: list[str], now_ms: int) -> Callable[[Engine], None]:
    return lambda engine: claims.release_resolve(engine, keys, now_ms)


async def _all(what: str, *work: Awaitable[None]) -> None:
    """Await every piece; one that fails (a bug, the state DB down) is logged and the
    others still finish: nothing here may fail a run."""
    for result in await asyncio.gather(*work, return_exceptions=True):
        if isinstance(result, Exception):
            log.error("alert evaluation failed %s error=%s: %s", what,
                      type(result).__name__, result)
            log.debug("alert evaluation failure", exc_info=result)


def _safe(exc: Exception) -> str:
    """A channel's own error as it is (written to be logged); of anything else only its
    type, since its text might hold a URL."""
    return str(exc) if isinstance(exc, channels.ChannelError) else type(exc).__name__
