"""``candlekeep availability``: the Binance file-availability tracker.

``availability update`` runs the ``availability`` job now, through the same run path as a
scheduled run (recorded, leased, counted by ``candlekeep slo`` under the job's name).

The query subcommands (snapshot, timeline, range, new-listings, delistings, summary) live
in ``availability_query_cmds.py``, which adds them to ``availability_app`` below; this
module adds the sub-app to the CLI.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import typer
from rich.markup import escape

from candlekeep.cli import common
from candlekeep.cli.common import console, friendly_errors
from candlekeep.core.errors import ConfigError

availability_app = typer.Typer(
    help="Which daily files Binance's public-data archive has: probe, validate, query.",
    no_args_is_help=True)

JOB_TYPE = "availability"


def _day(value: str | None, flag: str) -> str | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)",
                                 param_hint=flag) from None


def job_params(ctx: typer.Context, job: str | None) -> tuple[str, dict[str, Any]]:
    """The run's name and params: ``--job``'s, else the one configured availability job's,
    else the job type's defaults."""
    cfg = common.state(ctx).config()
    file = cfg.file
    if job is not None:
        found = cfg.job(job)
        if found is None:
            raise ConfigError(file, "jobs", f"no job named {job!r}",
                              f"jobs: {', '.join(j.name for j in cfg.jobs) or 'none'}")
        if found.type != JOB_TYPE:
            raise ConfigError(file, f"jobs.{job}.type",
                              f"job {job!r} is a {found.type} job, not {JOB_TYPE}")
        return found.name, dict(found.params)
    mine = [j for j in cfg.jobs if j.type == JOB_TYPE]
    if len(mine) > 1:
        raise ConfigError(file, "jobs", f"several {JOB_TYPE} jobs "
                          f"({', '.join(j.name for j in mine)})", "choose one with --job")
    if mine:
        return mine[0].name, dict(mine[0].params)
    return JOB_TYPE, {}


@availability_app.command("update")
@friendly_errors
def update(
    ctx: typer.Context,
    date: str | None = typer.Option(None, "--date", help="Newest date to probe (default: "
                                    "yesterday, UTC)."),
    since: str | None = typer.Option(None, "--since", help="Probe from this date on "
                                     "(instead of --lookback days)."),
    lookback: int | None = typer.Option(None, "--lookback", min=1,
                                        help="Days re-probed up to --date (default 20)."),
    job: str | None = typer.Option(None, "--job", help="The configured availability job "
                                   "whose params to use (default: the only one)."),
    volumes: bool | None = typer.Option(None, "--volumes/--no-volumes",
                                        help="Also store daily volumes from the 1d files."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be probed."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Probe which daily files exist, store them and validate; exits 1 when the run fails."""
    from candlekeep.cli.data_cmds import report, run_job

    t0 = time.monotonic()
    name, params = job_params(ctx, job)
    overrides = {"date": _day(date, "--date"), "since": _day(since, "--since"),
                 "lookback": lookback, "volumes": volumes}
    params.update({k: v for k, v in overrides.items() if v is not None})
    res = common.run(run_job(ctx, JOB_TYPE, params, dry_run=dry_run,
                             show_progress=not as_json, name=name))
    if not as_json:
        print_summary(res.details)
    report(res, t0, as_json, "availability update")


def print_summary(d: dict[str, Any]) -> None:
    """Symbols, probes and verdicts; validator warnings and errors follow with the rest."""
    if "probes" not in d:
        return
    console.print(
        f"{escape(str(d['market']))} {escape(str(d['data_type']))} {d['from']} .. {d['to']}: "
        f"symbols {d['symbols']} (exchange {d['exchange_symbols']}, archive listing "
        f"{d['listing_symbols']}, archive only {d['archive_only']})", highlight=False)
    kept = f" ({d['kept_on_error']} keep an earlier verdict)" if d.get("kept_on_error") else ""
    console.print(f"probes {d['probes']}: available {d['available']}, missing "
                  f"{d['missing']}, error {d['error']}{kept}", highlight=False)
    if d.get("volumes"):
        console.print(f"volumes stored for {d['volumes']} symbol-days", highlight=False)
    for f in d.get("validators", []):
        if f["severity"] in ("ok", "skipped"):
            console.print(f"{f['validator']}: {f['severity']}: {escape(f['message'])}",
                          highlight=False)


def register(app: typer.Typer) -> None:
    # Query subcommands: ``candlekeep.cli.availability_query_cmds`` registers them on
    # ``availability_app`` (main.py lists it after this module).
    app.add_typer(availability_app, name="availability")
