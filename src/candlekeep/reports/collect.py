"""Reading a report's sections: one state DB reader for all of them, each section's rows,
headline and chart, a failing section recorded rather than raised."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from candlekeep.core.text import clean_text
from candlekeep.core.timeutil import fmt_ms, iso_ms
from candlekeep.reports.chart import Chart
from candlekeep.reports.sections import Row, Section, SectionInput, resolve

if TYPE_CHECKING:
    from candlekeep.config.models import Config
    from candlekeep.jobs.runtime import Runtime
    from candlekeep.state.reader import Reader

log = logging.getLogger("candlekeep.reports")


@dataclass(frozen=True, slots=True)
class SectionData:
    """A section's rows as read (all of them; the views show ``limit``), or its error."""

    section: Section
    rows: list[Row]
    headline: str | None = None
    chart: Chart | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    to: tuple[str, ...]
    sender: str
    subject_prefix: str
    node: str
    now_ms: int
    since_ms: int
    period: str
    """The report period the message belongs to (see ``period``)."""
    sections: list[SectionData]

    @property
    def subject(self) -> str:
        heads = [s.headline for s in self.sections if s.headline]
        day = fmt_ms(self.now_ms)[:10]
        return f"{self.subject_prefix} {day}: {', '.join(heads) if heads else 'all well'}"

    @property
    def problems(self) -> list[str]:
        """Sections that could not be read, for the run's warnings."""
        return [f"section {s.section.name}: {s.error}" for s in self.sections if s.error]


def period(config: Config, name: str, now_ms: int) -> str:
    """The period of ``reports.<name>`` that ``now_ms`` falls in, as an ISO 8601 interval:
    its window's length, aligned to the Unix epoch (a UTC day for ``24h``).

    A message is kept and sent once per report, period and recipients: a retry, or a second
    sender in the same period, sends the kept message rather than render another. The
    period is derived from the time alone, not from the job's tick (which a job does not
    see), so a report sent by hand falls in one too."""
    length = max(1, int(config.reports[name].window * 1000))
    start = now_ms // length * length
    return f"{iso_ms(start)}/{iso_ms(start + length)}"


@contextlib.contextmanager
def state_reader(runtime: Runtime) -> Iterator[Reader]:
    """A reader on the runtime's own state DB connection (the one a daemon already has)."""
    with runtime.state.reader() as reader:
        yield reader


def collect(runtime: Runtime, name: str, to: Sequence[str], now_ms: int) -> Report:
    """Read every section of ``reports.<name>`` (blocking: call it in a thread).

    A section that fails is shown as failed, not fatal: the rest of the report still goes
    out, and the run lists the failure among its warnings."""
    cfg = runtime.config
    sections = resolve(cfg, name)
    rcfg = cfg.reports[name]
    assert cfg.smtp is not None, "the loader requires smtp: with reports:"
    since = now_ms - int(rcfg.window * 1000)
    out = []
    with state_reader(runtime) as reader:
        inp = SectionInput(reader, runtime, name, now_ms, since)
        for section in sections:
            out.append(_read(section, inp))
    return Report(name, tuple(to), cfg.smtp.sender, rcfg.subject, runtime.node, now_ms,
                  since, period(cfg, name, now_ms), out)


def _read(section: Section, inp: SectionInput) -> SectionData:
    try:
        rows = [tuple(r) for r in section.rows(inp)]
    except Exception as exc:  # one broken section must not cost the whole report
        log.warning("report section failed section=%s error=%r", section.name, exc,
                    exc_info=exc)
        with contextlib.suppress(Exception):  # PostgreSQL refuses more in a failed transaction
            inp.reader.conn.rollback()
        return SectionData(section, [], error=clean_text(f"{type(exc).__name__}: {exc}", 500))
    headline = section.headline(rows) if section.headline else None
    chart = None
    if section.chart is not None and rows:
        try:
            chart = section.chart(rows, inp)
        except Exception as exc:  # a chart is a nicety: the table still says it all
            log.warning("report chart failed section=%s error=%r", section.name, exc,
                        exc_info=exc)
    return SectionData(section, rows, headline, chart)
