"""A message as each channel carries it: an e-mail (plain text plus HTML, the HTML from an
autoescaping Jinja2 template, so an error holding ``<script>`` stays text), Slack's
``{"text": …}``, or the whole alert as JSON."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import jinja2

from candlekeep.alerts.message import Message
from candlekeep.core.timeutil import iso_ms

SUBJECT_PREFIX = "[candlekeep]"

_HTML = """\
<!doctype html>
<html><head><meta charset="utf-8"><title>{{ m.title }}</title></head>
<body style="font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1f2328;\
max-width:760px">
<h2 style="margin:0 0 12px;color:{{ '#b42318' if m.firing else '#067647' }}">\
{{ '&#9679;'|safe if m.firing else '&#10003;'|safe }} {{ m.title }}</h2>
<p>{{ m.summary }}</p>
{% if m.listed %}<ul>{% for line in m.listed %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
{% if m.error %}<pre style="background:#f6f8fa;border:1px solid #d0d7de;padding:8px;\
white-space:pre-wrap">{{ m.error }}</pre>{% endif %}
{% if m.facts %}<table style="border-collapse:collapse">\
{% for label, value in m.facts %}<tr><th style="text-align:left;padding:2px 12px 2px 0">\
{{ label }}</th><td>{{ value }}</td></tr>{% endfor %}</table>{% endif %}
{% if m.hint %}<p style="color:#57606a">{{ m.hint }}</p>{% endif %}
</body></html>
"""


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_HTML)


def html(message: Message) -> str:
    return _template().render(m=message)


def email(message: Message, to: Sequence[str], sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = f"{SUBJECT_PREFIX} {message.title}"
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = formatdate(message.time_ms / 1000, usegmt=True)
    mail["Message-ID"] = make_msgid(domain="candlekeep")
    mail.set_content(message.text())
    mail.add_alternative(html(message), subtype="html")
    return mail


_MENTION = re.compile(r"(?<!\w)@|@(?=(?:everyone|here|channel|all)\b)", re.IGNORECASE)
"""An @ that could start a mention: at a word's start, or before a mass-mention word."""
_UNLINK = "@\u200b"


def _slack_escape(text: str) -> str:
    """Slack's three control characters (so ``<!channel>`` is text), and every @ that
    could start a mention followed by an invisible space: error text and symbols come
    from outside, and Discord's /slack endpoint and Mattermost ping on ``@everyone``,
    ``@here`` or ``@all`` as written. Addresses (``ops@example.org``) stay as they are."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION.sub(_UNLINK, text)


def slack(message: Message) -> dict[str, Any]:
    """One readable message: a bold title line, then the plain-text body."""
    mark = "\U0001F534" if message.firing else "\u2705"
    return {"text": f"{mark} *{_slack_escape(message.title)}*\n"
                    f"{_slack_escape(message.text())}"}


def as_json(message: Message) -> dict[str, Any]:
    """The whole alert: rule, state, title, text, time, node and each alert's key and
    subject fields."""
    return {"rule": message.rule.value, "state": message.state.value, "title": message.title,
            "text": message.text(), "time": iso_ms(message.time_ms), "time_ms": message.time_ms,
            "node": message.node, "error": message.error,
            "alerts": [{"key": s.key, "subject": dict(s.fields)} for s in message.subjects]}
