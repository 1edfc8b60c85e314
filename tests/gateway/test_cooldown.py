from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from gateway.cooldown import cooldown_from_headers, parse_duration, parse_retry_after

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5s", 0.5), ("1.5", 1.5), ("7", 7.0),
     ("250us", 0.00025), ("0s", 0.0)],
)
def test_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5x", "m5", "1m-3s"])
def test_unreadable_durations(text):
    assert parse_duration(text) is None


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("12", NOW) == 12.0
    date = format_datetime(datetime.fromtimestamp(NOW + 30, tz=UTC), usegmt=True)
    assert parse_retry_after(date, NOW) == pytest.approx(30.0)
    past = format_datetime(datetime.fromtimestamp(NOW - 30, tz=UTC), usegmt=True)
    assert parse_retry_after(past, NOW) == 0.0
    assert parse_retry_after("tomorrow-ish", NOW) is None


def test_retry_after_ms_is_preferred():
    assert cooldown_from_headers({"retry-after-ms": "1500", "retry-after": "9"}, NOW) == 1.5


def test_falls_back_through_the_header_forms():
    assert cooldown_from_headers({"retry-after-ms": "junk", "retry-after": "4"}, NOW) == 4.0
    assert cooldown_from_headers({"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "20ms"},
                                 NOW) == 360.0
    assert cooldown_from_headers({"x-ratelimit-reset-tokens": "20ms"}, NOW) == pytest.approx(0.02)
    assert cooldown_from_headers({}, NOW) is None
    assert cooldown_from_headers({"retry-after": "nonsense"}, NOW) is None


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999", "soon", "", "1s2"])
def test_a_value_that_is_not_a_finite_time_names_no_time(value):
    for header in ("retry-after-ms", "retry-after", "x-ratelimit-reset-requests"):
        assert cooldown_from_headers({header: value}, NOW) is None, header


def test_an_unreadable_retry_after_ms_falls_back_to_the_other_headers():
    assert cooldown_from_headers({"retry-after-ms": "nan", "retry-after": "4"}, NOW) == 4.0
