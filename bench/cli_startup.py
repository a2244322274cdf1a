"""CLI start-up time: each ``candlekeep`` command against bare ``import typer, rich``.

Why: every ``candlekeep`` invocation (``list`` in a shell loop, a crontab line, a systemd
timer per job) pays the interpreter start and the imports before it does any work. The
floor for a Typer + Rich CLI is ``python -c "import typer, rich"``; measured in the same run
it is the baseline each command is reported against. Goals: ``--help`` at most 3x the
baseline median, ``list`` at most 5x.

Commands run as users run them: the console script next to this interpreter
(``<venv>/bin/candlekeep``; ``python -m candlekeep`` only if it is missing), in a temporary
folder holding a ``candlekeep.yaml`` with a DuckDB store, a CCXT source (binance), a series
and ingest/backfill/command jobs; ``list`` reads the state DB (SQLite, created by the
warm-up) and needs no network. Each command runs once as a warm-up, then ``--reps`` times,
round-robin across commands so that load from other processes hits all of them alike;
median and min wall time are reported.

Bytecode: by default the children get ``PYTHONPYCACHEPREFIX=<temp dir>`` and no
``PYTHONDONTWRITEBYTECODE``, so the warm-up writes ``.pyc`` files (outside the checkout)
and the timed runs read them, as after a normal install. ``--env-as-is`` keeps the
environment unchanged (with ``PYTHONDONTWRITEBYTECODE=1``, the editable package's modules
are compiled again on every run).

Attribution, for whoever makes start-up faster: each command once more under
``python -X importtime -m candlekeep ...``: which heavy modules it imported (ccxt, duckdb,
the scheduler engine, pyarrow, sqlalchemy, fastapi), the top cumulative import times and
the heaviest third-party packages, and the chain of modules that first imported each heavy
one; and once under an audit hook counting socket connects
and subprocesses started (``list`` must not touch the network).

    python bench/cli_startup.py [--reps N] [--json] [--env-as-is]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASELINE = "import typer, rich"
COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "list": ["list"],
    "status": ["status"],
    "history": ["history"],
    "--version": ["--version"],
}
GOALS = {"--help": 3.0, "list": 5.0}  # max ratio of the command's median to the baseline's
WATCH = ("ccxt", "duckdb", "candlekeep.scheduler.engine", "pyarrow", "sqlalchemy", "fastapi")
TOP = 10

CONFIG = """\
data_dir: data
stores:
  main: {type: duckdb, path: data/candles.duckdb}
sources:
  binance: {type: ccxt, exchange: binance}
series:
  - source: binance
    symbols: [BTC/USDT, ETH/USDT]
    timeframes: [1m, 1h]
    start: 2025-01-01
    store: main
jobs:
  - name: ingest.fast
    type: ingest
    schedule: "*/5 * * * *"
    timeout: 4m
  - name: backfill.nightly
    type: backfill
    schedule: "0 1 * * *"
  - name: legacy.report
    type: command
    schedule: "0 8 * * *"
    params: {argv: [python3, -c, "print('report')"]}
"""

# Runs a command under an audit hook and prints what it did on exit (this run is not
# timed, so the hook's own imports do not matter).
AUDIT = textwrap.dedent("""\
    import atexit, json, sys
    counts = {"socket.connect": 0, "subprocess.Popen": 0, "os.posix_spawn": 0}
    spawned = []
    def hook(event, args):
        if event in counts:
            counts[event] += 1
            if event == "subprocess.Popen":
                spawned.append(str(args[1])[:80])
    sys.addaudithook(hook)
    atexit.register(lambda: sys.stderr.write(
        "BENCH-AUDIT " + json.dumps({"counts": counts, "spawned": spawned}) + "\\n"))
    import runpy
    sys.argv = ["candlekeep", *sys.argv[1:]]
    runpy.run_module("candlekeep", run_name="__main__", alter_sys=True)
""")

IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


@dataclass(slots=True)
class Case:
    """One measured command line and what was learned about it."""

    name: str
    argv: list[str]
    times: list[float] = field(default_factory=list)
    failure: str | None = None

    def stats(self) -> dict[str, float]:
        return {"median_ms": round(statistics.median(self.times) * 1000, 1),
                "min_ms": round(min(self.times) * 1000, 1)}


def child_env(cache: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CANDLEKEEP_CONFIG", None)  # the temp folder's candlekeep.yaml, nothing else
    if cache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def run_once(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str | None]:
    """Wall time of one run, and why it failed (``None`` when it exited 0)."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        return elapsed, f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"
    return elapsed, None


def parse_importtime(stderr: str) -> list[tuple[str, int, int, int]]:
    """``(module, self_us, cumulative_us, depth)`` per line of ``-X importtime`` output."""
    rows = []
    for line in stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            rows.append((m[4], int(m[1]), int(m[2]), (len(m[3]) - 1) // 2))
    return rows


def import_chain(rows: list[tuple[str, int, int, int]], module: str) -> list[str]:
    """Who imported ``module`` first: it, its importer, and so on up to the top level.
    ``-X importtime`` prints a module after everything it imports, one level deeper, so an
    importer is the first later row one level up."""
    idx = next((i for i, r in enumerate(rows) if r[0] == module), None)
    if idx is None:
        return []
    chain, depth = [module], rows[idx][3]
    for name, _, _, d in rows[idx + 1:]:
        if d < depth:
            chain.append(name)
            depth = d
            if d == 0:
                break
    return chain


def import_profile(args: list[str] | None, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """One run under ``-X importtime``: ``-m candlekeep ARGS``, or the baseline for None."""
    tail = ["-c", BASELINE] if args is None else ["-m", "candlekeep", *args]
    proc = subprocess.run([sys.executable, "-X", "importtime", *tail], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    rows = parse_importtime(proc.stderr)
    names = {r[0] for r in rows}
    failed = (f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1][-300:]}"
              if proc.returncode else None)
    stdlib = sys.stdlib_module_names
    third = [r for r in rows if "." not in r[0] and not r[0].startswith("_")
             and r[0] not in stdlib and r[0] != "candlekeep"]
    return {
        "failure": failed,
        "modules": len(names),
        "total_ms": round(sum(r[1] for r in rows) / 1000, 1),
        "imported": {w: w in names for w in WATCH},
        "imported_via": {w: import_chain(rows, w) for w in WATCH if w in names},
        "top_cumulative": [{"module": m, "cumulative_ms": round(c / 1000, 1),
                            "self_ms": round(s / 1000, 1), "depth": d}
                           for m, s, c, d in sorted(rows, key=lambda r: -r[2])[:TOP]],
        "top_third_party": [{"package": m, "cumulative_ms": round(c / 1000, 1)}
                            for m, _, c, _ in sorted(third, key=lambda r: -r[2])[:TOP]],
    }


def audit(args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Socket connects and subprocesses of one run (the network check for ``list``)."""
    proc = subprocess.run([sys.executable, "-c", AUDIT, *args], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    for line in proc.stderr.splitlines():
        if line.startswith("BENCH-AUDIT "):
            data: dict[str, Any] = json.loads(line[len("BENCH-AUDIT "):])
            return data
    return {"error": proc.stderr.strip()[-400:]}


def main(reps: int, env_as_is: bool) -> dict[str, Any]:
    script = Path(sys.executable).parent / "candlekeep"
    if script.exists():
        launcher, how = [str(script)], f"console script {script}"
    else:
        launcher, how = [sys.executable, "-m", "candlekeep"], f"{sys.executable} -m candlekeep"
    with tempfile.TemporaryDirectory(prefix="ck-startup-") as tmp:
        folder = Path(tmp)
        (folder / "candlekeep.yaml").write_text(CONFIG)
        cache = None if env_as_is else folder / "pycache"
        env = child_env(cache)
        cases = [Case("baseline", [sys.executable, "-c", BASELINE])]
        cases += [Case(name, [*launcher, *args]) for name, args in COMMANDS.items()]
        load_before = os.getloadavg()[0]
        for case in cases:  # warm-up: page cache, .pyc files, the state DB for list
            _, case.failure = run_once(case.argv, folder, env)
        for _ in range(reps):
            for case in cases:
                if case.failure is None:
                    elapsed, case.failure = run_once(case.argv, folder, env)
                    case.times.append(elapsed)
        load_after = os.getloadavg()[0]
        profiles = {"baseline": import_profile(None, folder, env)}
        audits: dict[str, Any] = {}
        for name, args in COMMANDS.items():
            profiles[name] = import_profile(args, folder, env)
            audits[name] = audit(args, folder, env)
    base = cases[0]
    base_median = statistics.median(base.times) if base.failure is None else None
    out: dict[str, Any] = {
        "python": sys.version.split()[0], "launcher": how, "reps": reps,
        "bytecode": "as-is environment" if env_as_is else "cached (PYTHONPYCACHEPREFIX)",
        "env_dont_write_bytecode": os.environ.get("PYTHONDONTWRITEBYTECODE"),
        "cpus": os.cpu_count(), "loadavg_1m": [round(load_before, 2), round(load_after, 2)],
        "commands": {}, "goals": {},
    }
    for case in cases:
        entry: dict[str, Any] = {"argv": case.argv, "failure": case.failure,
                                 "imports": profiles[case.name]}
        if case.name in audits:
            entry["audit"] = audits[case.name]
        if case.failure is None:
            entry.update(case.stats())
            if base_median:
                entry["ratio"] = round(statistics.median(case.times) / base_median, 2)
        out["commands"][case.name] = entry
    for name, limit in GOALS.items():
        r = out["commands"][name].get("ratio")  # None: the command (or baseline) failed
        out["goals"][name] = {"max_ratio": limit, "ratio": r,
                              "pass": r is not None and r <= limit}
    return out


def report(r: dict[str, Any]) -> None:
    print(f"CLI start-up: Python {r['python']}, {r['launcher']}, {r['reps']} reps after one "
          f"warm-up, bytecode {r['bytecode']}; {r['cpus']} CPUs, load average "
          f"{r['loadavg_1m'][0]} -> {r['loadavg_1m'][1]}")
    short = {"candlekeep.scheduler.engine": "engine"}
    heads = [short.get(w, w) for w in WATCH]
    print(f"  {'command':22s} {'median':>9s} {'min':>9s} {'ratio':>6s}   imports: "
          + " ".join(heads))
    for name, c in r["commands"].items():
        label = f'python -c "{BASELINE}"' if name == "baseline" else f"candlekeep {name}"
        if c["failure"]:
            print(f"  {label}: FAILED {c['failure']}")
            continue
        flags = " ".join(("yes" if c["imports"]["imported"][w] else "-").ljust(len(h))
                         for w, h in zip(WATCH, heads, strict=True))
        ratio = f"{c['ratio']:.1f}x" if "ratio" in c else "-"
        print(f"  {label if name != 'baseline' else 'baseline':22s} {c['median_ms']:7.0f}ms "
              f"{c['min_ms']:7.0f}ms {ratio:>6s}   {flags}")
    print(f"  (baseline: python -c \"{BASELINE}\")")
    for name, g in r["goals"].items():
        verdict = "PASS" if g["pass"] else "FAIL"
        got = "not measured (failed)" if g["ratio"] is None else f"{g['ratio']}x"
        print(f"  goal candlekeep {name} <= {g['max_ratio']:.0f}x baseline: {got} {verdict}")
    for name, c in r["commands"].items():
        a = c.get("audit", {})
        counts = a.get("counts", {})
        if counts.get("socket.connect") or counts.get("subprocess.Popen"):
            print(f"  candlekeep {name}: {counts['socket.connect']} socket connects, "
                  f"{counts['subprocess.Popen']} subprocesses {a.get('spawned', [])}")
    for name in GOALS:
        imp = r["commands"][name]["imports"]
        if imp["failure"]:
            print(f"  candlekeep {name} under -X importtime FAILED: {imp['failure']}")
            continue
        print(f"  candlekeep {name}: {imp['modules']} modules, {imp['total_ms']:.0f} ms "
              f"importing (under -X importtime); top {TOP} cumulative:")
        for row in imp["top_cumulative"]:
            print(f"    {row['cumulative_ms']:7.1f} ms  (self {row['self_ms']:6.1f})  "
                  f"{'  ' * row['depth']}{row['module']}")
        for w, chain in imp["imported_via"].items():
            via = " <- ".join(chain[1:]) or "(run time, from a function)"
            print(f"    {w} imported via {via}")
        third = ", ".join(f"{p['package']} {p['cumulative_ms']:.0f}"
                          for p in imp["top_third_party"])
        print(f"    heaviest third-party packages (ms, first import, nested included): {third}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=10, help="timed runs per command")
    p.add_argument("--json", action="store_true")
    p.add_argument("--env-as-is", action="store_true",
                   help="do not redirect/enable bytecode caching for the children")
    ns = p.parse_args()
    if not shutil.which("candlekeep", path=str(Path(sys.executable).parent)):
        print("note: no console script next to this interpreter; using python -m candlekeep",
              file=sys.stderr)
    result = main(max(1, ns.reps), ns.env_as_is)
    if ns.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        report(result)
