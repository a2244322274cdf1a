"""Usage headers of every dialect, read into one Usage."""

from __future__ import annotations

from email.utils import formatdate

from candlekeep.sources.usage_headers import Usage, parse_retry_after, parse_usage

NOW = 1_700_000_000.0


def test_binance_used_weight_is_read_per_window_and_ignores_order_counts() -> None:
    u = parse_usage({"X-MBX-USED-WEIGHT-1M": "120", "x-mbx-used-weight-1s": "7",
                     "X-MBX-ORDER-COUNT-10S": "3", "x-mbx-used-weight": "120"}, NOW)
    assert u.windows == ((1.0, 7), (60.0, 120))
    assert parse_usage({"x-mbx-used-weight-10s": "9"}, NOW) == \
        Usage(used=9, window_s=10.0, windows=((10.0, 9),))
    assert parse_usage({"X-MBX-USED-WEIGHT-1H": "x"}, NOW).empty


def test_a_limiter_takes_the_count_of_its_own_window_only() -> None:
    u = parse_usage({"X-MBX-USED-WEIGHT-1M": "10", "X-MBX-USED-WEIGHT-1D": "50000"}, NOW)
    assert u.used_in(60.0) == 10  # not the day's 50000 against a minute's books
    assert u.used_in(86400.0) == 50000
    assert u.used_in(3.0) is None
    assert parse_usage({"x-mbx-used-weight-3s": "8"}, NOW).used_in(3.0) == 8
    # a count whose window is not stated compares with no limiter's books
    assert parse_usage({"x-ratelimit-limit": "30", "x-ratelimit-remaining": "12"},
                       NOW).used_in(60.0) is None
    assert parse_usage({"RateLimit-Limit": "100", "RateLimit-Remaining": "40",
                        "RateLimit-Policy": "100;w=60"}, NOW).used_in(60.0) == 60


def test_x_ratelimit_headers_give_used_from_limit_and_remaining() -> None:
    u = parse_usage({"x-ratelimit-limit": "30", "x-ratelimit-remaining": "12",
                     "x-ratelimit-reset": "2025-07-25 14:54:00 +0000"}, NOW)
    assert (u.used, u.limit, u.remaining, u.window_s) == (18, 30, 12, None)


def test_ietf_separate_fields_and_policy_window() -> None:
    u = parse_usage({"RateLimit-Limit": "100", "RateLimit-Remaining": "40",
                     "RateLimit-Reset": "7", "RateLimit-Policy": "100;w=60"}, NOW)
    assert (u.used, u.limit, u.remaining, u.window_s) == (60, 100, 40, 60.0)


def test_ietf_combined_field_both_drafts() -> None:
    old = parse_usage({"RateLimit": "limit=100, remaining=50, reset=5"}, NOW)
    assert (old.limit, old.remaining, old.used) == (100, 50, 50)
    new = parse_usage({"RateLimit": '"default";r=50;t=30',
                       "RateLimit-Policy": '"default";q=100;w=60'}, NOW)
    assert (new.limit, new.remaining, new.window_s, new.used) == (100, 50, 60.0, 50)


def test_retry_after_seconds_or_http_date() -> None:
    assert parse_usage({"Retry-After": "17"}, NOW).retry_after_s == 17.0
    assert parse_retry_after(formatdate(NOW + 90, usegmt=True), NOW) == 90.0
    assert parse_retry_after(formatdate(NOW - 90, usegmt=True), NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("-3", NOW) == 0.0
    assert parse_retry_after(None, NOW) is None


def test_an_asctime_retry_after_is_gmt() -> None:
    # RFC 9110's third HTTP-date form has no zone; NOW is 2023-11-14 22:13:20 GMT
    assert parse_retry_after("Tue Nov 14 22:14:50 2023", NOW) == 90.0
    assert parse_retry_after("Tuesday, 14-Nov-23 22:14:50 GMT", NOW) == 90.0


def test_garbage_and_absent_headers_give_an_empty_usage() -> None:
    assert parse_usage(None, NOW).empty
    assert parse_usage({"x-ratelimit-remaining": "nan", "RateLimit-Limit": "inf",
                        "x-ratelimit-limit": "-1", "content-type": "json"}, NOW).empty
