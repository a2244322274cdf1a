"""Report sections from installed packages: ``candlekeep.report_sections`` entry points,
declared as real installed metadata (a ``.dist-info`` folder on the path is what
``pip install`` would have left)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from candlekeep.config import load_config
from candlekeep.core.errors import ConfigError
from candlekeep.reports import builtin, sections
from tests.cli.conftest import cli
from tests.reports import plugin_sections
from tests.reports.conftest import FAILING_JOB, Inbox, config_dict, write_config
from tests.waiting import free_port

EXAMPLE = "tests.reports.plugin_sections"
REPO = Path(__file__).resolve().parents[2]

Install = Callable[..., Path]


def _dist(root: Path, entry_points: dict[str, str]) -> Path:
    """``root`` holding the metadata of an installed package ``candlekeep-desk`` that
    declares ``entry_points`` in the report-sections group."""
    dist = root / "candlekeep_desk-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: candlekeep-desk\n"
                                   "Version: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[{sections.GROUP}]\n{lines}")
    return root


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """Puts entry points on this process's path, against a section registry that has not
    looked for plug-ins yet; the registry is restored afterwards."""
    sections.sections()  # built-ins register on their first import: into the real registry
    monkeypatch.setattr(sections, "_SECTIONS", dict(sections._SECTIONS))
    monkeypatch.setattr(sections, "_ORIGIN", dict(sections._ORIGIN))
    monkeypatch.setattr(sections, "_failures", [])
    monkeypatch.setattr(sections, "_loaded", False)

    def write(**entry_points: str) -> Path:
        root = _dist(tmp_path / "site-packages", entry_points)
        monkeypatch.syspath_prepend(str(root))
        return root

    yield write


def test_an_installed_section_is_in_reports_without_anyone_importing_it(
        site: Path, inbox: Inbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI, in its own process, finds the package's section through its metadata."""
    root = _dist(tmp_path / "site-packages", {"job_runs": f"{EXAMPLE}:JOB_RUNS"})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(root), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    config = write_config(site, inbox.port, extra_sections=["job_runs"])

    out = cli(config, "report", "send", "daily")
    assert out.returncode == 0, out.stderr
    (got,) = inbox.messages
    plain = got.message.get_body(("plain",))
    assert plain is not None
    text = plain.get_content().replace("\r\n", "\n")
    assert "\nRuns per job (plug-in)\n" in text and "From an installed package." in text
    lines = text.split("Runs per job (plug-in)\n", 1)[1].splitlines()
    assert any(ln.split() == [FAILING_JOB, "1"] for ln in lines)

    listed = cli(config, "report", "sections", "--json")
    assert listed.returncode == 0, listed.stderr
    found = {s["name"]: s for s in json.loads(listed.stdout)["sections"]}
    assert found["job_runs"] == {"name": "job_runs", "title": "Runs per job (plug-in)",
                                 "from": "plug-in job_runs of candlekeep-desk"}
    assert found["runs"]["from"] == "built-in"


def test_broken_plugins_are_skipped_whole_listed_and_cost_only_themselves(
        install: Install, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    install(job_runs=f"{EXAMPLE}:JOB_RUNS",  # first: the good one, loaded
            not_a_section=f"{EXAMPLE}:NOT_A_SECTION",
            runs=f"{EXAMPLE}:RUNS",
            job_runs_again=f"{EXAMPLE}:JOB_RUNS_AGAIN",
            gone="tests.reports.no_such_module:SECTION")
    with caplog.at_level(logging.ERROR, logger="candlekeep.reports"):
        found = sections.sections()
    assert found["job_runs"] is plugin_sections.JOB_RUNS
    assert sections.origin("job_runs") == "plug-in job_runs of candlekeep-desk"
    assert found["runs"] is builtin.RUNS and sections.origin("runs") == "built-in"
    problems = {f.entry_point: f.problem for f in sections.plugin_failures()}
    assert problems == {
        "not_a_section": "got a function; a candlekeep.report_sections entry point must "
                         "name a Section (candlekeep.reports.sections.Section)",
        "runs": "report section 'runs' is built in; choose another name",
        "job_runs_again": "report section 'job_runs' is already registered (plug-in "
                          "job_runs of candlekeep-desk); choose another name",
        "gone": "ModuleNotFoundError: No module named 'tests.reports.no_such_module'",
    }
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 4 and all(m.startswith("skipped report section plug-in ")
                                    for m in logged)

    # a report naming a section that is not there says which plug-ins were skipped
    config = tmp_path / "candlekeep.yaml"
    config.write_text(yaml.safe_dump(config_dict(free_port(), extra_sections=["desk"])))
    with pytest.raises(ConfigError) as err:
        sections.resolve(load_config(config), "daily")
    text = str(err.value)
    assert "reports.daily.sections[5]: unknown section 'desk'" in text
    assert "known sections: coverage, errors, freshness, gaps, hyperliquid_missing_positions, " \
           "hyperliquid_targets, hyperliquid_trades, job_runs, runs" in text
    assert "plug-ins skipped: report section plug-in 'not_a_section' " \
           f"({EXAMPLE}:NOT_A_SECTION): got a function" in text


def test_the_listing_shows_skipped_plugins(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = _dist(tmp_path / "site-packages", {"runs": f"{EXAMPLE}:RUNS"})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), str(REPO)]))
    out = cli(None, "report", "sections")
    assert out.returncode == 0, out.stderr
    assert "job_runs" not in out.stdout and "freshness" in out.stdout
    err = " ".join(out.stderr.split())
    assert f"skipped: report section plug-in 'runs' ({EXAMPLE}:RUNS): report section " \
           "'runs' is built in; choose another name" in err
