"""The job-type plug-in contract, through real entry-point metadata (nothing is installed:
a ``.dist-info`` folder on ``sys.path`` is what ``pip install`` would have left)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from candlekeep.config.models import Config
from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import ConfigError
from candlekeep.jobs import registry
from candlekeep.jobs.base import JobContext, JobResult, JobType, Params
from candlekeep.jobs.runner import build_params, invoke
from candlekeep.jobs.runtime import Runtime

BUILTINS = {"backfill", "ingest", "gaps_scan", "gaps_repair", "command"}
EXAMPLE = "tests.plugin_example"

Install = Callable[..., None]


def _forget_example_modules() -> None:
    for name in [m for m in sys.modules if m == EXAMPLE or m.startswith(EXAMPLE + ".")]:
        del sys.modules[name]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """Declares entry points as an installed distribution would, against a registry that
    has not looked for plug-ins yet; the registry is restored afterwards."""
    registry.job_types()  # built-ins register on their first import: into the real registry
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_failures", [])
    _forget_example_modules()  # importing a plug-in is what registers its decorated types

    def write(**entry_points: str) -> None:
        dist = tmp_path / "candlekeep_plugin_example-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: candlekeep-plugin-example\nVersion: 1.0\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (dist / "entry_points.txt").write_text(f"[candlekeep.jobs]\n{lines}")
        monkeypatch.syspath_prepend(str(tmp_path))

    yield write
    _forget_example_modules()


def failures() -> dict[str, str]:
    """Entry point name → problem, as the registry reports them."""
    return {f.entry_point: str(f) for f in registry.plugin_failures()}


def test_decorated_function_and_job_type_object_are_both_plugins(
    install: Install, caplog: pytest.LogCaptureFixture,
) -> None:
    install(example_echo=f"{EXAMPLE}.jobs:echo", example_countdown=f"{EXAMPLE}.jobs:COUNTDOWN")
    with caplog.at_level(logging.ERROR, logger="candlekeep.jobs"):
        types = registry.job_types()
    assert [r.getMessage() for r in caplog.records] == []
    assert failures() == {}
    assert BUILTINS | {"example_echo", "example_countdown"} <= set(types)
    from tests.plugin_example import jobs

    echo = registry.get_job_type("example_echo")
    assert echo is not None and echo.run is jobs.echo and echo.params is jobs.EchoParams
    assert echo.description == "Logs a message (an example plug-in)."
    assert registry.get_job_type("example_countdown") is jobs.COUNTDOWN


async def test_a_plugin_job_runs_like_a_builtin(install: Install, tmp_path: Path) -> None:
    install(example_echo=f"{EXAMPLE}.jobs:echo", example_countdown=f"{EXAMPLE}.jobs:COUNTDOWN")
    with pytest.raises(ConfigError, match=r"params\.volume: Extra inputs are not permitted"):
        build_params("example_echo", {"message": "hi", "volume": 11})
    rt = Runtime(Config(config_path=tmp_path / "candlekeep.yaml", data_dir=tmp_path / "data"),
                 clock=FakeClock(autoadvance=True))

    def ctx(name: str) -> JobContext:
        return JobContext(runtime=rt, job_name=name, log=logging.getLogger(name))

    try:
        echo = registry.get_job_type("example_echo")
        countdown = registry.get_job_type("example_countdown")
        assert echo is not None and countdown is not None
        said = await invoke(echo, ctx("echo"), build_params(
            "example_echo", {"message": "hi", "times": 2}))
        assert said.ok and said.details == {"said": ["hi", "hi"]}
        three = build_params("example_countdown", {"seconds": 3})
        counted = await invoke(countdown, ctx("countdown"), three)
        assert counted.ok and counted.details == {"left": 0}
        stopped = ctx("countdown")
        stopped.cancel.set()
        cancelled = await invoke(countdown, stopped, three)
        assert cancelled.errors == ["cancelled with 3s left"]
    finally:
        await rt.aclose()


@pytest.mark.parametrize(("target", "what"), [
    (f"{EXAMPLE}.broken.clash_decorated:backfill", "backfill"),
    (f"{EXAMPLE}.broken.clash_instance:GAPS_SCAN", "gaps_scan"),
])
def test_a_plugin_named_like_a_builtin_is_an_error_and_the_builtin_stays(
    install: Install, caplog: pytest.LogCaptureFixture, target: str, what: str,
) -> None:
    from candlekeep.jobs import backfill, gaps

    install(bad=target, example_echo=f"{EXAMPLE}.jobs:echo")
    with caplog.at_level(logging.ERROR, logger="candlekeep.jobs"):
        types = registry.job_types()
    assert types["backfill"].run is backfill.backfill
    assert types["gaps_scan"].run is gaps.gaps_scan
    # The failed plug-in contributes nothing; the good one beside it still loads.
    assert "example_before_clash" not in types and "example_echo" in types
    problem = failures()["bad"]
    assert target in problem and f"{what!r}" in problem and "built-in" in problem
    assert any("bad" in r.getMessage() and "built-in" in r.getMessage()
               for r in caplog.records)


def test_register_never_replaces_a_builtin() -> None:
    ingest = registry.get_job_type("ingest")

    async def run(ctx: JobContext, params: Params) -> JobResult:
        return JobResult()

    with pytest.raises(registry.JobTypeError, match=r"'ingest'.*built-in"):
        registry.register(JobType("ingest", Params, run))
    assert registry.get_job_type("ingest") is ingest


def test_two_plugins_with_one_name_keep_the_first_and_report_the_second(
    install: Install,
) -> None:
    install(example_echo=f"{EXAMPLE}.jobs:echo", echo_again=f"{EXAMPLE}.broken.duplicate:ECHO")
    from tests.plugin_example import jobs

    echo = registry.get_job_type("example_echo")
    assert echo is not None and echo.run is jobs.echo
    assert "already registered" in failures()["echo_again"]


@pytest.mark.parametrize(("target", "problem"), [
    (f"{EXAMPLE}.jobs:EchoParams", "must name a JobType or a coroutine function decorated "
                                   "with @job_type(name, Params)"),
    (f"{EXAMPLE}.broken.undecorated:forgot_decorator", "decorated with @job_type"),
    (f"{EXAMPLE}.broken.loose_params:LOOSE", "must forbid unknown keys"),
    (f"{EXAMPLE}.nowhere:echo", "ModuleNotFoundError"),
])
def test_an_entry_point_that_is_not_a_job_type_is_reported_by_name(
    install: Install, target: str, problem: str,
) -> None:
    install(example_echo=f"{EXAMPLE}.jobs:echo", wrong=target)
    assert "example_echo" in registry.job_types()
    assert "example_loose" not in registry.job_types()
    report = failures()["wrong"]
    assert report.startswith(f"job plug-in 'wrong' ({target}): ")
    assert problem in report
