"""Scheduler commands: start, stop, status, list (jobs), run, history, prune, install
(``slo`` is in slo_cmds).

Only light modules are imported here; each command imports what it uses (the engine,
the state DB, the job types) so that ``--help`` and ``list`` start in a blink.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from candlekeep.cli import common
from candlekeep.cli.common import console, friendly_errors, print_json
from candlekeep.core.errors import CandlekeepError
from candlekeep.core.timeutil import fmt_duration, fmt_ms, parse_duration
from candlekeep.scheduler import control as d
from candlekeep.state.statuses import RunStatus, Trigger

if TYPE_CHECKING:
    from candlekeep.config.models import Config
    from candlekeep.jobs.runtime import Runtime
    from candlekeep.scheduler.retention import Retention
    from candlekeep.scheduler.runpath import RunOutcome
    from candlekeep.scheduler.spec import JobSpec
    from candlekeep.scheduler.store import SchedulerStore
    from candlekeep.state.reader import Reader


def _runtime(cfg: Config) -> Runtime:
    from candlekeep.jobs.runtime import Runtime

    return Runtime(cfg)


@contextlib.contextmanager
def _reader(cfg: Config) -> Iterator[Reader]:
    """The read model straight on the state DB's driver (see ``state.reader.reading``)."""
    from candlekeep.state.reader import reading

    with reading(cfg.state_url, cfg.data_dir) as reader:
        yield reader


def _store(rt: Runtime) -> SchedulerStore:
    """A read-only scheduler store (listings and reports)."""
    from candlekeep.scheduler.store import SchedulerStore

    return SchedulerStore(rt.state)


_STATUS_STYLE = {"success": "green", "failed": "red", "timed_out": "red", "abandoned": "red",
                 "running": "cyan", "waiting": "cyan", "skipped": "yellow",
                 "cancelled": "yellow"}


class Target(StrEnum):
    systemd = "systemd"
    launchd = "launchd"
    crontab = "crontab"


def _seconds(value: str, flag: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from None


def _styled(status: str | None) -> str:
    if status is None:
        return "-"
    style = _STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def _ms(value: int | None) -> str:
    return "-" if value is None else fmt_duration(value)


def _now() -> int:
    return int(time.time() * 1000)


def _load(ctx: typer.Context) -> tuple[Config, list[JobSpec]]:
    from candlekeep.scheduler.validate import load_jobs

    cfg = common.state(ctx).config()
    return cfg, load_jobs(cfg)


def _retention(cfg: Config) -> Retention:
    from candlekeep.scheduler.retention import Retention

    r = cfg.retention

    def ms(seconds: float | None) -> int | None:
        return None if seconds is None else int(seconds * 1000)

    return Retention(ms(r.runs), ms(r.skipped), ms(r.nodes))


def _spec(specs: list[JobSpec], name: str) -> JobSpec:
    for s in specs:
        if s.name == name:
            return s
    known = ", ".join(s.name for s in specs) or "none configured"
    raise CandlekeepError(f"unknown job {name!r}; jobs: {known}")


def _state_argv(ctx: typer.Context) -> list[str]:
    st = common.state(ctx)
    cfg = st.config()
    argv = ["--config", str(Path(cfg.config_path).resolve())] if cfg.config_path else []
    if st.log_json:
        argv.append("--log-json")
    argv += ["-v"] * st.verbose
    return argv


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def start(
        ctx: typer.Context,
        detach: bool = typer.Option(False, "--detach", help="Run in the background (PID and "
                                    "log files under data_dir)."),
        stop_timeout: str = typer.Option("60s", "--stop-timeout", help="On SIGTERM/Ctrl-C, "
                                         "how long running jobs get before being cancelled."),
        heartbeat: str = typer.Option("5s", "--heartbeat", hidden=True,
                                      help="Heartbeat interval (lease is 3x)."),
        detached: bool = typer.Option(False, "--detached", hidden=True),
    ) -> None:
        """Run the scheduler daemon (foreground unless --detach)."""
        cfg, specs = _load(ctx)
        from candlekeep.scheduler.daemon import run_daemon
        from candlekeep.scheduler.engine import EngineOptions

        options = EngineOptions(heartbeat_s=_seconds(heartbeat, "--heartbeat"),
                                stop_timeout_s=_seconds(stop_timeout, "--stop-timeout"),
                                freeze_gc=True, retention=_retention(cfg))
        if detach:
            argv = [*_state_argv(ctx), "start", "--stop-timeout", stop_timeout,
                    "--heartbeat", heartbeat, "--detached"]
            info, ready = d.detach(cfg, argv)
            if ready:
                console.print(f"daemon started: pid {info.pid}, node {info.node}, "
                              f"log {info.log}", highlight=False)
            else:
                console.print(f"[yellow]daemon pid {info.pid} is still starting (state DB "
                              f"unreachable?); it keeps retrying: see {info.log}[/]",
                              highlight=False)
            return
        api = None
        if cfg.api is not None:  # the web stack is imported here, never by the scheduler
            from candlekeep.api.server import ApiServer

            api = ApiServer(cfg, specs)
        run_daemon(cfg, specs, options, json_logs=common.state(ctx).log_json,
                   console=not detached, detached=detached, api=api)

    @app.command()
    @friendly_errors
    def stop(
        ctx: typer.Context,
        timeout: str = typer.Option("60s", "--timeout", help="How long running jobs get to "
                                    "finish before they are cancelled."),
    ) -> None:
        """Stop the daemon: SIGTERM, let running jobs finish, then cancel them."""
        cfg = common.state(ctx).config()
        info = d.stop_daemon(cfg, _seconds(timeout, "--timeout"))
        if info is None:
            console.print("no daemon is running")
            return
        console.print(f"daemon stopped (pid {info.pid}, node {info.node})", highlight=False)

    @app.command()
    @friendly_errors
    def status(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Is the daemon running: PID, uptime, node, jobs running now, next five ticks."""
        cfg, specs = _load(ctx)
        now = _now()
        st = d.PidFile(cfg.data_dir).status()
        from candlekeep.queries import jobs as q
        from candlekeep.queries.encode import plain
        from candlekeep.queries.freshness import ingestion_status
        from candlekeep.state.statuses import FreshnessStatus

        rt = _runtime(cfg)
        try:
            store = _store(rt)
            running = [{"job": r.job, "scheduled_for": r.scheduled_for, "node": r.node,
                        "instance": r.instance, "attempt": r.attempt, "status": r.status,
                        "started_at": r.started_at, "lease_until": r.lease_until,
                        "not_before": r.not_before, "run_id": r.id}
                       for r in store.live_runs()]
            with _reader(cfg) as reader:
                nodes = q.nodes(reader, now)
                differs = [j.name for j in q.job_overview(specs, reader, now)
                           if j.spec_matches is False]
                stale = sum(1 for v in ingestion_status(reader, cfg, now)
                            if v.status != FreshnessStatus.OK)
            store.dispose()
        finally:
            common.run(rt.aclose())
        ticks = sorted((tick, s.name) for s in specs if s.scheduled and s.trigger
                       for tick in s.trigger.next_n(now, 5))[:5]
        data: dict[str, Any] = {
            "running": st.running, "stale_pid_file": st.stale,
            "pid": st.info.pid if st.running and st.info else None,
            "node": st.info.node if st.running and st.info else d.default_node(cfg),
            "started_at": st.info.started_at if st.running and st.info else None,
            "uptime_s": (now - st.info.started_at) / 1000 if st.running and st.info else None,
            "log": str(d.log_path(cfg)), "nodes": plain(nodes), "running_jobs": running,
            "config_differs": differs, "stale_series": stale,
            "next_ticks": [{"at": tick, "at_utc": fmt_ms(tick), "job": job}
                           for tick, job in ticks],
        }
        if as_json:
            print_json(data)
            return
        if st.running and st.info:
            console.print(f"daemon: [green]running[/] pid {st.info.pid}, node {st.info.node}, "
                          f"up {fmt_duration(now - st.info.started_at)}", highlight=False)
        else:
            note = " (stale PID file)" if st.stale else ""
            console.print(f"daemon: [red]not running[/]{note}", highlight=False)
        console.print(f"log: {data['log']}", highlight=False)
        if stale:
            console.print(f"[yellow]stale series: {stale}[/] (older than the freshness "
                          "threshold, or nothing stored; see 'candlekeep freshness')",
                          highlight=False)
        for n in nodes:
            skew = "" if n.skew_ms is None else f", clock {-n.skew_ms / 1000:+.1f}s"
            console.print(f"node {n.node}: {'alive' if n.alive else n.status}, "
                          f"heartbeat {q.relative(n.heartbeat_at, now)}{skew}",
                          highlight=False)
            if n.conflicts:
                console.print(f"  [yellow]does not claim {', '.join(n.conflicts)}: its "
                              "config differs from the cluster's[/]", highlight=False)
        if differs:
            console.print(f"[yellow]this config differs from the cluster's for: "
                          f"{', '.join(differs)}[/] (see 'candlekeep list')", highlight=False)
        if running:
            console.print("running now:")
            for r in running:
                what = (f"retry due {q.relative(r['not_before'], now)}"
                        if r["status"] == "waiting" else r["status"])
                console.print(f"  {r['job']}  tick {fmt_ms(r['scheduled_for'])}  "
                              f"node {r['node']}  attempt {r['attempt']}  {what}",
                              highlight=False)
        else:
            console.print("running now: none")
        console.print("next ticks:")
        for tick, job in ticks:
            console.print(f"  {fmt_ms(tick)} UTC  ({q.relative(tick, now)})  {job}",
                          highlight=False)

    def _list(ctx: typer.Context, as_json: bool) -> None:
        from candlekeep.queries import jobs as q
        from candlekeep.queries.encode import plain

        cfg, specs = _load(ctx)
        now = _now()
        with _reader(cfg) as reader:
            listing = q.job_list(specs, reader, d.PidFile(cfg.data_dir).status().running, now)
        if as_json:
            print_json(plain(listing))
            return
        banner, overview = listing.health, listing.jobs
        up = ("[green]up[/]" + (f" ({', '.join(banner.live_nodes)})"
                                if banner.live_nodes else "")
              if banner.daemon_up else "[red]down[/]")
        failing = banner.failing_jobs
        parts = [f"daemon {up}", f"state DB {banner.state_db_ms:.1f} ms",
                 ("[red]failing: " + ", ".join(failing) + "[/]") if failing
                 else "[green]no failing jobs[/]",
                 f"open gaps {banner.open_gaps if banner.open_gaps is not None else '?'}"]
        console.print(" | ".join(parts), highlight=False)
        for dis in banner.disagreements:
            console.print(f"[yellow]node {dis.node} does not claim {', '.join(dis.jobs)}"
                          ": its config differs from the cluster's[/]", highlight=False)
        for pv in banner.unwell_providers or []:
            console.print(f"[{'red' if pv.status == 'down' else 'yellow'}]provider "
                          f"{escape(pv.source)} {pv.status}: {escape('; '.join(pv.reasons))} "
                          f"({'stale, ' if pv.stale else ''}checked {fmt_ms(pv.checked_at)} "
                          "UTC)[/]", highlight=False)
        table = Table(show_lines=False)
        for col in ("job", "schedule", "enabled", "next run (UTC)", "last run", "took",
                    "7d success"):
            table.add_column(col)
        for o in overview:
            sched = (f"{o.schedule}\n[dim]{o.schedule_words}[/]" if o.schedule
                     else "[dim]manual only[/]")
            nxt = f"{o.next_run_utc}\n[dim]{o.next_run_relative}[/]" if o.next_run else "-"
            rate = (f"{o.success_rate_7d:.0%} of {o.runs_7d}"
                    if o.success_rate_7d is not None else "-")
            name = o.name
            if o.spec_matches is False:
                name += f"\n[yellow]config differs (cluster's set by {o.spec_set_by})[/]"
            table.add_row(name, sched, "yes" if o.enabled else "[yellow]no[/]", nxt,
                          _styled(o.last_status), _ms(o.last_duration_ms), rate)
        console.print(table)

    @app.command("list")
    @friendly_errors
    def list_(ctx: typer.Context,
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")
              ) -> None:
        """Jobs with schedule, next run, last run and 7-day success, under a health line."""
        _list(ctx, as_json)

    @app.command("jobs", hidden=True)
    @friendly_errors
    def jobs_(ctx: typer.Context,
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")
              ) -> None:
        """Alias of 'list'."""
        _list(ctx, as_json)

    @app.command("run")
    @friendly_errors
    def run_(
        ctx: typer.Context,
        job: str = typer.Argument(..., help="Job name from the config."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Say what it would do; write "
                                     "nothing (not even history)."),
        force: bool = typer.Option(False, "--force", help="Run even if the job is running "
                                   "elsewhere right now."),
        timer: bool = typer.Option(False, "--timer", help="Started by a system timer: run "
                                   "the schedule's latest tick (once, cluster-wide) and "
                                   "count it in SLOs; a tick already run is skipped."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Run one configured job now, in the foreground, recorded in history."""
        cfg, specs = _load(ctx)
        spec = _spec(specs, job)
        rt = _runtime(cfg)

        from candlekeep.cli.progress import progress_for
        from candlekeep.scheduler.manual import run_now

        async def go() -> RunOutcome:
            try:
                with progress_for(console, not as_json) as prog:
                    return await run_now(rt, spec, dry_run=dry_run, force=force,
                                         progress=prog,
                                         trigger=Trigger.TIMER if timer else Trigger.MANUAL)
            finally:
                await rt.aclose()

        out = common.run(go())
        res = out.result
        took = out.finished_at - out.started_at
        if as_json:
            print_json({"job": job, "status": out.status, "run_id": out.run_id,
                        "attempts": out.attempts, "duration_ms": took, "error": out.error,
                        "dry_run": dry_run, "recorded": out.recorded, "note": out.note,
                        "rows_written": res.rows_written if res else 0,
                        "requests": res.requests if res else 0,
                        "warnings": res.warnings if res else [],
                        "details": res.details if res else {}})
        else:
            if res is not None:
                for w in res.warnings:
                    console.print(escape(w) if dry_run else f"[yellow]warning:[/] {escape(w)}",
                                  highlight=False)
                plan = res.details.get("plan")
                for line in (plan if isinstance(plan, list) else [plan] if plan else []):
                    console.print(f"would fetch {line}", highlight=False)
            if out.error:
                console.print(f"[red]error:[/] {escape(out.error)}", highlight=False)
            if out.note:
                console.print(out.note, highlight=False)
            what = "dry run" if dry_run else f"run {out.run_id}"
            console.print(f"{job}: {_styled(out.status)} ({what}, {fmt_duration(took)}, "
                          f"attempts {out.attempts}, rows "
                          f"{res.rows_written if res else 0})", highlight=False)
        if out.status not in (RunStatus.SUCCESS, RunStatus.SKIPPED, RunStatus.WAITING):
            raise typer.Exit(1)

    @app.command()
    @friendly_errors
    def history(
        ctx: typer.Context,
        job: str | None = typer.Argument(None, help="Only this job."),
        since: str = typer.Option("24h", "--since", help="How far back (e.g. 1h, 7d)."),
        status_: str | None = typer.Option(None, "--status", help="Only runs with this status."),
        limit: int = typer.Option(200, "--limit", help="At most this many runs."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Past runs: scheduled time, start, duration, node, attempt, status, rows, error."""
        from candlekeep.queries import jobs as q
        from candlekeep.queries.encode import plain

        if status_ is not None and status_ not in set(RunStatus):
            raise typer.BadParameter(f"use one of {', '.join(RunStatus)}",
                                     param_hint="--status")
        if limit < 1:
            raise typer.BadParameter("must be at least 1", param_hint="--limit")
        cfg = common.state(ctx).config()
        since_ms = _now() - int(_seconds(since, "--since") * 1000)
        with _reader(cfg) as reader:
            runs = q.runs(reader, job=job, since_ms=since_ms, limit=limit,
                          status=RunStatus(status_) if status_ else None).items
        if as_json:
            print_json(plain(runs))
            return
        table = Table()
        for col in ("job", "scheduled (UTC)", "started", "took", "node", "att", "status",
                    "rows", "error"):
            table.add_column(col, overflow="fold")
        for r in runs:
            err = (r.error or "").replace("\n", " ")
            table.add_row(r.job, fmt_ms(r.scheduled_for),
                          fmt_ms(r.started_at) if r.started_at else "-", _ms(r.duration_ms),
                          r.node, str(r.attempt), _styled(r.status), str(r.rows_written),
                          err if len(err) <= 80 else err[:79] + "…")
        console.print(table)
        if not runs:
            console.print("no runs in this window")

    @friendly_errors
    def prune_(
        ctx: typer.Context,
        keep: str | None = typer.Option(None, "--keep", help="Keep this much history (e.g. "
                                        "30d); default: the config's retention."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Delete finished runs, skipped-tick rows, gone nodes and quiet alerts older than
        --keep.

        The daemon does this daily from the config's retention setting; live runs and the
        schedule history SLOs count from are never deleted."""
        from candlekeep.scheduler.retention import Retention, prune

        cfg = common.state(ctx).config()
        if keep is not None:
            ms = int(_seconds(keep, "--keep") * 1000)
            policy = Retention(ms, ms, ms)
        else:
            policy = _retention(cfg)
        rt = _runtime(cfg)
        try:
            counts = prune(_store(rt), policy, _now(), dry_run=dry_run)
        finally:
            common.run(rt.aclose())
        if as_json:
            print_json({"dry_run": dry_run, "runs": counts.runs, "skipped": counts.skipped,
                        "nodes": counts.nodes, "alerts": counts.alerts})
            return
        verb = "would delete" if dry_run else "deleted"
        console.print(f"{verb}: {counts.runs} runs, {counts.skipped} skipped-tick rows, "
                      f"{counts.nodes} node rows, {counts.alerts} alerts", highlight=False)

    app.command("prune")(prune_)

    @app.command()
    @friendly_errors
    def install(
        ctx: typer.Context,
        target: Target = typer.Argument(..., help="systemd, launchd or crontab."),
        write: bool = typer.Option(False, "--write", help="Write the files (or the crontab) "
                                   "instead of printing them."),
        per_job: bool = typer.Option(False, "--per-job", help="systemd/launchd: one timer "
                                     "per job calling 'candlekeep run JOB' instead of the "
                                     "daemon (crontab is always per job)."),
        folder: Path | None = typer.Option(None, "--dir", help="Where --write puts unit "
                                           "files (default: the user's unit folder)."),
    ) -> None:
        """Print (or write) a unit for the daemon, or one timer/crontab line per job."""
        from candlekeep.scheduler import install as inst

        cfg, specs = _load(ctx)
        if target is Target.crontab:
            block = inst.crontab_block(cfg, specs)
            if write:
                inst.write_crontab(block)
                console.print("crontab updated (the candlekeep block was replaced)")
            else:
                typer.echo(block, nl=False)
            return
        if target is Target.systemd:
            out = inst.systemd_timers(cfg, specs) if per_job else inst.systemd_daemon(cfg)
        else:
            out = inst.launchd_jobs(cfg, specs) if per_job else inst.launchd_daemon(cfg)
        if write:
            dest = folder or inst.default_folder(target.value)
            for path in inst.write_files(out, dest):
                console.print(f"wrote {path}", highlight=False)
            console.print(f"then: {out.hint}", highlight=False)
            return
        for name, text in out.files.items():
            typer.echo(f"# ---- {name}")
            typer.echo(text)
        typer.echo(f"# then: {out.hint}")
