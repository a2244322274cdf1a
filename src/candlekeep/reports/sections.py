"""What a report is made of: sections, each a title, a query and how to show its rows.

A section is data, registered by name; the mailer and the templates know only this shape,
so a new dataset (positions, trades, tracking error) adds one ``Section`` with
``register_section`` and nothing else changes. Rows are tuples in column order: a SQL
section over the state DB (``sql_rows``) selects its columns in that order, a section over
a store's dataset (``store_rows.store_rows``) names them, a read-model section converts its
dataclasses.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING, Any

from candlekeep.core.errors import CandlekeepError, ConfigError
from candlekeep.core.plugins import PluginFailure, load_group

if TYPE_CHECKING:
    from pydantic import BaseModel

    from candlekeep.config.models import Config
    from candlekeep.jobs.runtime import Runtime
    from candlekeep.reports.chart import Chart
    from candlekeep.state.reader import Reader

log = logging.getLogger("candlekeep.reports")

Cell = str | int | float | None
Row = tuple[Cell, ...]


class Format(StrEnum):
    """How a cell reads in the e-mail (values stay raw until rendered)."""

    TEXT = "text"
    COUNT = "count"
    TIME = "time"
    """Epoch ms, shown as UTC."""
    DURATION = "duration"
    """Milliseconds, shown as 4.2s, 3m05s, 2h10m."""
    PERCENT = "percent"
    NUMBER = "number"
    """A float with two decimals and thousands separators (money, sizes)."""
    STATUS = "status"
    """A run or freshness status, coloured by what it means."""


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    format: Format = Format.TEXT
    max_chars: int | None = None
    """Long text (an error) is cut to this many characters."""


@dataclass(frozen=True, slots=True)
class SectionInput:
    """What a section's query may use. Queries run in a worker thread: blocking is fine."""

    reader: Reader
    """The state DB, read-only."""
    runtime: Runtime
    """Stores and config, for sections over datasets kept in a store."""
    report: str
    now_ms: int
    since_ms: int
    """Start of the report's window (``reports.<name>.window`` before ``now_ms``)."""

    @property
    def window(self) -> str:
        """The window in words (``24 h``), for titles."""
        return window_words(self.now_ms - self.since_ms)


def window_words(ms: int) -> str:
    hours = ms / 3_600_000
    return f"{hours:g} h" if hours <= 72 else f"{hours / 24:g} days"


RowsFn = Callable[[SectionInput], Sequence[Sequence[Cell]]]
HeadlineFn = Callable[[Sequence[Row]], str | None]
ChartFn = Callable[[Sequence[Row], SectionInput], "Chart | None"]


@dataclass(frozen=True, slots=True)
class Section:
    """One part of a report. ``rows`` returns every row; the report shows ``limit`` of them
    and says how many more there were. ``headline`` (from all rows) goes into the subject
    line, e.g. ``2 stale``; ``chart`` adds an inline image above the table."""

    name: str
    title: str
    columns: tuple[Column, ...]
    rows: RowsFn
    note: str = ""
    empty: str = "Nothing to report."
    limit: int = 50
    headline: HeadlineFn | None = None
    chart: ChartFn | None = None
    params: type[BaseModel] | None = None
    """The section's settings (``reports.<name>.params.<section>``) as a pydantic model,
    checked when the report is resolved; None: the section takes none."""


def query(reader: Reader, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
    """Run ``sql`` (``:name`` parameters, SQL that SQLite and PostgreSQL both accept) on the
    state DB through the reader every listing uses."""
    return [tuple(r) for r in reader.rows(sql, dict(params or {}))]


def sql_rows(sql: str) -> RowsFn:
    """A section's rows straight from one statement; it may use ``:since`` and ``:now``
    (epoch ms), the report's window."""

    def rows(inp: SectionInput) -> list[Row]:
        return query(inp.reader, sql, {"since": inp.since_ms, "now": inp.now_ms})

    return rows


class SectionError(CandlekeepError):
    """A section that must not be registered (its name is taken), or cannot be read (its
    store has no such dataset); the message names what to fix."""


GROUP = "candlekeep.report_sections"
"""Entry points of installed packages, each naming a ``Section``: sections a report may use
without anyone importing the package."""

_SECTIONS: dict[str, Section] = {}
_ORIGIN: dict[str, str] = {}
"""Where each section came from, for listings: built-in, a plug-in, or the registering
module."""
_BUILTIN: set[str] = set()
_failures: list[PluginFailure] = []
_loaded = False


def register_section(section: Section, *, builtin: bool = False) -> None:
    """Make ``section`` available to ``reports.<name>.sections``. Any name but a built-in's
    may be registered again (the latest wins), so a module can be reloaded."""
    if not builtin:
        _load()
        if section.name in _BUILTIN:
            raise SectionError(f"report section {section.name!r} is built in; choose "
                               "another name")
    else:
        _BUILTIN.add(section.name)
    _SECTIONS[section.name] = section
    # the calling module: what a listing names for a section registered by code
    _ORIGIN[section.name] = "built-in" if builtin else \
        f"registered by {sys._getframe(1).f_globals.get('__name__', '?')}"


def _load() -> None:
    """Built-ins, then every ``candlekeep.report_sections`` entry point, once.

    As with job-type plug-ins (``jobs.registry``): one that fails to import, names
    something that is not a Section, or takes a built-in's or another plug-in's name is
    skipped whole (whatever its import registered goes too), logged, and kept in
    ``plugin_failures()``, so a broken package costs its own sections, not the report."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from candlekeep.reports import builtin, hyperliquid  # noqa: F401 - register on import

    def restore(before: tuple[dict[str, Section], dict[str, str]]) -> None:
        _SECTIONS.clear()
        _SECTIONS.update(before[0])
        _ORIGIN.clear()
        _ORIGIN.update(before[1])

    _failures.extend(load_group(GROUP, "report section", _load_plugin,
                                lambda: (dict(_SECTIONS), dict(_ORIGIN)), restore,
                                SectionError, log))


def _load_plugin(ep: EntryPoint) -> None:
    before, origins = dict(_SECTIONS), dict(_ORIGIN)
    obj = ep.load()
    if not isinstance(obj, Section):
        kind = type(obj).__name__
        raise SectionError(f"got a {kind}; a {GROUP} entry point must name a Section "
                           "(candlekeep.reports.sections.Section)")
    if obj.name in _BUILTIN:
        raise SectionError(f"report section {obj.name!r} is built in; choose another name")
    for name, held in before.items():  # what importing the plug-in replaced
        if _SECTIONS.get(name) is not held:
            raise SectionError(f"report section {name!r} is already registered "
                               f"({origins[name]}); choose another name")
    taken = before.get(obj.name)
    if taken is not None and taken is not obj:
        raise SectionError(f"report section {obj.name!r} is already registered "
                           f"({origins[obj.name]}); choose another name")
    dist = ep.dist.name if ep.dist is not None else "?"
    _SECTIONS[obj.name] = obj
    _ORIGIN[obj.name] = f"plug-in {ep.name} of {dist}"


def sections() -> dict[str, Section]:
    _load()
    return dict(_SECTIONS)


def origin(name: str) -> str:
    """Where section ``name`` came from: ``built-in``, ``plug-in NAME of PACKAGE`` or
    ``registered by MODULE``."""
    _load()
    return _ORIGIN[name]


def plugin_failures() -> list[PluginFailure]:
    """Plug-ins that were skipped (logged once, when first looked for), so that a listing,
    or the error for an unknown section, can say which failed and why."""
    _load()
    return list(_failures)


def resolve(config: Config, report: str) -> list[Section]:
    """The sections of ``reports.<report>``, in order; ConfigError naming the entry and the
    known names when one is unknown.

    Checked here, when a report is sent, rather than by the config loader: sections are
    registered by code (built-ins, plug-ins, tests), which the loader must not import."""
    file = config.file
    cfg = config.reports.get(report)
    if cfg is None:
        raise ConfigError(file, "reports", f"unknown report {report!r}",
                          f"configured reports: {', '.join(config.reports) or 'none'}")
    known = sections()
    out = []
    for i, name in enumerate(cfg.sections):
        if name not in known:
            failed = "; ".join(str(f) for f in plugin_failures())
            raise ConfigError(file, f"reports.{report}.sections[{i}]",
                              f"unknown section {name!r}",
                              f"known sections: {', '.join(sorted(known))}"
                              + (f"; plug-ins skipped: {failed}" if failed else ""))
        out.append(known[name])
    for name in cfg.params:
        if name not in cfg.sections:
            raise ConfigError(file, f"reports.{report}.params.{name}",
                              f"settings for section {name!r}, which the report does not "
                              "list", f"its sections: {', '.join(cfg.sections)}")
    for section in out:
        section_params(config, report, section)
    return out


def section_params(config: Config, report: str, section: Section) -> Any:
    """``reports.<report>.params.<section>`` checked by the section's model (an instance of
    ``section.params``, None for a section that takes none); ConfigError naming the key."""
    from pydantic import ValidationError

    file = config.file
    key = f"reports.{report}.params.{section.name}"
    raw = config.reports[report].params.get(section.name)
    if section.params is None:
        if raw:
            raise ConfigError(file, key, f"section {section.name!r} takes no settings",
                              "remove them")
        return None
    try:
        return section.params.model_validate(raw or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(file, f"{key}.{where}" if where else key, err["msg"],
                          f"settings of {section.name}: "
                          f"{', '.join(section.params.model_fields)}") from None
