"""Channel settings the loader refuses: a webhook or heartbeat address that is no http(s)
URL (the error names the key and the fix, never the URL: it holds the channel's secret),
and a mail password that would cross the network in clear text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from candlekeep.config import load_config
from candlekeep.core.errors import ConfigError

SECRET = "T000-B000-s3cr3t"


def config(tmp_path: Path, *, hook: str = "https://hooks.example/services/x",
           ping: str = "https://hc.example/ping/x", **smtp: Any) -> Path:
    raw = {
        "data_dir": "data",
        "jobs": [{"name": "ingest", "type": "noop", "schedule": "* * * * *"}],
        "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none",
                 "from": "ck@example.com", **smtp},
        "alerts": {"channels": {"chat": {"type": "webhook", "url": hook},
                                "hc": {"type": "heartbeat", "url": ping, "jobs": ["ingest"]},
                                "mail": {"type": "email", "to": ["ops@example.com"]}},
                   "rules": [{"on": "job_failed", "channels": ["chat", "mail"]}]},
    }
    path = tmp_path / "candlekeep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


@pytest.mark.parametrize("url", [
    f"hooks.example/services/{SECRET}", f"ftp://hooks.example/{SECRET}",
    f"file:///etc/{SECRET}", f"https:///{SECRET}", f"http://[::1/{SECRET}", f"javascript:{SECRET}",
])
@pytest.mark.parametrize("channel", ["chat", "hc"])
def test_a_channel_url_must_be_http_or_https(tmp_path: Path, url: str, channel: str) -> None:
    kind = "hook" if channel == "chat" else "ping"
    text = refused(config(tmp_path, **{kind: url}))
    assert f"alerts.channels.{channel}.url" in text and "http:// or https://" in text, text
    assert SECRET not in text and url not in text


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "HTTPS://hooks.example/x?k=1"])
def test_http_and_https_channel_urls_load(tmp_path: Path, url: str) -> None:
    cfg = load_config(config(tmp_path, hook=url, ping=url))
    assert cfg.alerts.channels["chat"].url.get_secret_value() == url  # type: ignore[union-attr]


def test_a_password_is_never_sent_in_clear_text_beyond_this_host(tmp_path: Path) -> None:
    text = refused(config(tmp_path, host="mail.example.com", username="ck",
                          password="pw-" + SECRET))
    assert "smtp.password" in text and "clear text" in text and "starttls or ssl" in text
    assert SECRET not in text


@pytest.mark.parametrize(("host", "security", "password"), [
    ("127.0.0.1", "none", "pw"),  # a relay on this host
    ("localhost", "none", "pw"),
    ("::1", "none", "pw"),
    ("mail.example.com", "starttls", "pw"),
    ("mail.example.com", "ssl", "pw"),
    ("mail.example.com", "none", None),  # an open relay inside the network: no password
])
def test_mail_settings_that_keep_the_password_safe_load(tmp_path: Path, host: str,
                                                        security: str,
                                                        password: str | None) -> None:
    login = {"username": "ck", "password": password} if password else {}
    cfg = load_config(config(tmp_path, host=host, security=security, **login))
    assert cfg.smtp is not None and cfg.smtp.host == host
