"""The ``report`` job type: e-mail ``reports.<name>`` (freshness, runs, gaps, coverage,
errors, and any registered section).

The report code (Jinja2, matplotlib) is imported when a run starts: registering job types
happens on every ``candlekeep list``.
"""

from __future__ import annotations

from pydantic import Field

from candlekeep.core.errors import CandlekeepError
from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type


class ReportParams(Params):
    report: str = Field(min_length=1)
    """A report configured under ``reports:``."""
    to: list[str] | None = Field(default=None, min_length=1)
    """Recipients instead of the report's own ``to``."""


@job_type("report", ReportParams, "E-mail a report: freshness, runs, gaps, coverage, errors.")
async def report(ctx: JobContext, p: ReportParams) -> JobResult:
    from candlekeep.reports.mailer import send_report
    from candlekeep.reports.outbox import KEEP_PENDING

    try:
        out = await send_report(ctx.runtime, p.report, p.to, dry_run=ctx.dry_run)
    except CandlekeepError as exc:  # a bad report config or an unreadable state DB
        return JobResult(errors=[f"report {p.report}: {exc}"])
    res = JobResult(warnings=list(out.problems), artifacts=[str(out.path)],
                    details={"report": out.report, "subject": out.subject,
                             "to": list(out.to), "sent": out.sent, "path": str(out.path),
                             "reused": out.reused})
    if out.set_aside:
        res.warnings.append(
            f"report {p.report}: {len(out.set_aside)} older unsent message(s) moved from the "
            f"outbox to {out.set_aside[0].parent} (at most {KEEP_PENDING} wait per report): "
            f"{', '.join(a.name for a in out.set_aside)}; send one with: candlekeep report "
            "resend FILE")
    if out.error is not None:
        res.errors.append(f"report {p.report} not sent: {out.error}; the message is kept "
                          f"at {out.path} (send it with: candlekeep report resend "
                          f"{out.path})")
    elif out.sent:
        ctx.log.info("report sent report=%s to=%s", p.report, ",".join(out.to))
    return res
