"""How channels carry a message: Slack's text never pings anyone, whatever the outside
text it quotes (an exchange's error, a symbol) says."""

from __future__ import annotations

from candlekeep.alerts import compose, render
from candlekeep.alerts.compose import RunFacts, Where
from candlekeep.state.statuses import RunStatus

NOW = 1_767_225_600_000
SAID = ("exchange said: @everyone @here @Channel @all <!channel> <!here|here> <!everyone> "
        "<@U024BE7LH> <@&1234> (@ops) x@here, write to ops@example.org")


def test_slack_text_quotes_mentions_without_pinging() -> None:
    run = RunFacts("ingest @everyone", RunStatus.FAILED, 7, 1, SAID, NOW, "n1")
    text = render.slack(compose.job_failed(run, Where()))["text"]
    for ping in ("@everyone", "@here", "@Channel", "@all", "<!", "<@", "@U024", "@&", "@ops"):
        assert ping not in text, (ping, text)
    # still readable: the mention shows as written, with an invisible space after its @
    assert "@\u200beveryone @\u200bhere" in text and "x@\u200bhere" in text
    assert "&lt;!channel&gt;" in text and "&lt;@\u200bU024BE7LH&gt;" in text
    assert "*job ingest @\u200beveryone failed*" in text
    assert "write to ops@example.org" in text  # an address is no mention
