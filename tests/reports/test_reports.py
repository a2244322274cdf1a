"""E-mail reports end to end: data put in by real jobs on the sim exchange, the report sent
by the CLI through the run path to a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import yaml

from candlekeep.config import load_config
from candlekeep.core.timeutil import fmt_ms
from candlekeep.jobs.runtime import Runtime
from candlekeep.reports import sections
from candlekeep.reports.outbox import KEEP, Box, Mailroom
from candlekeep.reports.sections import (
    Column,
    Format,
    Section,
    register_section,
    sql_rows,
)
from candlekeep.scheduler.manual import run_now
from candlekeep.scheduler.validate import load_jobs
from candlekeep.state.db import StateDB
from candlekeep.state.statuses import RunStatus
from tests.cli.conftest import cli
from tests.reports.conftest import (
    FAILING_ERROR,
    FAILING_JOB,
    Inbox,
    config_dict,
    run_jobs,
    write_config,
)
from tests.waiting import free_port


def _parts(msg: EmailMessage) -> tuple[EmailMessage, EmailMessage, EmailMessage, EmailMessage]:
    """The four leaves of alternative(text, related(html, png)), asserting that shape."""
    assert msg.get_content_type() == "multipart/alternative"
    text, related = msg.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, png = related.iter_parts()
    assert html.get_content_type() == "text/html"
    assert png.get_content_type() == "image/png"
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    assert isinstance(png, EmailMessage) and isinstance(related, EmailMessage)
    return text, related, html, png


def _lf(text: str) -> str:
    """Bodies as sent over SMTP end their lines in CRLF."""
    return text.replace("\r\n", "\n")


def _files(site: Path, box: str) -> list[Path]:
    folder = site / "data" / "reports" / box
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []


def _report_runs(site: Path) -> list[tuple[str, str | None]]:
    state = StateDB(f"sqlite:///{site / 'data' / 'state.db'}")
    try:
        return [(r.status, r.error) for r in state.list_runs(job="report:daily")]
    finally:
        state.dispose()


def test_a_report_reaches_the_mail_server_with_every_section(site: Path,
                                                             inbox: Inbox) -> None:
    config = write_config(site, inbox.port)
    out = cli(config, "report", "send", "daily")
    assert out.returncode == 0, out.stderr

    (got,) = inbox.messages
    msg = got.message
    assert got.rcpt_tos == ["ops@example.org", "desk@example.org"]
    assert msg["From"] == "candlekeep@example.org"
    assert msg["To"] == "ops@example.org, desk@example.org"
    subject = str(msg["Subject"])
    assert subject.startswith("[ck] daily ")
    assert "1 failed run" in subject and "freshness 1 missing" in subject
    assert msg["X-Candlekeep-Report"] == "daily"

    text, _related, html, png = _parts(msg)
    cid = str(png["Content-ID"]).strip("<>")
    body = _lf(html.get_content())
    assert png.get_content()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f'src="cid:{cid}"' in body

    plain = _lf(text.get_content())
    for title in ("Freshness", "Runs", "Open gaps", "Coverage", "Top errors"):
        assert f"\n{title}\n" in plain
    lines = plain.splitlines()
    # freshness: the series never fetched is missing, the fetched ones are ok
    assert any("sim:SOL/USDT:1h" in ln and " missing " in ln for ln in lines)
    assert any("sim:BTC/USDT:1m" in ln and " ok " in ln for ln in lines)
    # runs: one line per job that ran, with its counts
    assert any(ln.split()[:4] == ["backfill-1m", "1", "0", "0"] for ln in lines)
    assert any(ln.split()[:4] == [FAILING_JOB, "0", "1", "0"] for ln in lines)
    # gaps: each open gap the scan recorded (the sim's exchange-side holes)
    state = StateDB(f"sqlite:///{site / 'data' / 'state.db'}")
    open_gaps = state.list_gaps(status=["open"])
    state.dispose()
    assert open_gaps
    for g in open_gaps:
        assert any(str(g.series) in ln and fmt_ms(g.gap_start)[:16] in ln for ln in lines)
    # the failed job's error, as text in the plain part and escaped in the HTML
    assert FAILING_ERROR in plain
    assert "&lt;script&gt;alert(1)&lt;/script&gt; disk &amp; quota exceeded" in body
    assert "export&lt;b&gt;" in body
    assert "<script>" not in body and "<b>" not in body.replace("<body", "")

    # delivered: nothing left in the outbox, a copy filed as sent, the run recorded
    assert _files(site, "outbox") == []
    assert len(_files(site, "sent")) == 1
    assert _report_runs(site) == [("success", None)]


def test_dry_run_writes_a_parseable_eml_and_sends_nothing(site: Path, inbox: Inbox) -> None:
    config = write_config(site, inbox.port)
    out = cli(config, "report", "send", "daily", "--dry-run", "--to", "me@example.org")
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path.parent == site / "data" / "reports" / "drafts"
    assert path.name.startswith("daily-") and path.suffix == ".eml"
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["To"] == "me@example.org"
    assert str(msg["Subject"]).startswith("[ck] daily ")
    _parts(msg)
    assert inbox.messages == []
    assert _files(site, "outbox") == []
    assert _report_runs(site) == []  # a dry run leaves no history


def test_smtp_down_fails_the_run_keeps_the_message_and_resend_delivers_it(
        site: Path, inbox: Inbox) -> None:
    down = free_port()
    config = write_config(site, down)
    out = cli(config, "report", "send", "daily")
    assert out.returncode == 1
    assert f"mail server 127.0.0.1:{down} failed" in out.stderr
    (kept,) = _files(site, "outbox")
    assert kept.name.startswith("daily-")
    assert str(kept) in " ".join(out.stderr.split())  # the error says where it is kept
    ((status, error),) = _report_runs(site)
    assert status == "failed" and error is not None and f"127.0.0.1:{down}" in error
    written = email.message_from_bytes(kept.read_bytes(), policy=email.policy.default)
    assert str(written["Subject"]).startswith("[ck] daily ")

    config = write_config(site, inbox.port)  # the server is back
    out = cli(config, "report", "resend")
    assert out.returncode == 0, out.stderr
    (got,) = inbox.messages
    assert got.message["Message-ID"] == written["Message-ID"]
    assert got.rcpt_tos == ["ops@example.org", "desk@example.org"]
    _parts(got.message)
    assert _files(site, "outbox") == []
    assert [p.name for p in _files(site, "sent")] == [kept.name]


def test_an_unknown_section_is_a_config_error_naming_it(site: Path) -> None:
    config = write_config(site, free_port(), extra_sections=["positons"])
    out = cli(config, "report", "send", "daily")
    assert out.returncode == 2
    err = " ".join(out.stderr.split())
    assert "reports.daily.sections[5]: unknown section 'positons'" in err
    assert "known sections: coverage, errors, freshness, gaps, hyperliquid_missing_positions, " \
           "hyperliquid_targets, hyperliquid_trades, runs" in err
    assert _report_runs(site) == []


@pytest.fixture
def custom_sections() -> Iterator[None]:
    """Sections a later dataset would add: one object each, registered; nothing else
    changes. One of them fails to read."""
    register_section(Section(
        name="positions", title="Positions (test)",
        columns=(Column("job"), Column("runs", Format.COUNT)),
        rows=sql_rows("SELECT job, COUNT(*) FROM runs WHERE scheduled_for >= :since "
                      "AND scheduled_for <= :now GROUP BY job ORDER BY job"),
        note="A custom SQL section."))
    register_section(Section(name="broken", title="Broken (test)", columns=(Column("x"),),
                             rows=sql_rows("SELECT symbol FROM positions")))
    yield
    for name in ("positions", "broken"):
        sections._SECTIONS.pop(name)


@pytest.mark.usefixtures("custom_sections")
async def test_registered_sections_show_up_and_a_failing_one_costs_only_itself(
        site: Path, inbox: Inbox) -> None:
    config = write_config(site, inbox.port, extra_sections=["positions", "broken"])
    cfg = load_config(config)
    (spec,) = [s for s in load_jobs(cfg) if s.name == "daily"]  # the configured job
    rt = Runtime(cfg)
    try:
        outcome = await run_now(rt, spec)
    finally:
        await rt.aclose()
    assert outcome.status is RunStatus.SUCCESS, outcome.error
    assert outcome.result is not None
    assert outcome.result.warnings == [
        "section broken: OperationalError: no such table: positions"]
    assert sections.origin("positions") == f"registered by {__name__}"
    (got,) = inbox.messages
    text, _related, html, _png = _parts(got.message)
    plain = _lf(text.get_content())
    assert "Positions (test)\n" in plain and "A custom SQL section." in plain
    lines = plain.split("Positions (test)\n", 1)[1].splitlines()
    assert any(ln.split() == ["backfill-1m", "1"] for ln in lines)
    assert any(ln.split() == [FAILING_JOB, "1"] for ln in lines)
    assert "This section could not be read: OperationalError: no such table" in plain
    assert "Positions (test)" in html.get_content()


@pytest.mark.usefixtures("custom_sections")
async def test_every_section_reads_a_postgresql_state_db(tmp_path: Path, inbox: Inbox,
                                                         pg_url: str) -> None:
    """The sections' SQL runs on PostgreSQL too, and a section whose statement fails
    (aborting the transaction there) costs only itself."""
    raw = config_dict(inbox.port, extra_sections=["positions"])
    raw["state"] = pg_url
    raw["reports"]["daily"]["sections"].insert(0, "broken")
    config = tmp_path / "candlekeep.yaml"
    config.write_text(yaml.safe_dump(raw))
    outcomes = await run_jobs(config, "backfill-1m", "scan", "fresh", FAILING_JOB, "daily")
    report = outcomes["daily"]
    assert report.status is RunStatus.SUCCESS, report.error
    assert report.result is not None
    (warning,) = report.result.warnings
    assert warning.startswith('section broken: UndefinedTable: relation "positions" does '
                              "not exist")
    (got,) = inbox.messages
    plain = _lf(_parts(got.message)[0].get_content())
    lines = plain.splitlines()
    assert "freshness 1 missing" in str(got.message["Subject"])
    assert any("sim:SOL/USDT:1h" in ln and " missing " in ln for ln in lines)
    assert any(ln.split()[:4] == ["backfill-1m", "1", "0", "0"] for ln in lines)
    assert any(ln.split() == [FAILING_JOB, "1"] for ln in lines)  # positions, after it
    assert FAILING_ERROR in plain
    assert any(ln.startswith("sim:BTC/USDT:1m") and "%" in ln for ln in lines)  # coverage
    assert "open gap" in str(got.message["Subject"])


def test_kept_messages_never_overwrite_each_other_and_stay_bounded(tmp_path: Path) -> None:
    room = Mailroom.of(tmp_path)
    msg = EmailMessage()
    msg["To"], msg["From"], msg["Subject"] = "a@example.org", "b@example.org", "s"
    msg.set_content("body")
    now = 1_767_225_600_000
    drafts = [room.write(Box.DRAFTS, "daily", msg, now) for _ in range(KEEP + 3)]
    assert len(set(drafts)) == KEEP + 3  # one second, distinct names
    left = sorted(p.name for p in room.folder(Box.DRAFTS).iterdir())
    assert left == sorted(p.name for p in drafts[3:])  # the oldest went
    other = room.write(Box.DRAFTS, "weekly", msg, now)
    assert other.exists() and len(list(room.folder(Box.DRAFTS).iterdir())) == KEEP + 1
    waiting = [room.write(Box.OUTBOX, "daily", msg, now + i * 1000) for i in range(2)]
    assert room.pending() == waiting
    assert room.delivered(waiting[0]) == room.folder(Box.SENT) / waiting[0].name
    assert room.pending() == waiting[1:]
    assert room.delivered(drafts[-1]) is None and drafts[-1].exists()  # not the outbox's


def test_config_example_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example the README shows is a valid config."""
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret")
    raw = yaml.safe_load(README_EXAMPLE)
    raw.update({"data_dir": "data", "stores": {"main": {"type": "duckdb",
                                                        "path": "data/c.duckdb"}}})
    path = tmp_path / "candlekeep.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    assert cfg.reports["daily"].window == 86400.0
    assert [j.type for j in cfg.jobs] == ["report"]


README_EXAMPLE = """
smtp:
  host: smtp.example.com
  port: 587
  security: starttls
  username: candlekeep
  password: ${SMTP_PASSWORD}
  from: candlekeep@example.com
reports:
  daily:
    to: [ops@example.com]
    subject: "[candlekeep] daily"
    window: 24h
    sections: [freshness, runs, gaps, coverage, errors]
jobs:
  - name: daily-report
    type: report
    schedule: "0 7 * * *"
    params: {report: daily}
"""
