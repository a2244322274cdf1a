"""Units for the system's own service managers and schedulers.

Either the daemon as a service (systemd unit, launchd agent), or, for users who prefer the
system scheduler, one timer / agent / crontab line per job calling ``candlekeep run JOB
--timer`` (the run stands for the tick the timer fired for: recorded for it, counted in
SLOs, and skipped if a daemon already ran it).
Paths are absolute (this interpreter, the config file) because service managers run with
neither our working folder nor our PATH.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from xml.sax.saxutils import escape

from croniter import croniter

from candlekeep.config.models import Config
from candlekeep.core.errors import CandlekeepError
from candlekeep.scheduler.control import log_path
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.triggers import CronTrigger

CRON_BEGIN = "# >>> candlekeep jobs (managed by 'candlekeep install crontab') >>>"
CRON_END = "# <<< candlekeep jobs <<<"
_DOW = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]


class InstallError(CandlekeepError):
    """A schedule the target scheduler cannot express."""


@dataclass(frozen=True, slots=True)
class Output:
    """Files to write (name → text) and what to tell the user."""

    files: dict[str, str]
    hint: str


def config_file(config: Config) -> Path:
    if config.config_path is None:
        raise InstallError("the config was not loaded from a file; pass --config PATH")
    return Path(config.config_path).resolve()


def base_argv(config: Config) -> list[str]:
    return [str(Path(sys.executable).absolute()), "-m", "candlekeep", "--config",
            str(config_file(config))]


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./:=@%+," for c in arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def _cmdline(argv: list[str]) -> str:
    return " ".join(_quote(a) for a in argv)


def _jobs(specs: list[JobSpec]) -> list[JobSpec]:
    return [s for s in specs if s.scheduled]


def _unit_name(job: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in job)
    return f"candlekeep-{safe}"


def job_log(config: Config, job: str) -> Path:
    return log_path(config).parent / "jobs" / f"{job}.log"


# -- cron fields ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Expanded:
    second: list[int] | None  # None means every value
    minute: list[int] | None
    hour: list[int] | None
    dom: list[int] | None
    month: list[int] | None
    dow: list[int] | None


def _expand(trigger: CronTrigger) -> _Expanded:
    f = trigger.fields
    ex = croniter(f.croniter_expr, 0.0, second_at_beginning=f.has_seconds).expanded
    fields: list[list[int] | None] = []
    for values in ex:
        if values == ["*"]:
            fields.append(None)
        elif all(isinstance(v, int) for v in values):
            fields.append(sorted({int(v) % 7 if len(fields) == 4 else int(v)
                                  for v in values}))
        else:
            raise InstallError(f"schedule {trigger.expr!r} uses {values!r}, which the system "
                               "scheduler cannot express; use the candlekeep daemon")
    second = fields[5] if len(fields) > 5 else [0]
    out = _Expanded(second, fields[0], fields[1], fields[2], fields[3], fields[4])
    if out.dom is not None and out.dow is not None:
        raise InstallError(f"schedule {trigger.expr!r} restricts both day of month and "
                           "weekday (cron runs on either); split it into two jobs or use "
                           "the candlekeep daemon")
    return out


def _compress(values: list[int], names: list[str] | None = None) -> str:
    """``0,15,30`` or ``1..5`` (systemd calendar syntax)."""
    def label(v: int) -> str:
        return names[v] if names else f"{v:02d}"

    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{label(values[i])}..{label(values[j])}")
        else:
            parts.extend(label(v) for v in values[i:j + 1])
        i = j + 1
    return ",".join(parts)


def on_calendar(trigger: CronTrigger) -> str:
    """The systemd ``OnCalendar=`` value for a cron schedule (with its timezone)."""
    e = _expand(trigger)

    def part(values: list[int] | None) -> str:
        return "*" if values is None else _compress(values)

    dow = "" if e.dow is None else _compress(e.dow, _DOW) + " "
    return (f"{dow}*-{part(e.month)}-{part(e.dom)} "
            f"{part(e.hour)}:{part(e.minute)}:{part(e.second)} {trigger.timezone}")


# -- systemd -------------------------------------------------------------------------


def systemd_daemon(config: Config) -> Output:
    argv = [*base_argv(config), "start"]
    cfg = config_file(config)
    unit = f"""[Unit]
Description=candlekeep scheduler daemon ({cfg})
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
WorkingDirectory={cfg.parent}
ExecStart={_cmdline(argv)}
Restart=on-failure
RestartSec=10
# 'candlekeep stop' semantics: SIGTERM, running jobs get time to finish, then are cancelled.
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=90
# The daemon logs to {log_path(config)} (rotated); the journal gets start-up errors.

[Install]
WantedBy=default.target
"""
    return Output({"candlekeep.service": unit},
                  "systemctl --user daemon-reload && systemctl --user enable --now "
                  "candlekeep.service")


def systemd_timers(config: Config, specs: list[JobSpec]) -> Output:
    files: dict[str, str] = {}
    cfg = config_file(config)
    names = []
    for s in _jobs(specs):
        assert s.trigger is not None
        name = _unit_name(s.name)
        logf = job_log(config, s.name)
        files[f"{name}.service"] = f"""[Unit]
Description=candlekeep job {s.name}

[Service]
Type=oneshot
WorkingDirectory={cfg.parent}
ExecStartPre=/bin/mkdir -p {logf.parent}
ExecStart={_cmdline([*base_argv(config), "run", s.name, "--timer"])}
StandardOutput=append:{logf}
StandardError=append:{logf}
"""
        files[f"{name}.timer"] = f"""[Unit]
Description=candlekeep job {s.name}: {s.trigger.expr}

[Timer]
OnCalendar={on_calendar(s.trigger)}
AccuracySec=1s
Persistent=true

[Install]
WantedBy=timers.target
"""
        names.append(f"{name}.timer")
    return Output(files, "systemctl --user daemon-reload && systemctl --user enable --now "
                  + " ".join(names))


# -- launchd -------------------------------------------------------------------------


def _plist(label: str, argv: list[str], extra: str, out: Path) -> str:
    args = "\n".join(f"        <string>{escape(a)}</string>" for a in argv)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>{escape(label)}</string>
    <key>ProgramArguments</key>
    <array>
{args}
    </array>
    <key>WorkingDirectory</key>
    <string>{escape(str(out.parent))}</string>
{extra}    <key>StandardOutPath</key>
    <string>{escape(str(out))}</string>
    <key>StandardErrorPath</key>
    <string>{escape(str(out))}</string>
</dict>
</plist>
"""


def launchd_daemon(config: Config) -> Output:
    label = "org.candlekeep.daemon"
    extra = """    <key>RunAtLoad</key>
    <true/>
    <key>KeepAlive</key>
    <dict>
        <key>SuccessfulExit</key>
        <false/>
    </dict>
"""
    out = log_path(config).parent / "launchd.out"
    plist = _plist(label, [*base_argv(config), "start"], extra, out)
    return Output({f"{label}.plist": plist},
                  f"launchctl load -w ~/Library/LaunchAgents/{label}.plist")


def _calendar_dicts(trigger: CronTrigger) -> str:
    period = trigger.period_ms
    e = _expand(trigger)
    if e.second != [0]:
        if period is None:
            raise InstallError(f"schedule {trigger.expr!r} has seconds launchd cannot "
                               "express; use the candlekeep daemon")
        return f"    <key>StartInterval</key>\n    <integer>{period // 1000}</integer>\n"
    keys = [("Minute", e.minute), ("Hour", e.hour), ("Day", e.dom), ("Month", e.month),
            ("Weekday", e.dow)]
    fixed = [(k, v) for k, v in keys if v is not None]
    combos = list(product(*[v for _, v in fixed])) if fixed else [()]
    if len(combos) > 1000:
        raise InstallError(f"schedule {trigger.expr!r} needs {len(combos)} launchd calendar "
                           "entries; use the candlekeep daemon")
    items = []
    for combo in combos:
        body = "".join(f"            <key>{k}</key>\n            <integer>{v}</integer>\n"
                       for (k, _), v in zip(fixed, combo, strict=True))
        items.append(f"        <dict>\n{body}        </dict>\n")
    note = ("" if trigger.timezone == "UTC" else
            f"    <!-- launchd uses the machine's local time; this schedule is in "
            f"{escape(trigger.timezone)} -->\n")
    return (f"{note}    <key>StartCalendarInterval</key>\n    <array>\n{''.join(items)}"
            "    </array>\n")


def launchd_jobs(config: Config, specs: list[JobSpec]) -> Output:
    files: dict[str, str] = {}
    labels = []
    for s in _jobs(specs):
        assert s.trigger is not None
        label = f"org.candlekeep.job.{_unit_name(s.name).removeprefix('candlekeep-')}"
        files[f"{label}.plist"] = _plist(label, [*base_argv(config), "run", s.name, "--timer"],
                                         _calendar_dicts(s.trigger), job_log(config, s.name))
        labels.append(label)
    return Output(files, "for each: launchctl load -w ~/Library/LaunchAgents/LABEL.plist ("
                  + ", ".join(labels) + ")")


# -- crontab -------------------------------------------------------------------------


def crontab_block(config: Config, specs: list[JobSpec]) -> str:
    cfg = config_file(config)
    lines = [CRON_BEGIN,
             f"# config: {cfg}; logs: {job_log(config, 'JOB').parent}/JOB.log"]
    for s in _jobs(specs):
        assert s.trigger is not None
        f = s.trigger.fields
        if f.has_seconds and f.second != "0":
            lines.append(f"# {s.name}: {s.trigger.expr!r} has a seconds field cron cannot run; "
                         "use the candlekeep daemon for it")
            continue
        logf = job_log(config, s.name)
        expr = f"{f.minute} {f.hour} {f.dom} {f.month} {f.dow}"
        if s.trigger.timezone != "UTC":
            lines.append("# CRON_TZ is honoured by cronie; Debian's cron uses the system zone")
        lines.append(f"CRON_TZ={s.trigger.timezone}")
        cmd = (f"cd {_quote(str(cfg.parent))} && mkdir -p {_quote(str(logf.parent))} && "
               f"{_cmdline([*base_argv(config), 'run', s.name, '--timer'])} >> "
               f"{_quote(str(logf))} 2>&1")
        lines.append(f"{expr} {cmd}")
    lines.append(CRON_END)
    return "\n".join(lines) + "\n"


def merge_crontab(existing: str, block: str) -> str:
    """``existing`` with our managed block replaced (or appended)."""
    lines = existing.splitlines()
    if CRON_BEGIN in lines and CRON_END in lines:
        a, b = lines.index(CRON_BEGIN), lines.index(CRON_END)
        kept = lines[:a] + lines[b + 1:]
    else:
        kept = lines
    text = "\n".join(kept).rstrip("\n")
    return (text + "\n" if text else "") + block


def write_crontab(block: str) -> None:
    current = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    existing = current.stdout if current.returncode == 0 else ""
    subprocess.run(["crontab", "-"], input=merge_crontab(existing, block), text=True,
                   check=True)


def write_files(out: Output, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in out.files.items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written


def default_folder(target: str) -> Path:
    if target == "systemd":
        return Path.home() / ".config" / "systemd" / "user"
    return Path.home() / "Library" / "LaunchAgents"
