from pathlib import Path
from typing import Any

import pytest

from candlekeep.config import parse_config
from candlekeep.core.errors import ConfigError
from candlekeep.scheduler.validate import load_jobs, validate_jobs


def cfg(tmp_path: Path, jobs: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_config({"data_dir": "data", "jobs": jobs, **extra},
                        str(tmp_path / "candlekeep.yaml"), tmp_path)


def err(tmp_path: Path, jobs: list[dict[str, Any]], **extra: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate_jobs(cfg(tmp_path, jobs, **extra))
    return info.value


CMD = {"name": "a", "type": "command", "schedule": "*/5 * * * *",
       "params": {"argv": ["true"]}}


def test_a_good_job_becomes_a_spec(tmp_path: Path) -> None:
    (spec,) = load_jobs(cfg(tmp_path, [{**CMD, "misfire": "catch_up", "misfire_grace": "10m",
                                        "timeout": "4m", "retries": {"attempts": 3}}]))
    assert spec.trigger is not None and spec.trigger.expr == "*/5 * * * *"
    assert spec.misfire == "catch_up" and spec.grace_ms == 600_000 and spec.timeout_s == 240
    assert spec.retries.attempts == 3
    assert spec.params.argv == ["true"]  # type: ignore[attr-defined]


def test_unknown_job_type_lists_the_valid_ones(tmp_path: Path) -> None:
    e = err(tmp_path, [{**CMD, "type": "ingset"}])
    assert e.key == "jobs[0].type"
    assert "unknown job type 'ingset'" in e.problem
    assert "command" in e.fix and "ingest" in e.fix


def test_bad_cron_names_the_key_and_says_why(tmp_path: Path) -> None:
    e = err(tmp_path, [CMD, {**CMD, "name": "b", "schedule": "*/5 * * *"}])
    assert e.key == "jobs[1].schedule"
    assert "4 fields" in e.problem
    e = err(tmp_path, [{**CMD, "schedule": "0 25 * * *"}])
    assert "out of range" in e.problem


def test_bad_timezones(tmp_path: Path) -> None:
    assert err(tmp_path, [{**CMD, "timezone": "Europe/Nowhere"}]).key == "jobs[0].timezone"
    assert err(tmp_path, [CMD], timezone="Moon/Base").key == "timezone"


def test_unknown_param_is_named_with_the_valid_ones(tmp_path: Path) -> None:
    e = err(tmp_path, [{**CMD, "params": {"argv": ["x"], "cwdd": "."}}])
    assert e.key == "jobs[0].params.cwdd"
    assert "unknown param 'cwdd'" in e.problem
    assert "argv" in e.fix and "cwd" in e.fix


def test_missing_and_mistyped_params(tmp_path: Path) -> None:
    e = err(tmp_path, [{**CMD, "params": {}}])
    assert e.key == "jobs[0].params.argv" and "required" in e.problem
    e = err(tmp_path, [{**CMD, "params": {"argv": []}}])
    assert e.key == "jobs[0].params.argv"


def test_bad_duration_is_caught_by_the_config_loader(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        cfg(tmp_path, [{**CMD, "timeout": "4 minutes"}])
    assert info.value.key == "jobs[0].timeout"


def test_param_errors_use_config_spellings_and_item_indices(tmp_path: Path) -> None:
    sync = {"name": "s", "type": "sync", "schedule": "* * * * *",
            "params": {"to": "a", "tables": ["x"]}}
    e = err(tmp_path, [sync], stores={"a": {"type": "duckdb", "path": "a.duckdb"}})
    assert e.key == "jobs[0].params.from" and "from" in e.fix.split(": ")[1].split(", ")
    assert "from_" not in e.fix
    bad = {**sync, "params": {"from": "a", "to": "a", "tables": [{"name": "x", "bogus": 1}]}}
    e = err(tmp_path, [bad], stores={"a": {"type": "duckdb", "path": "a.duckdb"}})
    assert e.key == "jobs[0].params.tables[0].bogus"
