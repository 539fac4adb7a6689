"""The retry schedule and Retry-After parsing (pure functions, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from relay.webhooks.retry import DEFAULT_SCHEDULE, next_attempt, parse_retry_after

NOW = 1_800_000_000.0
SCHEDULE = (0, 5, 300, 1800)


def middle() -> float:
    """A rand() that lands on the scheduled delay exactly (no jitter)."""
    return 0.5


def test_default_schedule_spans_three_days() -> None:
    """Ten attempts, the first at once, growing waits, about three days in all."""
    assert len(DEFAULT_SCHEDULE) == 10
    assert DEFAULT_SCHEDULE[0] == 0
    assert list(DEFAULT_SCHEDULE) == sorted(DEFAULT_SCHEDULE)
    assert 2.5 * 86400 < sum(DEFAULT_SCHEDULE) < 4 * 86400


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (1, NOW + 5),
        (2, NOW + 300),
        (3, NOW + 1800),
        (4, None),
        (5, None),
    ],
)
def test_next_attempt_follows_schedule(attempt: int, expected: float | None) -> None:
    """After n attempts the wait is schedule[n]; past the end there is no next attempt."""
    assert next_attempt(SCHEDULE, attempt, NOW, rand=middle) == expected


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 5), (4, 7200), (8, 72000), (9, 86400), (10, None)],
)
def test_default_schedule_steps(attempt: int, expected: float | None) -> None:
    """The default schedule ends with a day's wait before the tenth and last attempt."""
    at = next_attempt(DEFAULT_SCHEDULE, attempt, NOW, rand=middle)
    assert (None if at is None else at - NOW) == expected


@pytest.mark.parametrize(
    ("rand_value", "jitter", "low", "high"),
    [
        (0.0, 0.2, 240.0, 240.0),
        (0.25, 0.2, 270.0, 270.0),
        (0.999999, 0.2, 359.9, 360.0),
        (0.0, 0.0, 300.0, 300.0),
        (1.0, 0.5, 450.0, 450.0),
    ],
)
def test_jitter_bounds(rand_value: float, jitter: float, low: float, high: float) -> None:
    """The delay moves by at most ±jitter of the scheduled wait."""
    at = next_attempt(SCHEDULE, 2, NOW, jitter=jitter, rand=lambda: rand_value)
    assert at is not None
    assert low <= at - NOW <= high


@pytest.mark.parametrize(
    ("attempt", "retry_after", "rand_value", "expected"),
    [
        (1, 120.0, 0.5, 120.0),  # longer than the schedule: honoured
        (1, 2.0, 0.0, 4.0),  # shorter than the (jittered) schedule: the schedule wins
        (1, 0.0, 0.5, 5.0),
        (1, 10.0**6, 0.5, 3600.0),  # capped at max_retry_after
        (3, 10.0**6, 0.5, 3600.0),  # the cap still beats a shorter schedule
        (2, 3000.0, 0.5, 3000.0),
    ],
)
def test_retry_after_is_a_capped_lower_bound(
    attempt: int, retry_after: float, rand_value: float, expected: float
) -> None:
    """Retry-After never shortens the wait and never stretches it past the cap."""
    at = next_attempt(SCHEDULE, attempt, NOW, retry_after, rand=lambda: rand_value)
    assert at == NOW + expected


def test_schedule_longer_than_cap_wins() -> None:
    """A scheduled wait above max_retry_after is kept; the cap only limits Retry-After."""
    at = next_attempt(DEFAULT_SCHEDULE, 5, NOW, 10.0, rand=middle, max_retry_after=3600)
    assert at == NOW + 18000


def test_retry_after_does_not_extend_an_exhausted_schedule() -> None:
    """A Retry-After on the last attempt still ends the delivery."""
    assert next_attempt(SCHEDULE, 4, NOW, 60.0, rand=middle) is None


def test_attempt_counts_from_one() -> None:
    """Zero attempts made is a caller error, not a silent first slot."""
    with pytest.raises(ValueError, match="starts at 1"):
        next_attempt(SCHEDULE, 0, NOW)


def http_date(offset: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset, tz=UTC), usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        (http_date(90), 90.0),
        (http_date(-90), 0.0),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("12abc", None),
        ("nan", None),
        ("Sun, 99 Nov 1994 08:49:37 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Delta-seconds and HTTP-dates become seconds to wait; garbage becomes None."""
    assert parse_retry_after(value, NOW) == expected
