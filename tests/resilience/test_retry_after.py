from datetime import UTC, datetime

import httpx
import pytest

from bastion.resilience.retry_after import parse_retry_after

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": " 7 "}, 7.0),
        ({"Retry-After": "3"}, 3.0),
        ({"RETRY-AFTER-MS": "250"}, 0.25),
        ({"retry-after-ms": "1500"}, 1.5),
    ],
)
def test_reads_seconds_and_milliseconds(headers: dict[str, str], expected: float) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


def test_milliseconds_win_over_seconds() -> None:
    assert parse_retry_after({"retry-after": "10", "retry-after-ms": "1500"}, now=NOW) == 1.5


def test_unreadable_milliseconds_fall_back_to_seconds() -> None:
    assert parse_retry_after({"retry-after": "4", "retry-after-ms": "soon"}, now=NOW) == 4.0


def test_http_date_is_measured_from_now() -> None:
    headers = {"retry-after": "Thu, 01 Jan 2026 12:00:30 GMT"}
    assert parse_retry_after(headers, now=NOW) == 30.0


def test_http_date_with_unknown_zone_is_read_as_utc() -> None:
    headers = {"retry-after": "Thu, 01 Jan 2026 12:01:00 -0000"}
    assert parse_retry_after(headers, now=NOW) == 60.0


def test_http_date_in_the_past_is_zero() -> None:
    headers = {"retry-after": "Wed, 31 Dec 2025 23:59:00 GMT"}
    assert parse_retry_after(headers, now=NOW) == 0.0


@pytest.mark.parametrize("headers", [{"retry-after": "-3"}, {"retry-after-ms": "-100"}])
def test_negative_delays_are_zero(headers: dict[str, str]) -> None:
    assert parse_retry_after(headers, now=NOW) == 0.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-other": "2"},
        {"retry-after": "soon"},
        {"retry-after": ""},
        {"retry-after": "nan"},
        {"retry-after": "inf"},
        {"retry-after-ms": "nan"},
        {"retry-after": "Thu, 99 Foo 2026 99:00:00 GMT"},
    ],
)
def test_garbage_or_absent_is_none(headers: dict[str, str]) -> None:
    assert parse_retry_after(headers, now=NOW) is None


def test_accepts_httpx_headers() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": "2"}), now=NOW) == 2.0
