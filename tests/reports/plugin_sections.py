"""Report sections as an installed package would ship them.

A real plug-in declares them in its own ``pyproject.toml``::

    [project.entry-points."candlekeep.report_sections"]
    job_runs = "candlekeep_desk.sections:JOB_RUNS"

``tests/reports/test_plugins.py`` writes the same declaration as installed metadata
(``entry_points.txt`` in a ``.dist-info`` folder) instead of installing a package. The
other names are the mistakes the registry must report.
"""

from __future__ import annotations

from candlekeep.reports.sections import Column, Format, Section, sql_rows

JOB_RUNS = Section(
    name="job_runs", title="Runs per job (plug-in)",
    columns=(Column("job"), Column("runs", Format.COUNT)),
    rows=sql_rows("SELECT job, COUNT(*) FROM runs WHERE scheduled_for >= :since "
                  "AND scheduled_for <= :now GROUP BY job ORDER BY job"),
    note="From an installed package.")

NOT_A_SECTION = sql_rows("SELECT 1")
"""A rows function, not a Section."""

RUNS = Section(name="runs", title="Runs, redefined", columns=(Column("job"),),
               rows=sql_rows("SELECT job FROM runs"))
"""Named like a built-in."""

JOB_RUNS_AGAIN = Section(name="job_runs", title="Another package's job runs",
                         columns=(Column("job"),), rows=sql_rows("SELECT job FROM runs"))
"""Named like another plug-in's section."""
