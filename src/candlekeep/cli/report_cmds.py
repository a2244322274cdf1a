"""``candlekeep report …``: send a configured e-mail report now, send again what the mail
server did not take, list the sections a report may name.

``send`` runs the ``report`` job through the one run path, as the data commands do, so a
report sent by hand is in the history like a scheduled one. The report modules (Jinja2,
matplotlib) are imported when a command runs, not for ``--help``.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape

from candlekeep.cli import common
from candlekeep.cli.common import console, err_console, friendly_errors, print_json

report_app = typer.Typer(help="E-mail reports (reports: in the config): send one now, "
                              "resend kept ones.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")

    @report_app.command("send")
    @friendly_errors
    def send_cmd(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="A report under reports: in the config."),
        to: list[str] | None = typer.Option(
            None, "--to", metavar="ADDR",
            help="Send to this address instead of the report's own (repeatable)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Write the message as a .eml "
                                     "file and print its path; send nothing."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Send a report now (what a job of type report does on its schedule)."""
        from candlekeep.cli.data_cmds import run_job
        from candlekeep.reports.mailer import check

        check(common.state(ctx).config(), name, to)  # a config error is exit 2, no run
        t0 = time.monotonic()
        res = common.run(run_job(ctx, "report", {"report": name, "to": to or None},
                                 dry_run=dry_run, show_progress=False,
                                 name=f"report:{name}"))
        d = res.details
        if as_json:
            print_json({"ok": res.ok, "errors": res.errors, "warnings": res.warnings,
                        **d, "elapsed_s": round(time.monotonic() - t0, 3)})
        else:
            for w in res.warnings:
                err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
            for e in res.errors:
                err_console.print(f"[red]error:[/] {escape(e)}", highlight=False,
                                  soft_wrap=True)
            if res.ok and dry_run:
                err_console.print(f"not sent (dry run): {escape(d['subject'])}",
                                  highlight=False)
                typer.echo(d["path"])
            elif res.ok:
                console.print(f"report {escape(name)} sent to {escape(', '.join(d['to']))}: "
                              f"{escape(d['subject'])}", highlight=False, soft_wrap=True)
        if not res.ok:
            raise typer.Exit(1)

    @report_app.command("resend")
    @friendly_errors
    def resend_cmd(
        ctx: typer.Context,
        files: list[Path] | None = typer.Argument(
            None, help=".eml files to send (default: every message in the outbox, oldest "
                       "first)."),
    ) -> None:
        """Send kept messages again (a report the mail server did not take waits in
        <data_dir>/reports/outbox, one per report and period; older ones are moved to
        reports/unsent, sent only by naming them); each one sent moves to reports/sent."""
        from candlekeep.core.errors import CandlekeepError
        from candlekeep.reports.mailer import resend
        from candlekeep.reports.outbox import Mailroom

        cfg = common.state(ctx).config()
        paths = list(files or Mailroom.of(cfg.data_dir).pending())
        if not paths:
            console.print("the outbox is empty: nothing to resend")
            return
        failed = 0
        for path in paths:
            try:
                msg = resend(cfg, path)
            except CandlekeepError as exc:  # the server, or a file that is no message
                failed += 1
                err_console.print(f"[red]error:[/] {escape(str(path))}: {escape(str(exc))}; "
                                  "kept", highlight=False, soft_wrap=True)
                continue
            if msg is None:
                console.print(f"{escape(str(path.name))} was sent meanwhile (a retry of its "
                              "report sent it)", highlight=False, soft_wrap=True)
                continue
            console.print(f"sent {escape(str(path.name))} to {escape(str(msg['To']))}",
                          highlight=False, soft_wrap=True)
        if failed:
            raise typer.Exit(1)

    @report_app.command("sections")
    @friendly_errors
    def sections_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
        """The sections a report may name (reports.NAME.sections): built in, from installed
        packages (entry points of the group candlekeep.report_sections), and the plug-ins
        skipped, with why."""
        from rich.table import Table

        from candlekeep.reports.sections import origin, plugin_failures, sections

        found = sections()
        failed = plugin_failures()
        if as_json:
            print_json({
                "sections": [{"name": n, "title": s.title, "from": origin(n)}
                             for n, s in sorted(found.items())],
                "skipped": [{"entry_point": f.entry_point, "target": f.target,
                             "problem": f.problem} for f in failed]})
            return
        table = Table("section", "title", "from", title="report sections")
        for name, section in sorted(found.items()):
            table.add_row(escape(name), escape(section.title), escape(origin(name)))
        console.print(table)
        for f in failed:
            err_console.print(f"[yellow]skipped:[/] {escape(str(f))}", highlight=False,
                              soft_wrap=True)
