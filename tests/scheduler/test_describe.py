import pytest

from candlekeep.scheduler.describe import describe


@pytest.mark.parametrize(("expr", "words"), [
    ("* * * * *", "every minute"),
    ("*/5 * * * *", "every 5 minutes"),
    ("0 * * * *", "every hour"),
    ("15 * * * *", "every hour at :15"),
    ("0 */2 * * *", "every 2 hours"),
    ("0 2 * * *", "at 02:00 every day"),
    ("30 8 * * 1-5", "at 08:30 on weekdays"),
    ("0 8 * * 1", "at 08:00 every Monday"),
    ("0 9 * * 2-4", "at 09:00 on Tuesday to Thursday"),
    ("0 0 1 * *", "at 00:00 on day 1 of every month"),
    ("0 0 8,20 * * *", "at 08:00 and 20:00 every day"),
    ("* * * * * *", "every second"),
    ("*/10 * * * * *", "every 10 seconds"),
    ("@daily", "at 00:00 every day"),
])
def test_common_patterns_in_words(expr: str, words: str) -> None:
    assert describe(expr) == words


def test_timezone_is_named_and_unknown_patterns_fall_back_to_the_expression() -> None:
    assert describe("0 2 * * *", "Europe/Berlin") == "at 02:00 every day (Europe/Berlin)"
    assert describe("1-5 * * * *") == "cron 1-5 * * * *"
