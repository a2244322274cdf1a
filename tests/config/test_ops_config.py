"""The operations sections (api, freshness, smtp, alerts, reports): good ones load with
secrets hidden, bad ones name the file, the key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from candlekeep.config import load_config
from candlekeep.core.errors import ConfigError

OPS: dict[str, Any] = {
    "data_dir": "data",
    "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
    "sources": {"sim": {"type": "sim"}},
    "series": [{"source": "sim", "symbols": ["BTC/USDT"], "timeframes": ["1m"]}],
    "jobs": [{"name": "ingest", "type": "ingest", "schedule": "* * * * *"},
             {"name": "daily", "type": "report", "schedule": "0 7 * * *",
              "params": {"report": "daily"}}],
    "api": {"listen": "127.0.0.1:9000", "token": "${CK_API_TOKEN}"},
    "freshness": {"candles": 2, "grace": "2m",
                  "datasets": [{"store": "main", "dataset": "fills", "max_age": "1d",
                                "quiet_hours": ["22:00-06:00"]}]},
    "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none", "from": "ck@example.com",
             "username": "ck", "password": "${CK_SMTP_PASSWORD}"},
    "alerts": {"repeat_every": "30m",
               "channels": {"mail": {"type": "email", "to": ["ops@example.com"]},
                            "slack": {"type": "webhook", "url": "${CK_HOOK}"},
                            "hc": {"type": "heartbeat", "url": "https://hc.example/x",
                                   "jobs": ["ingest"]}},
               "rules": [{"on": "job_failed", "channels": ["mail", "slack"]},
                         {"on": "consecutive_failures", "count": 3, "jobs": ["ingest"],
                          "channels": ["slack"]},
                         {"on": "freshness", "channels": ["mail"]}]},
    "reports": {"daily": {"to": ["desk@example.com"], "subject": "market data"}},
}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CK_API_TOKEN", "tok-123456")
    monkeypatch.setenv("CK_SMTP_PASSWORD", "pw-secret")
    monkeypatch.setenv("CK_HOOK", "https://hooks.example/T000/B000/secret")


def write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "candlekeep.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_operations_config_loads_with_secrets_hidden(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, OPS))
    assert cfg.api is not None and cfg.api.host == "127.0.0.1" and cfg.api.port == 9000
    assert cfg.api.token is not None and cfg.api.token.get_secret_value() == "tok-123456"
    assert cfg.freshness.grace == 120 and cfg.freshness.datasets[0].max_age == 86400
    assert cfg.smtp is not None and cfg.smtp.sender == "ck@example.com"
    assert cfg.smtp.effective_port == 2525
    assert cfg.alerts.repeat_every == 1800 and len(cfg.alerts.rules) == 3
    text = repr(cfg)
    for secret in ("tok-123456", "pw-secret", "/secret"):
        assert secret not in text


def mutate(path: str, value: object) -> dict[str, Any]:
    raw = copy.deepcopy(OPS)
    node: Any = raw
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node[p]
    last = parts[-1]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return raw


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "key", "fix"), [
    ("api.listen", "localhost", "api.listen", "HOST:PORT"),
    ("alerts.rules.0.channels", ["mail", "pager"], "alerts.rules[0].channels[1]", "mail"),
    ("alerts.rules.1.jobs", ["nope"], "alerts.rules[1].jobs[0]", "defined jobs"),
    ("alerts.rules.0.on", "job_exploded", "alerts.rules[0].on", "job_failed"),
    ("alerts.rules.0.channels", ["hc"], "alerts.rules[0].channels[0]", "heartbeat"),
    ("alerts.channels.hc.jobs", ["missing"], "alerts.channels.hc.jobs[0]", "defined jobs"),
    ("alerts.channels.mail.type", "pager", "alerts.channels.mail", "email"),
    ("smtp", _DELETE, "alerts.channels.mail", "smtp:"),
    ("freshness.datasets.0.store", "elsewhere", "freshness.datasets[0].store", "main"),
    ("smtp.security", "tls", "smtp.security", "starttls"),
    ("jobs.1.params", {"report": "weekly"}, "jobs[1].params.report", "daily"),
])
def test_bad_operations_config_names_key_and_fix(tmp_path: Path, path: str, value: object,
                                                 key: str, fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, mutate(path, value)))
    text = str(info.value)
    assert str(tmp_path / "candlekeep.yaml") in text and key in text and fix in text, text


def test_reports_need_a_mail_server(tmp_path: Path) -> None:
    raw = mutate("smtp", _DELETE)
    raw["alerts"] = {}
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, raw))
    assert "reports.daily" in str(info.value) and "smtp:" in str(info.value)


def test_the_example_config_loads_with_its_jobs() -> None:
    from candlekeep.scheduler.validate import load_jobs

    example = Path(__file__).resolve().parents[2] / "examples" / "candlekeep.yaml"
    cfg = load_config(example)
    assert cfg.api is not None and cfg.api.token is None
    assert {s.type for s in load_jobs(cfg)} >= {"ingest", "gaps_scan", "freshness"}
