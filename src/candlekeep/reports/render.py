"""Turning a collected report into one e-mail.

The message is ``multipart/alternative``: a plain-text part, then ``multipart/related``
holding the HTML and its charts as ``image/png`` parts the HTML names by ``cid:``. Both
bodies come from one view of the sections, so they always say the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from candlekeep import __version__
from candlekeep.core.timeutil import fmt_duration, fmt_ms, ms_to_datetime
from candlekeep.reports.collect import Report, SectionData
from candlekeep.reports.sections import Cell, Column, Format, window_words

REPORT_HEADER = "X-Candlekeep-Report"
"""Names the report in every message, for mail filters."""
PERIOD_HEADER = "X-Candlekeep-Period"
"""The report period (``collect.period``): one message is kept per report, period and
recipients."""

_GOOD = "#116329"
_BAD = "#a40e26"
_MEH = "#9a6700"
_STATUS_COLOR = {"ok": _GOOD, "success": _GOOD, "repaired": _GOOD,
                 "stale": _BAD, "missing": _BAD, "error": _BAD, "failed": _BAD,
                 "timed_out": _BAD, "abandoned": _BAD, "open": _MEH}
_NUMERIC = (Format.COUNT, Format.DURATION, Format.PERCENT, Format.NUMBER)


@dataclass(frozen=True, slots=True)
class CellView:
    text: str
    align: str
    color: str | None
    wrap: bool


@dataclass(frozen=True, slots=True)
class SectionView:
    title: str
    note: str
    empty: str
    headline: str | None
    error: str | None
    headers: list[CellView]
    rows: list[list[CellView]]
    text_lines: list[str]
    more: int
    chart_cid: str | None
    chart_alt: str
    chart_width: int


def format_cell(value: Cell, column: Column) -> str:
    if value is None or value == "":
        return "-"
    f = column.format
    if f is Format.TIME and isinstance(value, int | float):
        return fmt_ms(int(value))[:16]
    if f is Format.DURATION and isinstance(value, int | float):
        return fmt_duration(int(value))
    if f is Format.PERCENT and isinstance(value, int | float):
        return f"{math.floor(float(value) * 100) / 100:.2f}%"  # never rounds up to 100%
    if f is Format.COUNT and isinstance(value, int):
        return f"{value:,}"
    if f is Format.NUMBER and isinstance(value, int | float):
        return f"{value:,.2f}"
    text = " ".join(str(value).split())  # an error's newlines would break the table
    if column.max_chars is not None and len(text) > column.max_chars:
        text = text[: column.max_chars - 1] + "…"
    return text


def _view(data: SectionData, cid: str | None) -> SectionView:
    s = data.section
    shown = data.rows[: s.limit]
    headers = [CellView(c.title, "right" if c.format in _NUMERIC else "left", None, False)
               for c in s.columns]
    rows = []
    for row in shown:
        cells = []
        for col, value in zip(s.columns, row, strict=False):
            text = format_cell(value, col)
            color = _STATUS_COLOR.get(str(value)) if col.format is Format.STATUS else None
            cells.append(CellView(text, "right" if col.format in _NUMERIC else "left", color,
                                  col.max_chars is not None))
        rows.append(cells)
    return SectionView(
        s.title, s.note, s.empty, data.headline, data.error, headers, rows,
        _text_table(headers, rows), len(data.rows) - len(shown), cid,
        data.chart.alt if data.chart else "", data.chart.width_px if data.chart else 0)


def _text_table(headers: list[CellView], rows: list[list[CellView]]) -> list[str]:
    widths = [len(h.text) for h in headers]
    for row in rows:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c.text))

    def line(cells: Sequence[CellView]) -> str:
        parts = [c.text.rjust(w) if c.align == "right" else c.text.ljust(w)
                 for c, w in zip(cells, widths, strict=False)]
        return "  ".join(parts).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _environment() -> Any:
    import jinja2

    from candlekeep.reports import templates

    return jinja2.Environment(
        loader=jinja2.DictLoader({"report.html": templates.HTML,
                                  "report.txt": templates.TEXT}),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render(report: Report) -> EmailMessage:
    """The e-mail for ``report``: text and HTML alternatives, charts inline."""
    sender_domain = report.sender.rpartition("@")[2].strip("> ") or "candlekeep.invalid"
    cids = {d.section.name: make_msgid(d.section.name, sender_domain)
            for d in report.sections if d.chart is not None}
    views = [_view(d, cids[d.section.name][1:-1] if d.section.name in cids else None)
             for d in report.sections]
    window = (f"The last {window_words(report.now_ms - report.since_ms)} up to "
              f"{fmt_ms(report.now_ms)[:16]} UTC")
    values = {"subject": report.subject, "title": f"candlekeep report: {report.name}",
              "window": window, "sections": views,
              "footer": f"candlekeep {__version__} on node {report.node}; "
                        f"report {report.name}"}
    env = _environment()
    msg = EmailMessage()
    msg["Subject"] = report.subject
    msg["From"] = report.sender
    msg["To"] = ", ".join(report.to)
    msg["Date"] = format_datetime(ms_to_datetime(report.now_ms))
    msg["Message-ID"] = make_msgid("report", sender_domain)
    msg[REPORT_HEADER] = report.name
    msg[PERIOD_HEADER] = report.period
    msg.set_content(env.get_template("report.txt").render(values))
    msg.add_alternative(env.get_template("report.html").render(values), subtype="html")
    html_part = next(p for p in msg.iter_parts() if p.get_content_type() == "text/html")
    for d in report.sections:
        if d.chart is not None:
            html_part.add_related(d.chart.png, "image", "png", cid=cids[d.section.name],
                                  filename=f"{d.section.name}.png", disposition="inline")
    return msg
