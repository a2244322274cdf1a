"""Usage headers of every dialect, read into one Usage."""

from __future__ import annotations

from email.utils import formatdate

from candlekeep.sources.usage_headers import Usage, parse_retry_after, parse_usage

NOW = 1_700_000_000.0


def test_binance_used_weight_takes_the_longest_window_and_ignores_order_counts() -> None:
    u = parse_usage({"X-MBX-USED-WEIGHT-1M": "120", "x-mbx-used-weight-1s": "7",
                     "X-MBX-ORDER-COUNT-10S": "3", "x-mbx-used-weight": "120"}, NOW)
    assert u == Usage(used=120, window_s=60.0)
    assert parse_usage({"x-mbx-used-weight-10s": "9"}, NOW).window_s == 10.0
    assert parse_usage({"X-MBX-USED-WEIGHT-1H": "x"}, NOW).empty


def test_x_ratelimit_headers_give_used_from_limit_and_remaining() -> None:
    u = parse_usage({"x-ratelimit-limit": "30", "x-ratelimit-remaining": "12",
                     "x-ratelimit-reset": "42"}, NOW)
    assert (u.used, u.limit, u.remaining, u.reset_s) == (18, 30, 12, 42.0)


def test_an_epoch_reset_becomes_seconds_from_now() -> None:
    u = parse_usage({"X-RateLimit-Reset": str(int(NOW) + 25)}, NOW)
    assert u.reset_s == 25.0
    assert parse_usage({"x-ratelimit-reset": str(int(NOW) - 5)}, NOW).reset_s == 0.0


def test_ietf_separate_fields_and_policy_window() -> None:
    u = parse_usage({"RateLimit-Limit": "100", "RateLimit-Remaining": "40",
                     "RateLimit-Reset": "7", "RateLimit-Policy": "100;w=60"}, NOW)
    assert (u.used, u.limit, u.remaining, u.reset_s, u.window_s) == (60, 100, 40, 7.0, 60.0)


def test_ietf_combined_field_both_drafts() -> None:
    old = parse_usage({"RateLimit": "limit=100, remaining=50, reset=5"}, NOW)
    assert (old.limit, old.remaining, old.reset_s, old.used) == (100, 50, 5.0, 50)
    new = parse_usage({"RateLimit": '"default";r=50;t=30',
                       "RateLimit-Policy": '"default";q=100;w=60'}, NOW)
    assert (new.limit, new.remaining, new.reset_s, new.window_s, new.used) == \
        (100, 50, 30.0, 60.0, 50)


def test_retry_after_seconds_or_http_date() -> None:
    assert parse_usage({"Retry-After": "17"}, NOW).retry_after_s == 17.0
    assert parse_retry_after(formatdate(NOW + 90, usegmt=True), NOW) == 90.0
    assert parse_retry_after(formatdate(NOW - 90, usegmt=True), NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("-3", NOW) == 0.0
    assert parse_retry_after(None, NOW) is None


def test_garbage_and_absent_headers_give_an_empty_usage() -> None:
    assert parse_usage(None, NOW).empty
    assert parse_usage({"x-ratelimit-remaining": "nan", "RateLimit-Limit": "inf",
                        "x-ratelimit-limit": "-1", "content-type": "json"}, NOW).empty
